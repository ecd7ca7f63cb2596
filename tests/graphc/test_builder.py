"""The builder API: Tensor operators and indexing against numpy, weak typing, locations and
error messages."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import graphc as gc

RNG = np.random.default_rng(7)


def run(build, *arrays, dtype="f64"):
    """Build a graph over placeholders for arrays, compile it on the reference backend, run it."""
    g = gc.Graph("t")
    with g:
        xs = [gc.placeholder(f"x{i}", a.shape, gc.dtypes.from_numpy(a.dtype).name)
              for i, a in enumerate(arrays)]
        out = build(*xs)
    exe = gc.compile(g, out, backend="reference")
    feeds = {f"x{i}": a for i, a in enumerate(arrays)}
    return exe(**{k: feeds[k] for k in exe.input_names})  # only the inputs out depends on


def here() -> int:
    return sys._getframe(1).f_lineno


def test_operators_match_numpy():
    a = RNG.standard_normal((3, 4))
    b = RNG.standard_normal((4,)) + 3.0
    fns = [lambda x, y: x + y, lambda x, y: x - y, lambda x, y: x * y, lambda x, y: x / y,
           lambda x, y: 2.0 - x, lambda x, y: 1.0 / y, lambda x, y: -x + abs(y),
           lambda x, y: x @ x.T, lambda x, y: (x * 3) ** 2, lambda x, y: 2 ** y,
           lambda x, y: (x > 0.1) & (y < 3.5), lambda x, y: ~(x <= y) | (x == x),
           lambda x, y: x != y, lambda x, y: x >= 0]
    for f in fns:
        np.testing.assert_allclose(run(f, a, b), f(a, b), rtol=1e-12)


def test_ndarray_on_the_left_defers_to_tensor():
    a = RNG.standard_normal((2, 3))
    c = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(run(lambda x: c + x, a), c + a)
    np.testing.assert_allclose(run(lambda x: c * x - c, a), c * a - c)


def test_methods_and_reductions_match_numpy():
    a = RNG.standard_normal((2, 3, 4))
    cases = [
        (lambda x: x.sum(), lambda x: x.sum()),
        (lambda x: x.mean(axis=-1), lambda x: x.mean(axis=-1)),
        (lambda x: x.max(axis=(0, 2), keepdims=True), lambda x: x.max(axis=(0, 2), keepdims=True)),
        (lambda x: x.min(1), lambda x: x.min(1)),
        (lambda x: x.argmax(axis=2), lambda x: x.argmax(axis=2)),
        (lambda x: x.argmax(), lambda x: np.asarray(x.argmax())),
        (lambda x: x.reshape(4, -1), lambda x: x.reshape(4, -1)),
        (lambda x: x.reshape((-1,)), lambda x: x.reshape(-1)),
        (lambda x: x.T, lambda x: x.T),
        (lambda x: x.transpose(1, 0, 2), lambda x: x.transpose(1, 0, 2)),
        (lambda x: x.astype("f32"), lambda x: x.astype(np.float32)),
        (lambda x: gc.expand_dims(x, -1), lambda x: np.expand_dims(x, -1)),
        (lambda x: gc.squeeze(x[:1]), lambda x: np.squeeze(x[:1])),
        (lambda x: gc.concat([x, x * 2], axis=-1), lambda x: np.concatenate([x, x * 2], -1)),
        (lambda x: gc.pad(x, [(1, 0), (0, 2), (1, 1)], 3.0),
         lambda x: np.pad(x, [(1, 0), (0, 2), (1, 1)], constant_values=3.0)),
        (lambda x: gc.where(x > 0, x, 0.0), lambda x: np.where(x > 0, x, 0.0)),
        (lambda x: gc.clip(x, -0.5, 0.5), lambda x: np.clip(x, -0.5, 0.5)),
        (lambda x: gc.broadcast_to(x[:, :1], (2, 3, 4)), lambda x: np.broadcast_to(x[:, :1], (2, 3, 4))),
        (lambda x: gc.softmax(x, axis=1).sum(axis=1), lambda x: np.ones((2, 4))),
    ]
    for build, ref in cases:
        np.testing.assert_allclose(run(build, a), ref(a), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("key", [
    1, -1, (slice(None), 2), (Ellipsis, 1), (slice(1, None), slice(None, None, 2)),
    (None, 0, Ellipsis, None), (slice(-2, None), slice(None), slice(1, 3)),
    (slice(3, 1),), (0, 0, 0), (slice(None, None, 3), None),
])
def test_getitem_matches_numpy(key):
    a = RNG.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(run(lambda x: x[key], a), a[key])


def test_integer_array_indexing_gathers_rows():
    a = RNG.standard_normal((6, 3))
    ids = np.array([5, 0, 5, 2])
    np.testing.assert_array_equal(run(lambda x: x[ids], a), a[ids])
    np.testing.assert_array_equal(run(lambda x, i: gc.take(x, i, axis=0), a, ids), a[ids])


def test_matmul_vectors_follow_numpy():
    m, v = RNG.standard_normal((3, 4)), RNG.standard_normal(4)
    np.testing.assert_allclose(run(lambda x, y: x @ y, m, v), m @ v)
    np.testing.assert_allclose(run(lambda x, y: y @ x.T, m, v), v @ m.T)
    np.testing.assert_allclose(run(lambda y: y @ y, v), v @ v)


def test_python_numbers_take_the_tensor_dtype():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,), "f16")
        i = gc.placeholder("i", (3,), "i32")
        assert (x * 2.5).dtype == gc.f16
        assert (i + 1).dtype == gc.i32
        assert (x + np.ones(3)).dtype == gc.f16  # float data joins a float tensor
        with pytest.raises(gc.BuildError, match="without losing information"):
            i * 2.5
        with pytest.raises(gc.BuildError, match="without losing information"):
            i + np.int64(2**40)


def test_tensors_of_different_dtypes_are_not_promoted():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,), "f32")
        y = gc.placeholder("y", (3,), "f64")
        with pytest.raises(gc.DTypeError, match="insert a cast"):
            x + y


def test_shape_error_names_shapes_op_and_user_line():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (64, 784))
        w = gc.param("w", (100, 256), init=gc.init.zeros())
        line = here() + 2
        with pytest.raises(gc.ShapeError) as info:
            x @ w
    msg = str(info.value)
    assert "matmul" in msg and "f32[64,784]" in msg and "f32[100,256]" in msg
    assert f"{__file__}:{line}" in msg
    assert info.value.loc.file == __file__ and info.value.loc.line == line


def test_nodes_record_the_user_line_not_graphc_internals():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3, 4))
        line = here() + 1
        y = gc.softmax(gc.relu(x) * 2.0)
        lin = gc.nn.Linear(4, 2)
        line2 = here() + 1
        lin(y)
    locs = {(n.op, n.loc.line) for n in g.nodes}
    assert ("relu", line) in locs and ("softmax", line) in locs and ("mul", line) in locs
    assert ("matmul", line2) in locs and ("add", line2) in locs
    assert all(n.loc.file == __file__ for n in g.nodes)


def test_symbolic_tensors_refuse_python_control_flow():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,))
        with pytest.raises(gc.BuildError, match="gc.where"):
            if x.sum() > 0:
                pass
        with pytest.raises(gc.BuildError, match="no data"):
            np.asarray(x)


def test_builder_misuse_errors():
    with pytest.raises(gc.BuildError, match="no active graph"):
        gc.placeholder("x", (3,))
    g1, g2 = gc.Graph("a"), gc.Graph("b")
    with g1:
        x = gc.placeholder("x", (3,))
    with g2:
        y = gc.placeholder("y", (3,))
        with pytest.raises(gc.BuildError, match="different graphs"):
            x + y
        with pytest.raises(gc.GraphcError, match="already has a value named"):
            gc.placeholder("y", (2,))
        with pytest.raises(gc.GraphcError, match="must start with a letter"):
            gc.placeholder("1x", (2,))
        with pytest.raises(gc.BuildError, match="init=... or value="):
            gc.param("p", (2,))
        with pytest.raises(gc.GraphcError, match="value has shape"):
            gc.param("q", (2,), value=np.zeros(3))
        with pytest.raises(gc.BuildError, match="out of range"):
            y.sum(axis=1)
        with pytest.raises(gc.BuildError, match="negative steps"):
            y[::-1]
        with pytest.raises(gc.BuildError, match="out of range"):
            y[3]


def test_unknown_op_suggests_a_name():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,))
        with pytest.raises(gc.UnknownOpError, match="did you mean relu"):
            gc.ops.emit("reluu", x)


def test_params_with_values_and_initialisers():
    w0 = RNG.standard_normal((3, 2)).astype(np.float32)
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (1, 3))
        w = gc.param("w", (3, 2), value=w0)
        b = gc.param("b", (2,), init=gc.init.fill(0.5))
        v = gc.param("v", (4, 5), init=gc.init.normal(0.1, seed=3))
        y = x @ w + b
    exe = gc.compile(g, [y, v * 1.0], backend="reference")
    xv = np.ones((1, 3), np.float32)
    out, vv = exe(xv)
    np.testing.assert_allclose(out, xv @ w0 + 0.5, rtol=1e-6)
    np.testing.assert_allclose(vv, np.random.default_rng(3).normal(0, 0.1, (4, 5)).astype(np.float32))


def test_numpy_indices_and_labels_keep_their_integer_dtype():
    """Issue 14 item 5: a numpy operand takes the dtype of its role (the registry's
    nondiff_inputs), not the first tensor's: indices stay i32/i64, never become f32."""
    xv = RNG.standard_normal((5, 3)).astype(np.float32)
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (5, 3))
        a = gc.take(x, np.array([0, 2], np.int32))
        b = x[np.array([4, 1])]
        loss = gc.softmax_cross_entropy(x, np.array([0, 1, 2, 0, 1], np.int64), reduction="none")
        c = gc.where(np.array([True, False, True]), x, 0.0)
    assert [t.value.producer.inputs[i].dtype.name for t, i in ((a, 1), (b, 1), (loss, 1), (c, 0))] \
        == ["i32", "i64", "i64", "bool"]
    got = gc.compile(g, [a, b, c], backend="reference")(x=xv)
    np.testing.assert_array_equal(got[0], xv[[0, 2]])
    np.testing.assert_array_equal(got[1], xv[[4, 1]])
    np.testing.assert_array_equal(got[2], np.where([True, False, True], xv, 0))
    with g:
        with pytest.raises(gc.DTypeError, match="integer index"):
            gc.take(x, np.array([0.0, 2.0]))  # a float index is refused, never truncated


def test_conv2d_padding_forms_and_int_arguments_are_checked():
    x0 = RNG.standard_normal((1, 2, 6, 7)).astype(np.float32)
    w0 = RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", x0.shape)
        w = gc.placeholder("w", w0.shape)
        nested = gc.conv2d(x, w, padding=((1, 2), (0, 1)))      # ((top, bottom), (left, right))
        flat = gc.conv2d(x, w, padding=(1, 2, 0, 1))            # (top, bottom, left, right)
        for bad in [((1, 1), (1, 1), (1, 1)), ((1,), (1, 1)), 1.5, (1, None), "full", -1]:
            with pytest.raises(gc.GraphcError, match="padding"):
                gc.conv2d(x, w, padding=bad)
        with pytest.raises(gc.BuildError, match="kernel.*must be an int"):
            gc.max_pool2d(x, kernel=(2, 2.5))                    # never truncated to 2
        with pytest.raises(gc.BuildError, match="stride must be"):
            gc.conv2d(x, w, stride=None)
        with pytest.raises(gc.BuildError, match="shape.*must be an int"):
            gc.placeholder("z", (2.5,))
    assert nested.shape == flat.shape == (1, 3, 7, 6)
    a, b = gc.compile(g, [nested, flat], backend="reference")(x=x0, w=w0)
    np.testing.assert_array_equal(a, b)


def test_no_submodule_shadows_an_op_in_the_package_namespace():
    """`gc.log` is the op: a graphc submodule named like an op (graphc/log.py once was)
    would replace it once imported. Import every submodule, then check each op function."""
    import importlib
    import pkgutil
    from graphc import ops as gc_ops
    for m in pkgutil.iter_modules(gc.__path__, "graphc."):  # (only these can shadow)
        if m.name not in ("graphc.__main__",):
            importlib.import_module(m.name)
    shadowed = [n for n in gc_ops.__all__ if hasattr(gc, n) and getattr(gc, n) is not getattr(gc_ops, n)]
    assert not shadowed, shadowed
    x = np.array([1.0, 4.0], np.float32)
    g = gc.Graph("log")
    with g:
        y = gc.log(gc.placeholder("x", (2,), "f32"))
    np.testing.assert_allclose(gc.compile(g, outputs=y, backend="reference")(x), np.log(x), rtol=1e-6)
