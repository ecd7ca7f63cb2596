"""python -m graphc.fuzz [--minutes N | --cases N] [--seed S] [--paths a,b] [--out DIR]"""
from __future__ import annotations

import argparse
import sys

from .driver import fuzz
from .paths import PATHS, available_paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m graphc.fuzz", description=__doc__ or "")
    ap.add_argument("--minutes", type=float, help="run this long (default 2)")
    ap.add_argument("--cases", type=int, help="run this many seeds instead")
    ap.add_argument("--seed", type=int, help="first seed (default: a fresh one, printed)")
    ap.add_argument("--paths", help=f"comma-separated subset of: {', '.join(PATHS)} "
                                    f"(default: all this machine runs: {', '.join(available_paths())})")
    ap.add_argument("--out", help="directory for the minimised reproductions")
    ap.add_argument("--minimize-seconds", type=float, default=60.0)
    ap.add_argument("--no-isolate", action="store_true", help="run cases in this process")
    a = ap.parse_args(argv)
    seconds = None if a.cases is not None and a.minutes is None else 60 * (a.minutes or 2)
    report = fuzz(seconds=seconds, cases=a.cases, seed=a.seed,
                  paths=a.paths.split(",") if a.paths else None, out_dir=a.out,
                  isolate=not a.no_isolate, minimize_seconds=a.minimize_seconds)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
