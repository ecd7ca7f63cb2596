"""MLP 784-1024-1024-10 training step at batch 256 (SGD, softmax cross-entropy): graphc
(llvm) vs hand-written numpy, PyTorch eager and JAX jit; plus graphc's compile time, cold and
from the disk cache.

    python benchmarks/mlp_step.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import graphc as gc
from harness import median_times, optional, table

B, D, H, C, LR = 256, 784, 1024, 10, 0.01


def build() -> gc.Graph:
    g = gc.Graph("mlp_step")
    with g:
        x = gc.placeholder("x", (B, D), "f32")
        t = gc.placeholder("t", (B,), "i32")
        h = gc.relu(gc.nn.Linear(D, H, name="l1")(x))
        h = gc.relu(gc.nn.Linear(H, H, name="l2")(h))
        loss = gc.softmax_cross_entropy(gc.nn.Linear(H, C, name="l3")(h), t)
        g.set_outputs([loss], updates=gc.optim.SGD(LR).updates(loss))
    return g


def numpy_step(P, x, t):
    z1 = x @ P["l1.w"] + P["l1.b"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ P["l2.w"] + P["l2.b"]
    a2 = np.maximum(z2, 0)
    z3 = a2 @ P["l3.w"] + P["l3.b"]
    e = np.exp(z3 - z3.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(B), t]))
    d3 = p
    d3[np.arange(B), t] -= 1
    d3 /= B
    d2 = (d3 @ P["l3.w"].T) * (z2 > 0)
    d1 = (d2 @ P["l2.w"].T) * (z1 > 0)
    grads = {"l3.w": a2.T @ d3, "l3.b": d3.sum(0), "l2.w": a1.T @ d2, "l2.b": d2.sum(0),
             "l1.w": x.T @ d1, "l1.b": d1.sum(0)}
    for k, gk in grads.items():
        P[k] -= LR * gk
    return loss


def compile_seconds(cache_dir: str) -> float:
    code = ("import time, sys; sys.path.insert(0, %r); import mlp_step, graphc as gc; "
            "t=time.perf_counter(); gc.compile(mlp_step.build(), backend='llvm'); "
            "print(time.perf_counter()-t)") % os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, GRAPHC_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, D)).astype(np.float32)
    t = rng.integers(0, C, B).astype(np.int32)

    with tempfile.TemporaryDirectory() as cache:
        cold = compile_seconds(cache)
        warm = compile_seconds(cache)
    print(f"compile time of the MLP train step: cold {cold:.2f} s, from the disk cache {warm:.3f} s\n")

    t0 = time.perf_counter()
    step = gc.compile(build(), backend="llvm")
    print(f"(in-process compile: {time.perf_counter() - t0:.2f} s)")
    P = {k: step.params[k].copy() for k in step.params}
    cont = {"graphc llvm": lambda: step(x=x, t=t), "numpy (hand-written)": lambda: numpy_step(P, x, t)}
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        model = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, H),
                                    torch.nn.ReLU(), torch.nn.Linear(H, C))
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        tx, tt = torch.from_numpy(x), torch.from_numpy(t.astype(np.int64))

        def torch_step():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(tx), tt)
            loss.backward()
            opt.step()
        cont["torch eager"] = torch_step
    jax = optional("jax")
    if jax is not None:
        import jax.numpy as jnp
        jp = {k: jnp.asarray(v) for k, v in P.items()}

        def loss_fn(p, xb, tb):
            h = jax.nn.relu(xb @ p["l1.w"] + p["l1.b"])
            h = jax.nn.relu(h @ p["l2.w"] + p["l2.b"])
            z = h @ p["l3.w"] + p["l3.b"]
            return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(B), tb])

        @jax.jit
        def jstep(p, xb, tb):
            loss, gr = jax.value_and_grad(loss_fn)(p, xb, tb)
            return loss, {k: p[k] - LR * gr[k] for k in p}
        jx, jt = jnp.asarray(x), jnp.asarray(t)
        state = [jp]

        def jax_step():
            loss, state[0] = jstep(state[0], jx, jt)
            loss.block_until_ready()
        cont["jax jit"] = jax_step
    times = median_times(cont, args.runs)
    best_other = min(v for k, v in times.items() if k != "graphc llvm")
    rows = [[k, f"{v * 1e3:.1f}", f"{v / times['graphc llvm']:.2f}"] for k, v in times.items()]
    print(table(rows, ["system", "ms per step", "this / graphc"]))
    print(f"\ngraphc / fastest other: {times['graphc llvm'] / best_other:.2f}x (target <= 1.1)")


if __name__ == "__main__":
    main()
