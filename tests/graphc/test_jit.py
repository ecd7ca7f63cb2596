"""@gc.jit: numpy functions traced into graphs, checked against running the same Python
function on numpy arrays (the function itself is the oracle)."""
from __future__ import annotations

import collections
import inspect
import logging

import numpy as np
import pytest

import graphc as gc
from graphc.ir.errors import ConcretizationError
from graphc.numpy_api import UntraceableError

rng = np.random.default_rng(0)


def _close(got, want, rtol=2e-5, atol=2e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def numpy_model(x, w, b):
    h = np.tanh(np.matmul(x, w) + b)
    h = np.maximum(h, 0.1) * np.exp(-np.abs(h))
    s = np.sum(h, axis=1, keepdims=True)
    z = np.where(h > 0.2, h / s, np.sqrt(np.square(h) + 1.0))
    z = np.transpose(np.reshape(z, (x.shape[0], 2, -1)), (1, 0, 2))
    z = np.concatenate([z, np.clip(z, 0.0, 0.5)], axis=2)
    v = np.var(z, axis=0) + np.mean(z) - np.max(z, axis=(0, 2))[:, None] + np.std(z, ddof=1)
    v = v + np.outer(np.min(v, axis=1), np.ones(v.shape[1], v.dtype)) + np.ones_like(v) * 0.5
    v = v - np.full_like(v, 0.25) + np.zeros_like(v)
    return np.stack([v, np.log(v * v + 1)], axis=-1)


@pytest.mark.parametrize("backend, dtype", [("llvm", np.float32), ("llvm", np.float64),
                                             ("reference", np.float32)])
def test_numpy_function_matches_numpy(backend, dtype):
    f = gc.jit(numpy_model, backend=backend)
    x = rng.standard_normal((6, 8)).astype(dtype)
    w = rng.standard_normal((8, 10)).astype(dtype)
    b = rng.standard_normal(10).astype(dtype)
    got = f(x, w, b)
    assert got.dtype == dtype and got.shape == numpy_model(x, w, b).shape == (6, 10, 2)
    _close(got, numpy_model(x, w, b), rtol=1e-4 if dtype == np.float32 else 1e-10,
           atol=1e-5 if dtype == np.float32 else 1e-12)


def test_static_values_drive_python_control_flow():
    calls = []

    @gc.jit(static_argnames="mode")
    def f(x, n, mode="relu"):
        calls.append(1)
        for _ in range(n):                      # a Python int: static
            x = x * 2 if x.shape[0] > 2 else x  # a shape: static
        return np.maximum(x, 0) if mode == "relu" else np.tanh(x)

    x = rng.standard_normal((3, 4)).astype(np.float32)
    _close(f(x, 2), np.maximum(x * 4, 0))
    _close(f(x, 2, mode="tanh"), np.tanh(x * 4))
    _close(f(x[:2], 3), np.maximum(x[:2], 0))
    assert len(calls) == 3
    f(x, 2)
    f(x, 2, mode="tanh")
    assert len(calls) == 3, "a cached signature must not retrace"


def test_data_dependent_if_names_the_line_and_the_alternative():
    @gc.jit
    def f(x):
        if x.sum() > 0:
            return x
        return -x

    line = inspect.getsourcelines(f.fn)[1] + 2  # the `if` line
    with pytest.raises(ConcretizationError) as e:
        f(np.ones(3, np.float32))
    msg = str(e.value)
    assert f"test_jit.py:{line}" in msg and "gc.where" in msg and "static_argnames" in msg


@pytest.mark.parametrize("body, name", [(lambda x: np.linalg.svd(x), "numpy.linalg.svd"),
                                        (lambda x: np.arctan2(x, x), "numpy.arctan2"),
                                        (lambda x: np.cumsum(x), "numpy.cumsum"),
                                        (lambda x: float(x[0, 0]), "float()")])
def test_untraceable_numpy_is_named(body, name):
    f = gc.jit(body)
    with pytest.raises(gc.GraphcError, match=name.replace("(", r"\(").replace(")", r"\)")) as e:
        f(np.ones((2, 2), np.float32))
    assert isinstance(e.value, (UntraceableError, ConcretizationError))


def test_retrace_reasons_are_logged(caplog):
    @gc.jit
    def f(x, scale):
        return x * scale

    with caplog.at_level(logging.INFO, logger="graphc.jit"):
        f(np.ones((2, 3), np.float32), 2.0)
        assert not caplog.records
        f(np.ones((2, 3), np.float32), 2.0)
        f(np.ones((4, 3), np.float32), 2.0)
        f(np.ones((4, 3), np.float32), 3.0)
        f(np.ones((4, 3), np.float64), 3.0)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 3 and f.retraces == 3
    assert "x: float32[2, 3] -> float32[4, 3]" in msgs[0]
    assert "'scale'" in msgs[1] and "2.0 -> 3.0" in msgs[1]
    assert "float32[4, 3] -> float64[4, 3]" in msgs[2]


def test_graphc_log_recompile_prints(monkeypatch, capfd):
    monkeypatch.setenv("GRAPHC_LOG", "recompile")
    logger = logging.getLogger("graphc.jit")
    before = list(logger.handlers)
    try:
        f = gc.jit(lambda x: x + 1)
        f(np.ones(2, np.float32))
        f(np.ones(3, np.float32))
        assert "graphc.jit: recompiling" in capfd.readouterr().err
    finally:
        for h in logger.handlers[len(before):]:
            logger.removeHandler(h)
        logger.setLevel(logging.NOTSET)


Pair = collections.namedtuple("Pair", "a b")


def test_pytrees_in_and_out():
    @gc.jit
    def f(params, batch):
        h = batch["x"] @ params[0] + params[1]
        return {"h": h, "pair": Pair(h.sum(), [np.tanh(h), 7]), "label": "static"}

    p = (rng.standard_normal((4, 3)).astype(np.float32), np.zeros(3, np.float32))
    batch = {"x": rng.standard_normal((5, 4)).astype(np.float32)}
    out = f(p, batch)
    h = batch["x"] @ p[0] + p[1]
    assert out["label"] == "static" and out["pair"].b[1] == 7 and isinstance(out["pair"], Pair)
    _close(out["h"], h)
    _close(out["pair"].a, h.sum(), rtol=1e-5)
    _close(out["pair"].b[0], np.tanh(h))


def test_grad_inside_traced_function():
    @gc.jit
    def loss_and_grad(x, w):
        loss = np.sum(np.tanh(x @ w))
        return loss, gc.grad(loss, [w])[0]

    x = rng.standard_normal((5, 4))
    w = rng.standard_normal((4, 3))
    loss, gw = loss_and_grad(x, w)
    _close(loss, np.tanh(x @ w).sum(), rtol=1e-12)
    _close(gw, x.T @ (1 - np.tanh(x @ w) ** 2), rtol=1e-10, atol=1e-12)  # analytic gradient


def test_lower_shows_every_stage_and_compiles():
    def f(x, w):
        return np.maximum(x @ w, 0.0) * 2.0 + 1.0

    x = rng.standard_normal((8, 16)).astype(np.float32)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    lowered = gc.jit(f).lower(x, w)
    assert lowered.stages == ["traced", "simplify", "winograd", "legalize", "fusion", "optimized", "kernel",
                              "llvm"]
    traced = lowered.as_text("traced")
    assert "matmul(%x, %w)" in traced and "group(" not in traced
    assert "group(" in lowered.as_text("fusion")  # the elementwise chain fused
    assert gc.parse(lowered.as_text("optimized")).name == "f"
    assert "gemm " in lowered.as_text("kernel")  # the relu, *2, +1 chain is its epilogue
    assert "define void @\"f_entry\"" in lowered.as_text("llvm")
    assert "fusion" in lowered.report()
    with pytest.raises(gc.GraphcError, match="unknown stage"):
        lowered.as_text("nonsense")
    compiled = lowered.compile()
    _close(compiled(x, w), f(x, w), rtol=1e-5)
    with pytest.raises(gc.GraphcError, match="compiled for other arguments"):
        compiled(x[:4], w)


def test_backends_and_unknown_backend():
    x = rng.standard_normal(5).astype(np.float32)
    for backend in ("reference", "llvm"):
        _close(gc.jit(lambda v: np.exp(v) - 1, backend=backend)(x), np.exp(x) - 1)
    with pytest.raises(gc.GraphcError, match="unknown backend 'nope'"):
        gc.jit(lambda v: v + 1, backend="nope")(x)


def test_nested_jit_inlines_and_constants_close_over():
    table = rng.standard_normal((3,)).astype(np.float32)
    inner = gc.jit(lambda v: v * table)

    @gc.jit
    def outer(v):
        return inner(v) + 1

    x = rng.standard_normal(3).astype(np.float32)
    _close(outer(x), x * table + 1)


def test_bad_arguments_are_clear():
    f = gc.jit(lambda x: x + 1)
    with pytest.raises(gc.GraphcError, match="arrays of dtype"):
        f(np.array(["a"], dtype=object))
    with pytest.raises(gc.GraphcError, match="neither an array nor hashable"):
        f({"k": [1, {2}]})  # a set: not an array, and unhashable
    with pytest.raises(gc.GraphcError, match="static_argnames"):
        gc.jit(lambda x: x, static_argnames=("y",))


def test_varargs_kwargs_and_numpy_indices_trace():
    """Issue 14 a and b: `def f(*xs)` called with one argument traces (it hit a TypeError in
    naming the input), and np.take with numpy integer indices works under @gc.jit."""
    @gc.jit(backend="reference")
    def f(*xs, **kw):
        return np.take(xs[0], np.array([2, 0]), axis=0) * kw.get("scale", 1.0)

    x = rng.standard_normal((3, 4)).astype(np.float32)
    _close(f(x), x[[2, 0]])
    _close(f(x, scale=2.0), 2 * x[[2, 0]])
    with pytest.raises(gc.GraphcError, match="integer index"):
        gc.jit(lambda a: np.take(a, np.array([0.5])), backend="reference")(x)
