"""Per-call overhead: a one-element `x + 1` graph called many times (µs per call), vs JAX
jit, ONNX Runtime-free PyTorch eager (one op) and numpy.

    python benchmarks/overhead.py [--calls 10000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import graphc as gc
from harness import optional, table


def per_call(fn, calls: int) -> float:
    fn()
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best.append((time.perf_counter() - t0) / calls)
    return sorted(best)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=10000)
    args = ap.parse_args()
    x = np.ones(1, np.float32)
    g = gc.Graph("plus_one")
    with g:
        y = gc.placeholder("x", (1,), "f32") + 1.0
    rows = []
    for backend in ("llvm", "reference"):
        exe = gc.compile(g, y, backend=backend)
        rows.append([f"graphc {backend}", f"{per_call(lambda: exe(x), args.calls) * 1e6:.1f}"])
    rows.append(["numpy x + 1", f"{per_call(lambda: x + 1.0, args.calls) * 1e6:.1f}"])
    torch = optional("torch")
    if torch is not None:
        tx = torch.from_numpy(x)
        rows.append(["torch eager (one op)", f"{per_call(lambda: tx + 1.0, args.calls) * 1e6:.1f}"])
    jax = optional("jax")
    if jax is not None:
        f = jax.jit(lambda a: a + 1.0)
        rows.append(["jax jit (numpy in)", f"{per_call(lambda: f(x).block_until_ready(), args.calls) * 1e6:.1f}"])
    print(table(rows, ["system", "µs per call"]))


if __name__ == "__main__":
    main()
