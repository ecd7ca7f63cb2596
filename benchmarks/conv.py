"""3x3 convolution layers and small CNNs: graphc direct (im2col + GEMM), Winograd F(2x2,3x3)
and F(4x4,3x3) and the cost model's choice, against PyTorch (oneDNN) and ONNX Runtime.

Inference: weights are constants, so Winograd's filter transform is folded at compile time.
Times are medians of interleaved rounds; GFLOP/s count the direct convolution's 2*N*K*C*9*OH*OW
flops for every contender, so a fast algorithm shows as more than the machine's GEMM peak.

    python benchmarks/conv.py [--runs 5] [--rounds 3] [--threads T] [--models] [--calibrate]

--calibrate prints the measured figures passes/winograd.py's MachineFigures should hold.

Measured on the shared 2-core EPYC (other jobs running; one thread per contender, which a
busy machine disturbs least; ms, medians of 3 interleaved rounds x 5 calls, two runs):

    layer (N, C=K, HxW)   direct    F2         F4         torch      onnxruntime
    1, 64, 56x56          4.7-5.9   2.2-2.8    1.7-2.5    3.0-4.4    2.7-3.2
    1, 128, 28x28         3.5       1.65-1.76  1.74-1.77  2.9-3.1    2.6-2.7
    1, 256, 14x14         3.4-4.0   2.2-2.75   3.4-4.0    3.3-4.7    2.8-3.3
    8, 64, 56x56          40-41     21.2-21.6  26-29      22.9-23.3  22.3-22.5

    end to end (frozen weights)   direct  F2     F4     auto   torch
    VGG-11 features, 112x112      62.8    43.4   50.1   35.9   65.0
    ResNet-18-style, 112x112      222.6   147.3  128.0  123.8  192.1

With two threads in a quieter moment: 256x14x14 direct 3.08, F2 1.49, F4 1.30, torch 1.53,
onnxruntime 1.29; 8x64x56x56 direct 19.3, F2 10.5, F4 12.4, torch 11.2, onnxruntime 10.6.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import graphc as gc
from graphc.ir.rewrite import replace_uses
from harness import median_times, optional, table

LAYERS = [(1, 64, 56), (1, 128, 28), (1, 256, 14), (8, 64, 56)]  # (N, C = K, H = W)
MODES = ("off", "F2", "F4", "auto")
LABEL = {"off": "graphc direct", "F2": "graphc F2", "F4": "graphc F4", "auto": "graphc auto"}


def he(rng, k: int, c: int) -> np.ndarray:
    return (rng.standard_normal((k, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)


def conv_layer(n: int, c: int, h: int, rng):
    w = he(rng, c, c)
    g = gc.Graph(f"conv{c}x{h}")
    with g:
        y = gc.conv2d(gc.placeholder("x", (n, c, h, h), "f32"), gc.constant(w), padding=1)
    x = np.maximum(rng.standard_normal((n, c, h, h)), 0).astype(np.float32)
    return g, y, w, x


def freeze(g: gc.Graph, values: dict) -> gc.Graph:
    """A copy of g whose parameters are constants holding `values` (a deployed model)."""
    f = g.copy()
    for p in list(f.params):
        replace_uses(f, {p: f.add_constant(values[p.name], p.dtype)})
    f.params = []
    return f


# --- end-to-end models, built with graphc.nn --------------------------------------------------

VGG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]  # VGG-11's features


def vgg(x):
    c = x.shape[1]
    for v in VGG:
        if v == "M":
            x = gc.max_pool2d(x, 2)
        else:
            x = gc.relu(gc.nn.Conv2d(c, v, 3, padding=1)(x))
            c = v
    return x


RESNET_BLOCKS = [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]


def resnet18(x):
    x = gc.relu(gc.nn.Conv2d(3, 64, 3, padding=1)(x))
    c = 64
    for width, stride in RESNET_BLOCKS:
        y = gc.relu(gc.nn.Conv2d(c, width, 3, stride=stride, padding=1)(x))
        y = gc.nn.Conv2d(width, width, 3, padding=1)(y)
        short = gc.nn.Conv2d(c, width, 1, stride=stride)(x) if stride != 1 or c != width else x
        x = gc.relu(y + short)
        c = width
    return gc.global_avg_pool2d(x)


def torch_model(torch, values: dict, build):
    """The same network in PyTorch with graphc's weights (layers conv0, conv1, ... in the
    order graphc created them), for the comparison column."""
    F = torch.nn.functional
    params = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in values.items()}
    layers = sorted({k.rsplit(".", 1)[0] for k in values}, key=lambda s: int(s[4:]))

    def run(x):
        names = iter(layers)

        def conv(x, stride=1, padding=1):
            name = next(names)
            return F.conv2d(x, params[name + ".w"], params[name + ".b"], stride=stride,
                            padding=padding)
        if build is vgg:
            for v in VGG:
                x = F.max_pool2d(x, 2) if v == "M" else F.relu(conv(x))
            return x
        x = F.relu(conv(x))
        c = 64
        for width, stride in RESNET_BLOCKS:
            y = conv(F.relu(conv(x, stride)))
            short = conv(x, stride, 0) if stride != 1 or c != width else x
            x = F.relu(y + short)
            c = width
        return x.mean(dim=(2, 3))
    return run


def model_rows(args, torch) -> list[list[object]]:
    rows = []
    for build, shape in [(vgg, (1, 3, 112, 112)), (resnet18, (1, 3, 112, 112))]:
        g = gc.Graph(build.__name__)
        with g:
            y = build(gc.placeholder("x", shape, "f32"))
        g.set_outputs([y])
        values = {p.name: g.initial_param_value(p) for p in g.params}
        frozen = freeze(g, values)
        x = np.maximum(np.random.default_rng(1).standard_normal(shape), 0).astype(np.float32)
        exes = {m: gc.compile(frozen, backend="llvm", winograd=m) for m in MODES}
        ref = exes["off"](x)[0]
        scale = float(np.abs(ref).max())
        errs = {m: float(np.abs(exes[m](x)[0] - ref).max()) / scale for m in MODES}
        cont = {LABEL[m]: (lambda e=exes[m]: e(x)) for m in MODES}
        if torch is not None:
            fn = torch_model(torch, values, build)
            tx = torch.from_numpy(x)
            with torch.no_grad():
                np.testing.assert_allclose(fn(tx).numpy(), ref, rtol=1e-3, atol=1e-3 * scale)
            cont["torch"] = lambda: _no_grad(torch, fn, tx)
        t = median_times(cont, args.runs, args.rounds)
        rows.append([build.__name__ + f" {shape}"] + [f"{t[k] * 1e3:.1f}" for k in cont] +
                    [f"{t['graphc direct'] / min(t[LABEL[m]] for m in MODES):.2f}x",
                     f"{max(errs[m] for m in ('F2', 'F4', 'auto')):.1e}"])
        head = ["model"] + [f"{k} ms" for k in cont] + ["best/direct", "max rel err"]
    print(table(rows, head))
    return rows


def _no_grad(torch, fn, x):
    with torch.no_grad():
        return fn(x)


def onnx_conv(n: int, c: int, h: int, w: np.ndarray, threads: int):
    ort, onnx = optional("onnxruntime"), optional("onnx")
    if ort is None or onnx is None:
        return None
    from onnx import TensorProto, helper, numpy_helper
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, h])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, h, h])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"x": x})[0]


def layer_rows(args, torch) -> None:
    rows = []
    rng = np.random.default_rng(0)
    for n, c, h in LAYERS:
        g, y, w, x = conv_layer(n, c, h, rng)
        exes = {m: gc.compile(g, y, backend="llvm", winograd=m) for m in MODES}
        ref = exes["off"](x)
        cont = {LABEL[m]: (lambda e=exes[m]: e(x)) for m in MODES}
        if torch is not None:
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            cont["torch"] = lambda: _no_grad(torch, lambda a: torch.nn.functional.conv2d(a, tw, padding=1), tx)
        ort_fn = onnx_conv(n, c, h, w, args.threads)
        if ort_fn is not None:
            np.testing.assert_allclose(ort_fn(x), ref, rtol=1e-3, atol=1e-4)
            cont["onnxruntime"] = lambda: ort_fn(x)
        t = median_times(cont, args.runs, args.rounds)
        flops = 2 * n * c * c * 9 * h * h
        choice = [ln for ln in str(exes["auto"].ledger).splitlines() if "conv2d" in ln]
        best_wino = min(t["graphc F2"], t["graphc F4"])
        rows.append([f"N={n} C=K={c} {h}x{h}"] +
                    [f"{t[k] * 1e3:.2f} ({flops / t[k] / 1e9:.0f})" for k in cont] +
                    [f"{t['graphc direct'] / best_wino:.2f}x",
                     choice[0].split(": ")[1].split(":")[0] if choice else "?"])
        head = ["layer"] + [f"{k} ms (GF/s)" for k in cont] + ["wino/direct", "auto picks"]
    print(table(rows, head))


def calibrate() -> None:
    """Figures for MachineFigures: GEMM rate at a few shapes and transform bandwidth."""
    from graphc.ir.graph import Graph
    from graphc.ir.emitter import Emitter
    from graphc.ir.types import TensorType
    from graphc.pipeline import compile_graph
    rng = np.random.default_rng(0)
    for b_, m, n, k in [(1, 1024, 1024, 1024), (16, 64, 784, 64), (36, 256, 16, 256), (1, 64, 3136, 27)]:
        g = Graph("gemm")
        a, b = g.add_input("a", TensorType((b_, m, k), "f32")), g.add_input("b", TensorType((b_, k, n), "f32"))
        g.outputs = [Emitter(g).matmul(a, b)]
        exe = compile_graph(g, "llvm")
        av, bv = rng.random((b_, m, k), np.float32), rng.random((b_, k, n), np.float32)
        t = median_times({"g": lambda: exe(a=av, b=bv)}, 5, 2)["g"]
        print(f"gemm batch {b_} {m}x{n}x{k}: {2 * b_ * m * n * k / t / 1e9:.0f} GFLOP/s")
    for tile in (2, 4):
        g = Graph("t")
        x = g.add_input("x", TensorType((1, 64, 56, 56), "f32"))
        v = Emitter(g).winograd_input_transform(x, tile=tile, padding=(1, 1, 1, 1))
        g.outputs = [v]
        exe = compile_graph(g, "llvm")
        xv = rng.random((1, 64, 56, 56), np.float32)
        t = median_times({"t": lambda: exe(x=xv)}, 5, 2)["t"]
        print(f"input transform F{tile}: {(xv.nbytes + v.type.nbytes) / t / 1e9:.1f} GB/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", action="store_true", help="also the end-to-end models")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="threads for every contender (default: all cores)")
    args = ap.parse_args()
    os.environ["GRAPHC_NUM_THREADS"] = str(args.threads)
    if args.calibrate:
        calibrate()
        return
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(args.threads)
    layer_rows(args, torch)
    if args.models:
        model_rows(args, torch)


if __name__ == "__main__":
    sys.exit(main())
