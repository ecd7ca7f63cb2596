"""The LLVM backend equals the reference interpreter: every registry op (over several shapes
and attribute draws), odd sizes and broadcasting, random graphs, and whole train steps.

Tolerances (relative, with an absolute floor of the same size for values near 0):
- f64: 1e-9. Elementwise math is within a few ulp of numpy; reductions may reassociate
  (vectorised accumulation), which changes rounding by about n*eps relative to the sum of
  magnitudes, far below 1e-9 for the sizes here.
- f32: 2e-4. Vector transcendental functions are within a few ulp (about 1e-6), GEMM and
  reductions accumulate in a different order than numpy (error grows like sqrt(k) eps,
  so about 1e-5 for k <= 1000), and composite ops (softmax, norms) compound a few of those.
- f16: 1e-2 (three decimal digits; each op rounds to f16 as numpy does, but intermediate
  f32 accumulation differs).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import graphc as gc
from tests.examples import digits_cnn
from graphc.backends import available_backends
from graphc.ir import all_ops

from tests.ir.random_graphs import build_random_graph, op_example, random_graphs

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

TOL = {"f64": 1e-9, "f32": 2e-4, "f16": 1e-2}


def feeds_for(graph, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        dt = v.dtype
        if dt.is_float:
            out[v.name] = rng.standard_normal(v.shape).astype(dt.np_dtype)
        elif dt.is_bool:
            out[v.name] = rng.random(v.shape) > 0.5
        else:
            out[v.name] = rng.integers(-5, 6, v.shape).astype(dt.np_dtype)
    return out


def assert_backends_agree(graph, feeds=None, outputs=None, tol=None, backend="llvm"):
    """`backend` computes what the reference does (within TOL per dtype); returns both."""
    ref = gc.compile(graph, outputs, backend="reference")
    fast = gc.compile(graph, outputs, backend=backend)
    feeds = feeds if feeds is not None else feeds_for(ref.graph)
    feeds = {k: feeds[k] for k in ref.input_names}
    want, got = ref(**feeds), fast(**feeds)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    for w, g_, v in zip(want, got, ref.graph.outputs):
        assert g_.shape == w.shape and g_.dtype == w.dtype, (v, g_.shape, g_.dtype)
        t = tol if tol is not None else TOL.get(v.dtype.name, 0)
        if v.dtype.is_float:
            np.testing.assert_allclose(g_, w, rtol=t, atol=t, equal_nan=True)
        elif v.producer is not None and v.producer.op == "argmax" and not np.array_equal(g_, w):
            _assert_same_maxima(ref.graph, v.producer, feeds, g_, w)
        else:
            np.testing.assert_array_equal(g_, w)
    return ref, fast


def _assert_same_maxima(graph, node, feeds, got, want):
    """argmax indices may differ where the operand has near-ties (a tanh saturating to 1
    in the last bit on one backend, not the other): the values they pick must agree."""
    (x,) = node.inputs
    operand = gc.compile(graph, x, backend="reference")
    xv = np.asarray(operand(**{k: feeds[k] for k in operand.input_names}), np.float64)
    axis = node.attrs["axis"] % xv.ndim
    if not node.attrs["keepdims"]:
        got, want = np.expand_dims(got, axis), np.expand_dims(want, axis)
    t = TOL.get(x.dtype.name, 0)
    np.testing.assert_allclose(np.take_along_axis(xv, got.astype(np.int64), axis),
                               np.take_along_axis(xv, want.astype(np.int64), axis), rtol=t, atol=t,
                               equal_nan=True, err_msg="argmax picked values that are not maxima")


def _with_outputs(g):
    if not g.outputs:
        g.outputs = [o for n in g.nodes for o in n.outputs]
    return g


@pytest.mark.parametrize("op", sorted(all_ops()))
@pytest.mark.parametrize("seed", range(4))
def test_every_op_matches_reference(op, seed):
    g = op_example(op, seed=seed)
    if g is None:
        pytest.skip(f"no example for {op}")
    assert_backends_agree(_with_outputs(g), feeds=None)


ODD = [(1,), (3,), (17,), (1000,), (3, 17), (2, 1, 5), (1000, 3)]
BCAST = [((3, 4), (4,)), ((2, 1, 5), (3, 1)), ((1,), (17,)), ((), (2, 3)), ((17, 1), (1, 9))]


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "sigmoid", "gelu", "erf", "sin", "cos", "sqrt",
                                "rsqrt", "relu", "abs", "neg", "sign"])
@pytest.mark.parametrize("shape", ODD)
@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_unary_odd_sizes(op, shape, dt):
    g = gc.Graph("u")
    with g:
        x = gc.placeholder("x", shape, dt)
        y = gc.ops.emit(op, x)
    rng = np.random.default_rng(len(shape))
    xv = rng.standard_normal(shape).astype(gc.dtypes.dtype(dt).np_dtype) * 3
    if op in ("log", "sqrt", "rsqrt"):
        xv = np.abs(xv) + 0.01
    assert_backends_agree(g, {"x": xv}, [y])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "less"])
@pytest.mark.parametrize("sa,sb", BCAST)
def test_binary_broadcasting(op, sa, sb):
    g = gc.Graph("b")
    with g:
        a = gc.placeholder("a", sa, "f32")
        b = gc.placeholder("b", sb, "f32")
        y = gc.ops.emit(op, a, b)
    rng = np.random.default_rng(3)
    av = rng.standard_normal(sa).astype(np.float32)
    bv = rng.standard_normal(sb).astype(np.float32)
    if op == "pow":
        av = np.abs(av) + 0.1
    assert_backends_agree(g, {"a": av, "b": bv}, [y])


@pytest.mark.parametrize("shape,axes", [((1000,), 0), ((3, 17), 1), ((3, 17), 0), ((4, 5, 6), (0, 2)),
                                        ((4, 5, 6), (1,)), ((2, 3, 4, 5), (2, 3)), ((7, 1000), 1)])
@pytest.mark.parametrize("red", ["sum", "mean", "max", "min"])
def test_reductions(shape, axes, red):
    g = gc.Graph("r")
    with g:
        x = gc.placeholder("x", shape, "f32")
        y = getattr(gc, red)(x, axis=axes)
        z = getattr(gc, red)(x, axis=axes, keepdims=True)
    assert_backends_agree(g, outputs=[y, z])


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 17, 5), (64, 1, 33), (100, 130, 70), (257, 65, 129)])
def test_matmul_sizes_and_transposes(m, n, k):
    g = gc.Graph("mm")
    with g:
        a = gc.placeholder("a", (m, k), "f32")
        b = gc.placeholder("b", (k, n), "f32")
        c = a @ b
        d = gc.ops.emit("matmul", gc.transpose(a), b, transpose_a=True)
        e = gc.ops.emit("matmul", a, gc.transpose(b), transpose_b=True)
        f = gc.ops.emit("matmul", gc.transpose(a), gc.transpose(b), transpose_a=True, transpose_b=True)
    assert_backends_agree(g, outputs=[c, d, e, f])


def test_batched_broadcast_matmul():
    g = gc.Graph("bmm")
    with g:
        a = gc.placeholder("a", (2, 1, 3, 4), "f64")
        b = gc.placeholder("b", (5, 4, 6), "f64")
        c = a @ b
    assert_backends_agree(g, outputs=[c])


def test_bad_gather_index_is_an_error_not_a_crash():
    g = gc.Graph("gather")
    with g:
        table = gc.placeholder("table", (5, 3), "f32")
        ids = gc.placeholder("ids", (4,), "i32")
        y = gc.take(table, ids, axis=0)
    exe = gc.compile(g, y, backend="llvm")
    tv = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(exe(table=tv, ids=np.array([4, 0, 2, 2], np.int32)), tv[[4, 0, 2, 2]])
    with pytest.raises(gc.GraphcError, match="out of range"):
        exe(table=tv, ids=np.array([4, 0, 7, 2], np.int32))
    with pytest.raises(gc.GraphcError, match="out of range"):
        exe(table=tv, ids=np.array([-1, 0, 1, 2], np.int32))


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_graphs(max_nodes=8, special_values=False))
def test_random_graphs_match_reference(g):
    assert_backends_agree(_with_outputs(g))


def test_seeded_random_graphs_match_reference():
    for seed in range(30):
        assert_backends_agree(_with_outputs(build_random_graph(seed, max_nodes=10, special_values=False)))


def _mlp_step(opt):
    g = gc.Graph("mlp_step")
    with g:
        x = gc.placeholder("x", (32, 20), "f32")
        t = gc.placeholder("t", (32,), "i32")
        h = gc.relu(gc.nn.Linear(20, 64)(x))
        h = gc.tanh(gc.nn.Linear(64, 64)(h))
        loss = gc.softmax_cross_entropy(gc.nn.Linear(64, 10)(h), t)
        g.set_outputs([loss], updates=opt.updates(loss))
    return g


@pytest.mark.parametrize("opt", [gc.optim.SGD(0.1, momentum=0.9), gc.optim.Adam(1e-3)])
def test_mlp_train_steps_track_the_reference(opt):
    g = _mlp_step(opt)
    ref = gc.compile(g, backend="reference")
    fast = gc.compile(g, backend="llvm")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((32, 20)).astype(np.float32)
        t = rng.integers(0, 10, 32).astype(np.int32)
        (lr,), (lf,) = ref(x=x, t=t), fast(x=x, t=t)
        np.testing.assert_allclose(lf, lr, rtol=1e-4)
    for k in ref.params:
        np.testing.assert_allclose(fast.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


def test_cnn_train_step_tracks_the_reference():
    ex = digits_cnn()
    g = ex.build_train_step()
    ref = gc.compile(g, backend="reference")
    fast = gc.compile(g, backend="llvm")
    images, labels = gc.load_digits()
    for i in range(3):
        x = images[i * ex.BATCH:(i + 1) * ex.BATCH, None]
        t = labels[i * ex.BATCH:(i + 1) * ex.BATCH]
        (lr, logits_r), (lf, logits_f) = ref(x=x, t=t), fast(x=x, t=t)
        np.testing.assert_allclose(lf, lr, rtol=1e-4)
        np.testing.assert_allclose(logits_f, logits_r, rtol=1e-3, atol=1e-4)
    for k in ref.params:
        np.testing.assert_allclose(fast.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_mean_over_no_elements_is_nan(opt_level):
    """numpy's answer (0 / 0), also when the mean is fused with its producer."""
    g = gc.Graph("empty_mean")
    with g:
        x = gc.placeholder("x", (3, 2), "f32")
        empty = gc.abs(x * 2.0)[0:0]
        g.set_outputs([gc.mean(empty, axis=(0, 1), keepdims=True), gc.mean(x[:, 0:0], axis=1)])
    fast = gc.compile(g, backend="llvm", opt_level=opt_level)
    a, b = fast(x=np.ones((3, 2), np.float32))
    assert np.isnan(a).all() and a.shape == (1, 1)
    assert np.isnan(b).all() and b.shape == (3,)
