"""What fusion buys: softmax and layer norm (row kernels) vs numpy and PyTorch eager; a
Linear + bias + relu layer with the bias and relu in the GEMM's epilogue vs after it; and
the MLP and CNN training steps with fusion off (-O0), without GEMM epilogues, and on (-O2).

    python benchmarks/fusion.py [--runs 5] [--threads N]

--threads sets graphc's and PyTorch's thread counts alike (default: all cores); on a
shared machine one thread each gives steadier ratios.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import graphc as gc
from graphc.passes.fusion import fuse
from graphc.passes.manager import Pass
from harness import median_times, optional, table

ROWS = 4096


def _fuse_without_epilogues(g: gc.Graph) -> dict[str, int]:
    return {"groups": fuse(g, epilogues=False).groups}


# -O2 with contractions kept out of fusion groups: the "before" of GEMM epilogues
NO_EPILOGUES = ["simplify", "legalize", Pass("fusion", "fusion without GEMM epilogues", _fuse_without_epilogues)]


def compile_both(build, shape):
    g = gc.Graph(build.__name__)
    with g:
        y = build(gc.placeholder("x", shape, "f32"))
    return {level: gc.compile(g, y, backend="llvm", opt_level=level) for level in (0, 2)}


def softmax(x):
    return gc.softmax(x, axis=-1)


def layer_norm(x):
    d = x.shape[-1]
    return gc.layer_norm(x, gc.constant(np.ones(d, np.float32)), gc.constant(np.zeros(d, np.float32)))


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_layer_norm(x):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    os.environ["GRAPHC_NUM_THREADS"] = str(args.threads)
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(args.threads)
    rows = []
    for name, build, ref, d in [("softmax", softmax, np_softmax, 1000),
                                ("layer_norm", layer_norm, np_layer_norm, 1024)]:
        x = np.random.default_rng(0).standard_normal((ROWS, d)).astype(np.float32)
        exes = compile_both(build, x.shape)
        for exe in exes.values():
            np.testing.assert_allclose(exe(x), ref(x), rtol=1e-4, atol=1e-5)
        cont = {"graphc -O2": lambda: exes[2](x), "graphc -O0": lambda: exes[0](x),
                "numpy": lambda: ref(x)}
        if torch is not None:
            tx = torch.from_numpy(x)
            tf = (lambda: torch.softmax(tx, -1)) if name == "softmax" else \
                (lambda: torch.nn.functional.layer_norm(tx, (d,)))
            cont["torch eager"] = tf
        times = median_times(cont, args.runs)
        for k, v in times.items():
            rows.append([f"{name} {ROWS}x{d}", k, f"{v * 1e3:.2f}", f"{v / times['graphc -O2']:.2f}"])
    print(table(rows, ["workload", "system", "ms", "this / graphc -O2"]))

    # Linear + bias + relu, inference: the epilogue runs on each GEMM tile while it is in L1
    rows = []
    for m, k, n in [(256, 1024, 1024), (4096, 256, 256)]:
        wv = (np.random.default_rng(1).standard_normal((k, n)) * 0.05).astype(np.float32)
        bv = np.random.default_rng(2).standard_normal(n).astype(np.float32)
        xv = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
        g = gc.Graph("linear")
        with g:
            y = gc.relu(gc.placeholder("x", (m, k)) @ gc.constant(wv) + gc.constant(bv))
        fused = gc.compile(g, y, backend="llvm")
        apart = gc.compile(g, y, backend="llvm", passes=NO_EPILOGUES)
        np.testing.assert_allclose(fused(xv), apart(xv), rtol=1e-5, atol=1e-5)
        cont = {"graphc -O2 (epilogue)": lambda: fused(xv), "graphc, bias+relu after": lambda: apart(xv)}
        if torch is not None:
            tx, twt, tb = torch.from_numpy(xv), torch.from_numpy(np.ascontiguousarray(wv.T)), torch.from_numpy(bv)
            cont["torch eager"] = lambda: torch.relu(torch.nn.functional.linear(tx, twt, tb))
        times = median_times(cont, args.runs)
        for key, v in times.items():
            rows.append([f"relu(x @ w + b) {m}x{k}x{n}", key, f"{v * 1e3:.3f}",
                         f"{v / times['graphc -O2 (epilogue)']:.2f}"])
    print()
    print(table(rows, ["workload", "system", "ms", "this / graphc -O2"]))

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import digits_cnn
    import mlp_step
    images, labels = gc.load_digits()
    rng = np.random.default_rng(0)
    steps = [("MLP step (batch 256)", mlp_step.build(),
              {"x": rng.standard_normal((mlp_step.B, mlp_step.D)).astype(np.float32),
               "t": rng.integers(0, mlp_step.C, mlp_step.B).astype(np.int32)}),
             ("CNN step (batch 50)", digits_cnn.build_train_step(),
              {"x": images[:digits_cnn.BATCH, None], "t": labels[:digits_cnn.BATCH]})]
    rows = []
    for name, g, feeds in steps:
        exes = {"-O0": gc.compile(g, backend="llvm", opt_level=0),
                "no epi": gc.compile(g, backend="llvm", passes=NO_EPILOGUES),
                "-O2": gc.compile(g, backend="llvm", opt_level=2)}
        times = median_times({k: (lambda e=e: e(**feeds)) for k, e in exes.items()}, args.runs)
        kernels = {k: len(e.program.kernels) for k, e in exes.items()}
        rows.append([name] + [kernels[k] for k in exes] + [f"{times[k] * 1e3:.2f}" for k in exes]
                    + [f"{times['-O0'] / times['-O2']:.2f}"])
    print()
    print(table(rows, ["train step", "kernels -O0", "no epi", "-O2", "ms -O0", "ms no epi", "ms -O2",
                       "-O0 / -O2"]))


if __name__ == "__main__":
    main()
