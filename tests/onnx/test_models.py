"""Whole models exported from PyTorch (tests/onnx/make_models.py): graphc's llvm backend
against the outputs ONNX Runtime and PyTorch gave when the files were made, and against
live ONNX Runtime and PyTorch on fresh inputs where they are installed (CI has neither).

Tolerance: float32 results within 1e-4 (absolute, on outputs of size ~0.1-1), which allows
for a different summation order in GEMM and convolution over a few hundred terms per
output; the shipped ORT and PyTorch outputs agree with each other within 2e-7.
"""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

pytest.importorskip("onnx")

import graphc as gc  # noqa: E402
from graphc.backends import available_backends  # noqa: E402

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

MODELS = pathlib.Path(__file__).resolve().parent / "models"
NAMES = ["resnet18", "mobilenetv2", "transformer", "lstm"]
TOL = 1e-4


@pytest.fixture(scope="module")
def compiled():
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = gc.compile(gc.onnx.load(MODELS / f"{name}.onnx"), backend="llvm")
        return cache[name]
    return get


def _fresh_input(like: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if like.dtype.kind == "i":  # token ids
        return rng.integers(0, 100, like.shape).astype(like.dtype)
    return rng.standard_normal(like.shape).astype(like.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_onnxruntime_and_pytorch_outputs(name, compiled):
    data = np.load(MODELS / f"{name}.npz")
    (got,) = compiled(name)(input=data["input"])  # one output per ONNX graph output
    assert got.shape == data["ort"].shape and got.dtype == np.float32
    np.testing.assert_allclose(got, data["ort"], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(got, data["torch"], rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_live_onnxruntime(name, compiled):
    ort = pytest.importorskip("onnxruntime")
    x = _fresh_input(np.load(MODELS / f"{name}.npz")["input"], seed=1)
    sess = ort.InferenceSession(str(MODELS / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"input": x})
    np.testing.assert_allclose(compiled(name)(input=x)[0], want, rtol=TOL, atol=TOL)


def test_models_from_live_pytorch_export():
    """Export in the test (fresh weights, where torch is installed) and compare with
    PyTorch itself; the reference backend keeps this quick."""
    torch = pytest.importorskip("torch")
    import io
    from tests.onnx import make_models
    for name, (model, x) in make_models.models().items():
        with torch.no_grad():
            for p in model.parameters():  # not the shipped weights
                p.add_(torch.randn_like(p) * 0.01)
            want = model(x).numpy()
        buf = io.BytesIO()
        torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["output"],
                          opset_version=make_models.OPSET, dynamo=False)
        exe = gc.compile(gc.onnx.load(buf.getvalue()), backend="reference")
        np.testing.assert_allclose(exe(input=x.numpy())[0], want, rtol=TOL, atol=TOL, err_msg=name)


def test_initializers_as_parameters_can_be_read_and_replaced():
    path = MODELS / "transformer.onnx"
    data = np.load(MODELS / "transformer.npz")
    g = gc.onnx.load(path, initializers="params")
    assert g.params and not any(c.dtype.is_float and c.type.size > 1000 for c in g.constants)
    exe = gc.compile(g, backend="reference")
    np.testing.assert_allclose(exe(input=data["input"])[0], data["ort"], rtol=TOL, atol=TOL)
    # The classifier bias is a parameter: shifting it shifts every logit by the same amount.
    name = next(p.name for p in g.params if p.name.startswith("head") and p.type.rank == 1)
    exe.params[name] = exe.params[name] + 1.0
    np.testing.assert_allclose(exe(input=data["input"])[0], data["ort"] + 1.0, rtol=TOL, atol=TOL)
