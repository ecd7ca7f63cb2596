"""Nothing on stderr that the user did not ask for: cold llvm compiles (GRAPHC_CACHE=0) of
small elementwise graphs, reductions over an axis, layer norm, softmax and the ONNX
ResNet-18 leave stderr empty under `python -W error`, while LLVM's remarks, captured from
file descriptor 2, reach the `graphc.llvm` logger (GRAPHC_LOG=llvm shows them)."""
from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Each graph is compared with numpy, so a silenced but wrong compile fails too. The 4- and
# 2-row shapes give the two-iteration loops (a batch split over two threads) that made
# LLVM print "loop not vectorized" before codegen stopped forcing vectorisation there.
SCRIPT = textwrap.dedent("""
    import numpy as np, graphc as gc
    rng = np.random.default_rng(0)

    def check(name, shape, build, want):
        g = gc.Graph(name)
        with g:
            x = gc.placeholder("x", shape, "f32")
            y = build(x)
        a = rng.standard_normal(shape).astype(np.float32)
        got = gc.compile(g, outputs=y, backend="llvm")(x=a)
        np.testing.assert_allclose(got, want(a), rtol=1e-4, atol=1e-5, err_msg=name)

    def softmax(a):
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def layer_norm(a):
        return (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)

    for shape in [(4,), (4, 1), (2, 8), (2, 3), (7, 33)]:
        n = shape[-1]
        check("add1", shape, lambda x: x + 1, lambda a: a + 1)
        check("sum_last", shape, lambda x: gc.sum(x, axis=-1), lambda a: a.sum(-1))
        check("max_first", shape, lambda x: gc.max(x, axis=0), lambda a: a.max(0))
        check("softmax", shape, gc.softmax, softmax)
        check("layer_norm", shape, lambda x: gc.layer_norm(
            x, gc.constant(np.ones(n, np.float32)), gc.constant(np.zeros(n, np.float32))),
            layer_norm)
    if RESNET:
        models = RESNET
        exe = gc.compile(gc.onnx.load(models + "/resnet18.onnx"), backend="llvm")
        data = np.load(models + "/resnet18.npz")
        np.testing.assert_allclose(exe(input=data["input"])[0], data["ort"], rtol=1e-4, atol=1e-4)
    print("ok")
""")

# A forced-vectorisation loop of two iterations: LLVM 22 refuses it and says so on fd 2.
NOISY_MODULE = textwrap.dedent("""
    ; ModuleID = "noisy"
    define void @"noisy"(ptr noalias dereferenceable(8) %out, ptr noalias dereferenceable(8) %x) {
    entry:
      br label %loop
    loop:
      %i = phi i64 [0, %entry], [%next, %loop]
      %p = getelementptr inbounds float, ptr %x, i64 %i
      %v = load float, ptr %p, align 4
      %w = fadd float %v, 1.0
      %q = getelementptr inbounds float, ptr %out, i64 %i
      store float %w, ptr %q, align 4
      %next = add nuw nsw i64 %i, 1
      %c = icmp slt i64 %next, 2
      br i1 %c, label %loop, label %end, !llvm.loop !2
    end:
      ret void
    }
    !0 = !{ !"llvm.loop.mustprogress" }
    !1 = !{ !"llvm.loop.vectorize.enable", i1 1 }
    !2 = distinct !{!2, !0, !1}
""")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("GRAPHC_LOG", "GRAPHC_DUMP_DIR")}
    full.update(GRAPHC_CACHE="0", PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, cwd=ROOT, env=full, timeout=300)


def test_cold_compiles_leave_stderr_empty():
    onnx_ok = True
    try:
        import onnx  # noqa: F401
    except ImportError:
        onnx_ok = False
    models = str(ROOT / "tests" / "onnx" / "models") if onnx_ok else ""
    r = _run(f"RESNET = {models!r}\n" + SCRIPT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    assert r.stderr == ""


def test_llvm_remarks_are_captured_and_logged_on_request():
    code = ("from graphc.backends.llvm import engine\nimport graphc.logconfig\ngraphc.logconfig.configure()\n"
            f"engine.optimize_and_emit({NOISY_MODULE!r})\nprint('ok')")
    quiet = _run(code)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "ok", quiet.stderr
    assert quiet.stderr == ""
    shown = _run(code, GRAPHC_LOG="llvm")
    assert shown.returncode == 0, shown.stderr
    remarks = [ln for ln in shown.stderr.splitlines() if "loop not vectorized" in ln]
    assert remarks and all(ln.startswith("graphc.llvm: optimise: ") for ln in remarks)


def test_other_writes_to_stderr_during_capture_are_passed_through(capfd):
    """What is not an LLVM diagnostic (another thread's output) is not swallowed."""
    from graphc.backends.llvm import engine
    with engine.quiet_llvm():
        os.write(2, b"remark: <unknown>:0:0: a captured remark\nsomeone else's line\n")
    err = capfd.readouterr().err
    assert "someone else's line" in err and "captured remark" not in err


def test_codegen_forces_no_vectorisation_llvm_refuses(caplog, monkeypatch):
    """The cause, not only the symptom: compiling the reductions and two-iteration loops
    gives LLVM nothing to complain about (no diagnostics even at DEBUG)."""
    monkeypatch.setenv("GRAPHC_CACHE", "0")  # LLVM must really run
    rng = np.random.default_rng(1)
    cases = [(lambda x: x + 1, lambda a: a + 1), (lambda x: gc.sum(x, axis=-1), lambda a: a.sum(-1)),
             (lambda x: gc.max(x, axis=0), lambda a: a.max(0)),
             (lambda x: gc.exp(gc.softmax(x)), lambda a: np.exp(np.exp(a) / np.exp(a).sum(-1, keepdims=True)))]
    with caplog.at_level(logging.DEBUG, logger="graphc.llvm"):
        for shape in [(4,), (2, 8), (4, 1)]:
            for build, want in cases:
                g = gc.Graph("quiet_cause")
                with g:
                    y = build(gc.placeholder("x", shape, "f32"))
                a = rng.standard_normal(shape).astype(np.float32)
                got = gc.compile(g, outputs=y, backend="llvm")(x=a)
                np.testing.assert_allclose(got, want(a), rtol=1e-5, atol=1e-6)
    bad = [r.getMessage() for r in caplog.records
           if r.name == "graphc.llvm" and ("remark:" in r.getMessage() or "warning:" in r.getMessage())]
    assert not bad
