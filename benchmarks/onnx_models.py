"""Inference time of the ONNX test models (tests/onnx/models: ResNet-18-, MobileNetV2-style
CNNs, a small transformer encoder, a two-layer LSTM) in graphc (llvm) vs ONNX Runtime and
PyTorch eager, measured side by side in interleaved rounds.

    python benchmarks/onnx_models.py [--runs 20] [--rounds 6] [--batch N] [--threads 2]

--batch re-exports the models at batch N (needs torch); by default the shipped files run
at the batch they were exported with (2 images of 3x64x64, 2x16 tokens, 4x12 steps).
--threads (default 2) is every contender's thread count. Medians in milliseconds per call.

The order rotates every round and each block starts after a 0.15 s pause, because ONNX Runtime's idle workers spin (they burned a
core for 50-70 ms after its last run) and whoever ran in that time shared the cores with
them. With two or more threads graphc runs these CNNs as a batch split (one copy of the
network per thread over its slice of the batch, backends/llvm/split.py); the transformer
and the LSTM are not batch-wise (an embedding gather, a time-major transpose) and run as
before.

Measured on the 2-core EPYC under heavy load from other jobs (2026-11-25, 07:45-07:50,
five runs at each thread count; medians in ms):

    model        threads  graphc       ORT          ORT/graphc   torch
    resnet18     2        0.251-0.321  0.294-0.343  1.04-1.31x   4.1-6.3
    mobilenetv2  2        0.220-0.255  0.288-0.451  1.31-1.77x   4.9-8.6
    resnet18     1        0.281-0.428  0.323-0.502  1.07-1.26x   3.4-6.0
    mobilenetv2  1        0.289-0.342  0.297-0.489  0.99-1.49x   2.9-6.1
    transformer  2        0.186-0.200  0.224-0.392  1.18-2.09x   0.72-1.11
    lstm         2        0.108-0.119  0.132-0.153  1.15-1.35x   0.55-0.73

Earlier the same day, on a quieter machine and before the batch split, 1 thread: resnet18
0.268-0.277 vs ORT 0.291-0.303 ms, mobilenetv2 0.221-0.228 vs 0.257-0.271 ms. At the start
of the day graphc ran these CNNs at 0.47x and 0.51x of ONNX Runtime's speed.
"""
from __future__ import annotations

import argparse
import io
import os
import pathlib
import sys
import time

import numpy as np

import graphc as gc
from harness import median_times, optional, table

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "onnx" / "models"
NAMES = ["resnet18", "mobilenetv2", "transformer", "lstm"]


def load_models(batch: int | None, torch):
    """{name: (onnx bytes, input array, torch module or None)}."""
    out = {}
    torch_models = {}
    if torch is not None:
        sys.path.insert(0, str(ROOT))
        from tests.onnx import make_models
        torch_models = make_models.models()
    for name in NAMES:
        x = np.load(MODELS / f"{name}.npz")["input"]
        model_bytes = (MODELS / f"{name}.onnx").read_bytes()
        module = torch_models.get(name, (None,))[0]
        if batch is not None:
            if module is None:
                raise SystemExit("--batch needs torch to re-export the models")
            reps = -(-batch // x.shape[0])
            x = np.concatenate([x] * reps)[:batch]
            buf = io.BytesIO()
            torch.onnx.export(module, (torch.from_numpy(x),), buf, input_names=["input"],
                              output_names=["output"], opset_version=17, dynamo=False)
            model_bytes = buf.getvalue()
        out[name] = (model_bytes, x, module)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    threads = args.threads
    os.environ["GRAPHC_NUM_THREADS"] = str(threads)  # read when the first program compiles
    ort = optional("onnxruntime")
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    rows = []
    for name, (model_bytes, x, module) in load_models(args.batch, torch).items():
        t0 = time.perf_counter()
        exe = gc.compile(gc.onnx.load(model_bytes), backend="llvm")
        compile_s = time.perf_counter() - t0
        contenders = {"graphc": lambda exe=exe, x=x: exe(input=x)}
        if ort is not None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
            contenders["onnxruntime"] = lambda sess=sess, x=x: sess.run(None, {"input": x})
        if module is not None:
            xt = torch.from_numpy(x)

            def run_torch(module=module, xt=xt):
                with torch.inference_mode():
                    return module(xt)
            contenders["torch"] = run_torch
        ms = {k: v * 1e3 for k, v in median_times(contenders, runs=args.runs, rounds=args.rounds, settle=0.15).items()}
        row = [name, tuple(x.shape), f"{compile_s:.1f}", f"{ms['graphc']:.3f}"]
        for other in ("onnxruntime", "torch"):
            row += [f"{ms[other]:.3f}", f"{ms[other] / ms['graphc']:.2f}x"] if other in ms else ["-", "-"]
        rows.append(row)
    print(table(rows, ["model", "input", "compile s", "graphc ms", "ORT ms", "ORT/graphc",
                       "torch ms", "torch/graphc"]))


if __name__ == "__main__":
    main()
