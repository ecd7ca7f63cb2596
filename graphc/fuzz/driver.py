"""The fuzzing loop: seeds in order, each case checked in a worker process (a crash of
generated code kills the worker, not the fuzzer: the seed is reported and a new worker
starts), failures minimised and written as Python reproductions."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from .paths import PATHS, available_paths

CASE_TIMEOUT = 300.0  # seconds one case may take before its worker is called hung


@dataclass
class Report:
    first_seed: int
    seconds: float = 0.0
    cases: int = 0
    empty: int = 0  # seeds whose drawn graph had nothing of its kind to test
    refused_by_reference: int = 0
    kinds: Counter = field(default_factory=Counter)
    path_runs: Counter = field(default_factory=Counter)
    unstable: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def per_minute(self) -> float:
        return 60.0 * self.cases / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        runs = ", ".join(f"{k} {n}" for k, n in sorted(self.path_runs.items()))
        lines = [f"graphc fuzz: seeds {self.first_seed}..{self.first_seed + self.cases + self.empty - 1}: "
                 f"{self.cases} cases ({kinds}) in {self.seconds:.0f} s, {self.per_minute:.0f}/min; "
                 f"{len(self.failures)} failures",
                 f"  runs per path: {runs}",
                 f"  not compared: {self.unstable} unstable values, {self.refused_by_reference} graphs "
                 f"the reference refused, {self.empty} empty draws"]
        for f in self.failures:
            lines.append(f"  FAIL seed {f['seed']} ({f['kind']}) {f['path']}: {f['what']}: "
                         f"{f['message'].splitlines()[0] if f['message'] else ''}")
            if f.get("repro_file"):
                lines.append(f"       reproduction: {f['repro_file']} ({f['nodes']} nodes)")
        return "\n".join(lines)


def _check_seed(seed: int, paths: list[str], minimize_seconds: float) -> dict:
    from .cases import make_case
    from .check import check_case
    from .minimize import minimize, reproduction
    case = make_case(seed)
    if case is None:
        return {"seed": seed, "empty": True}
    chosen = [p for p in paths if case.kind in PATHS[p].kinds
              and len(case.graph.nodes) <= PATHS[p].max_nodes
              and random.Random(f"{seed}/{p}").random() < PATHS[p].share]
    out = check_case(case, chosen)
    result = {"seed": seed, "kind": case.kind, "skipped": out.skipped, "unstable": out.unstable,
              "paths": chosen, "failures": []}
    seen = set()
    for f in out.failures:
        entry = {"seed": seed, "kind": case.kind, "path": f.path, "what": f.what, "message": f.message}
        if f.key() not in seen and minimize_seconds > 0 and f.path in PATHS:
            seen.add(f.key())
            small = minimize(case, f, seconds=minimize_seconds)
            # the reproduction says how the small case fails (another element, maybe)
            f = next((g for g in check_case(small, [f.path]).failures if g.key() == f.key()), f)
            entry["repro"] = reproduction(small, f)
            entry["nodes"] = len(small.graph.nodes)
        result["failures"].append(entry)
    return result


def _worker(tasks, results, paths: list[str], minimize_seconds: float) -> None:
    # translation validation of every pass and lowering: a mismatch then names its stage
    os.environ["GRAPHC_VERIFY"] = "2"
    while True:
        seed = tasks.get()
        if seed is None:
            return
        try:
            results.put(_check_seed(seed, paths, minimize_seconds))
        except Exception:  # noqa: BLE001 - the generator or the oracle itself failed
            import traceback
            results.put({"seed": seed, "kind": "?", "paths": [], "unstable": 0, "skipped": "",
                         "failures": [{"seed": seed, "kind": "?", "path": "fuzzer", "what": "crash",
                                       "message": traceback.format_exc(limit=8)}]})


class _Workers:
    """One worker process at a time, restarted when a case kills or hangs it."""

    def __init__(self, paths: list[str], minimize_seconds: float) -> None:
        self.ctx = mp.get_context("spawn")
        self.args = (paths, minimize_seconds)
        self.proc = None

    def _start(self) -> None:
        self.tasks, self.results = self.ctx.Queue(), self.ctx.Queue()
        self.proc = self.ctx.Process(target=_worker, args=(self.tasks, self.results, *self.args),
                                     daemon=True)
        self.proc.start()

    def run(self, seed: int, timeout: float) -> dict:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.tasks.put(seed)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.results.get(timeout=0.5)
            except queue.Empty:
                if not self.proc.is_alive() or time.monotonic() > deadline:
                    why = (f"worker died with exit code {self.proc.exitcode}" if not self.proc.is_alive()
                           else f"no answer in {timeout:.0f} s (hung)")
                    self.proc.kill()
                    self.proc.join()
                    self.proc = None
                    return {"seed": seed, "kind": "?", "paths": [], "unstable": 0, "skipped": "",
                            "failures": [{"seed": seed, "kind": "?", "path": "worker", "what": "crash",
                                          "message": why}]}

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.tasks.put(None)
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()


def fuzz(*, seconds: float | None = None, cases: int | None = None, seed: int | None = None,
         paths: list[str] | None = None, out_dir: str | None = None, isolate: bool = True,
         minimize_seconds: float = 60.0, stream: TextIO | None = None) -> Report:
    """Check random cases until `seconds` pass or `cases` seeds are done (seed: the first
    one; default a fresh one, printed). Reproductions go to out_dir when given."""
    if seconds is None and cases is None:
        raise ValueError("give seconds or cases")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    paths = available_paths() if paths is None else list(paths)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f"unknown paths {unknown}; paths: {', '.join(PATHS)}")
    stream = stream or sys.stderr
    report = Report(seed)
    stream.write(f"graphc fuzz: first seed {seed}, paths {', '.join(paths)}\n")
    workers = _Workers(paths, minimize_seconds) if isolate else None
    start = last_note = time.monotonic()
    s = seed
    try:
        while (seconds is None or time.monotonic() - start < seconds) and \
                (cases is None or report.cases + report.empty < cases):
            r = workers.run(s, CASE_TIMEOUT) if workers else _check_seed(s, paths, minimize_seconds)
            s += 1
            if time.monotonic() - last_note > 60:
                last_note = time.monotonic()
                stream.write(f"graphc fuzz: {report.cases} cases, {len(report.failures)} failures, "
                             f"{last_note - start:.0f} s, at seed {s}\n")
                stream.flush()
            if r.get("empty"):
                report.empty += 1
                continue
            report.cases += 1
            report.kinds[r["kind"]] += 1
            report.path_runs.update(r["paths"])
            report.unstable += r["unstable"]
            report.refused_by_reference += bool(r["skipped"])
            for f in r["failures"]:
                if out_dir and f.get("repro"):
                    os.makedirs(out_dir, exist_ok=True)
                    f["repro_file"] = os.path.join(out_dir, f"repro_{f['seed']}_{f['path']}.py")
                    with open(f["repro_file"], "w", encoding="utf-8") as fh:
                        fh.write(f["repro"])
                report.failures.append(f)
                stream.write(f"FAIL seed {f['seed']} {f['path']}: {f['what']}: {f['message']}\n")
                if f.get("repro"):
                    stream.write(f["repro"] + "\n")
    finally:
        if workers:
            workers.close()
    report.seconds = time.monotonic() - start
    stream.write(report.summary() + "\n")
    return report
