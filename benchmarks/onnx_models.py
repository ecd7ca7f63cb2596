"""Inference time of the ONNX test models (tests/onnx/models: ResNet-18-, MobileNetV2-style
CNNs, a small transformer encoder, a two-layer LSTM) in graphc (llvm) vs ONNX Runtime and
PyTorch eager, measured side by side in interleaved rounds.

    python benchmarks/onnx_models.py [--runs 20] [--rounds 6] [--batch N] [--threads 2]

--batch re-exports the models at batch N (needs torch); by default the shipped files run
at the batch they were exported with (2 images of 3x64x64, 2x16 tokens, 4x12 steps).
Every contender uses the same number of threads (--threads, default 2). Medians in
milliseconds per call.

Measured on the 2-core EPYC while other jobs shared it (2026-11-25, three runs at each
thread count, contender order rotating every round; medians in ms):

    model        threads  graphc       ORT          ORT/graphc   torch
    resnet18     1        0.268-0.277  0.291-0.303  1.05-1.10x   3.1-3.4
    resnet18     2        0.269-0.291  0.250-0.307  0.86-1.06x   3.3-3.5
    mobilenetv2  1        0.221-0.228  0.257-0.271  1.15-1.19x   2.5-2.8
    mobilenetv2  2        0.226-0.235  0.250-0.282  1.11-1.20x   4.1-4.5
    transformer  1        0.124-0.128  0.177-0.184  1.43-1.45x   0.62-0.67
    lstm         1        0.067-0.068  0.065-0.067  0.97-1.00x   0.33-0.34

At the start of the day graphc ran these CNNs at 0.47x and 0.51x of ONNX Runtime's speed.
On one thread graphc is now ahead on both. On two it is level with ONNX Runtime, ahead or
behind with the machine's load: ONNX Runtime's workers spin and split every convolution
(0.19-0.21 ms when nothing else ran beside it), while graphc's workers sleep between
parallel regions (a wake-up costs 10-30 us here), so its kernels this small run serially,
and spinning ones made graphc several times slower whenever another process held a core.
The way forward is one fork per call: the batch split across threads, each running the
whole network on its images (the models compiled at batch 1 take 0.146 and 0.114 ms per
image, against 0.246 and 0.217 ms for the pair at batch 2).
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
