"""The cost of check_numerics: the MLP 784-1024-1024-10 training step at batch 256 (SGD,
softmax cross-entropy, the graph of benchmarks/mlp_step.py) on llvm with the NaN/Inf
checks off and on, measured side by side (interleaved rounds, medians).

With checks on, the generated code scans every kernel's float results (backends/
numerics.py's check plan) and writes parameter updates beside the parameters, so that a
failing step leaves them untouched; the issue's target is <= 1.3x, and off is the plain
program (tests/graphc/test_numerics.py proves its LLVM IR holds no check).

    python benchmarks/numerics_cost.py [--runs 5]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc
from graphc.backends import numerics
from harness import median_times, table
from mlp_step import B, C, D, build


def scanned_bytes(exe) -> tuple[int, int]:
    """(buffers, bytes) the checks read per step."""
    p = exe.program
    names = [b for plan in numerics.check_plan(p) for b in plan]
    return len(names), sum(p.buffers[b].size * p.buffers[b].dtype.itemsize for b in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, D)).astype(np.float32)
    t = rng.integers(0, C, B).astype(np.int32)

    t0 = time.perf_counter()
    off = gc.compile(build(), backend="llvm", check_numerics=False)
    t1 = time.perf_counter()
    on = gc.compile(build(), backend="llvm", check_numerics=True)
    t2 = time.perf_counter()
    print(f"compile: checks off {t1 - t0:.2f} s, on {t2 - t1:.2f} s (disk cache may serve either)")
    n, nbytes = scanned_bytes(on)
    print(f"checks on scan {n} buffers, {nbytes / 2**20:.1f} MiB per step, "
          f"in {len(on.program.kernels)} kernels\n")

    times = median_times({"check_numerics off": lambda: off(x=x, t=t),
                          "check_numerics on": lambda: on(x=x, t=t)}, args.runs)
    base = times["check_numerics off"]
    rows = [[k, f"{v * 1e3:.2f}", f"{v / base:.3f}"] for k, v in times.items()]
    print(table(rows, ["MLP train step (llvm)", "ms per step", "this / off"]))
    print(f"\ncheck_numerics on / off: {times['check_numerics on'] / base:.3f}x (target <= 1.3)")


if __name__ == "__main__":
    main()
