"""AOT artifacts: export (compile) time vs load time, and the call time of a loaded artifact
vs the JIT executable, for the MLP and CNN training steps.

    python benchmarks/aot.py [--runs 3]

Each export runs in a fresh process (cold: what `graphc compile` costs), each load in a
fresh process too (`gc.load` as it reports itself, then the first call); rounds alternate
between the models. JIT compile time is gc.compile(backend="llvm") cold, with the disk
cache off, in a fresh process. Step times are interleaved medians in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

import graphc as gc
from harness import median_times, table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = {
    "mlp": ("benchmarks/mlp_step.py", "build", lambda r: [r.standard_normal((256, 784)).astype(np.float32),
                                                        (np.arange(256) % 10).astype(np.int32)]),
    "cnn": ("examples/digits_cnn.py", "build_train_step",
            lambda r: [r.standard_normal((50, 1, 8, 8)).astype(np.float32), (np.arange(50) % 10).astype(np.int32)]),
}


def _python(code: str, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _builder(model: str) -> str:
    path, fn, _ = MODELS[model]
    return (f"import sys, json, time; sys.path.insert(0, 'tests'); sys.path.insert(0, 'benchmarks'); "
            f"import examples, graphc as gc; g = getattr(examples.load({path!r}), {fn!r})(); ")


def export_cold(model: str, path: str) -> dict:
    return _python(_builder(model) + f"i = gc.export(g, None, {path!r}); "
                   "print(json.dumps({'compile': i.compile_seconds, 'stages': i.stage_seconds}))")


def jit_compile_cold(model: str) -> float:
    return _python(_builder(model) + "t = time.perf_counter(); gc.compile(g, backend='llvm'); "
                   "print(json.dumps({'s': time.perf_counter() - t}))", GRAPHC_CACHE="0")["s"]


def load_cold(model: str, path: str) -> dict:
    rng = "np.random.default_rng(0)"
    inputs = {"mlp": f"[{rng}.standard_normal((256, 784)).astype(np.float32), (np.arange(256) % 10).astype(np.int32)]",
              "cnn": f"[{rng}.standard_normal((50, 1, 8, 8)).astype(np.float32), (np.arange(50) % 10).astype(np.int32)]"}
    code = ("import json, time, numpy as np, graphc as gc; "
            f"exe = gc.load({path!r}); a = {inputs[model]}; t = time.perf_counter(); exe(*a); "
            "print(json.dumps({'load': exe.load_seconds, 'first_call': time.perf_counter() - t}))")
    return _python(code)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    samples: dict[str, dict[str, list[float]]] = {m: {"export": [], "jit": [], "load": [], "first": []}
                                                  for m in MODELS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.runs):
            for m in MODELS:
                path = os.path.join(tmp, f"{m}{r}")
                samples[m]["export"].append(export_cold(m, path)["compile"])
                samples[m]["jit"].append(jit_compile_cold(m))
                ld = load_cold(m, path)
                samples[m]["load"].append(ld["load"])
                samples[m]["first"].append(ld["first_call"])
        rows = []
        for m, s in samples.items():
            med = {k: statistics.median(v) for k, v in s.items()}
            rows.append([m, f"{med['export']:.2f}", f"{med['jit']:.2f}", f"{med['load'] * 1e3:.1f}",
                         f"{med['first'] * 1e3:.1f}", f"{med['export'] / med['load']:.0f}x"])
        print(f"medians of {args.runs} cold runs (fresh processes)")
        print(table(rows, ["model", "export s", "jit compile s", "gc.load ms", "first call ms",
                           "export/load"]))
        rows = []
        for m, (path, fn, make) in MODELS.items():
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            import examples
            g = getattr(examples.load(path), fn)()
            inputs = make(np.random.default_rng(1))
            jit_exe = gc.compile(g, backend="llvm")
            aot_exe = gc.load(os.path.join(tmp, f"{m}0"))
            t = median_times({"jit": lambda: jit_exe(*inputs), "aot": lambda: aot_exe(*inputs)}, runs=10)
            rows.append([m, f"{t['jit'] * 1e3:.2f}", f"{t['aot'] * 1e3:.2f}", f"{t['aot'] / t['jit']:.2f}"])
        print("\nper training step, interleaved medians")
        print(table(rows, ["model", "jit ms", "aot ms", "aot/jit"]))


if __name__ == "__main__":
    main()
