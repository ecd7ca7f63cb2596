"""Elementwise, reduction, layout and contraction ops: shape rules, references against
independent formulas, and gradients against central finite differences (float64)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import graphc.ir as ir
from graphc.backends.reference import evaluate
from graphc.testing import check_op_grads

RNG = np.random.default_rng(1234)
ODD_SHAPES = [(1,), (3,), (17,), (1000,), (3, 17), (2, 1, 5)]


def run_op(op: str, args, attrs=None):
    """Build one node over inputs holding args and evaluate it with the reference backend."""
    g = ir.Graph("t")
    xs = [g.add_input(f"x{i}", ir.TensorType(np.shape(a), ir.dtypes.from_numpy(np.asarray(a).dtype)))
          for i, a in enumerate(args)]
    node = g.add_node(op, xs, attrs or {})
    res = evaluate(g, dict(zip(xs, [np.asarray(a) for a in args])), node.outputs)
    outs = [res[v] for v in node.outputs]
    return outs[0] if len(outs) == 1 else outs


def infer(op: str, types, attrs=None):
    g = ir.Graph("t")
    xs = [g.add_input(f"x{i}", ir.TensorType(s, d)) for i, (s, d) in enumerate(types)]
    return [v.type for v in g.add_node(op, xs, attrs or {}).outputs]


def scalar_map(fn, x):
    return np.vectorize(fn, otypes=[np.float64])(x.astype(np.float64))


def _sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))


def _gelu(v):
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def _gelu_tanh(v):
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


UNARY = {  # op -> (scalar formula, domain, attrs)
    "neg": (lambda v: -v, "any", {}),
    "abs": (abs, "any", {}),
    "sign": (lambda v: float((v > 0) - (v < 0)), "any", {}),
    "exp": (math.exp, "any", {}),
    "log": (math.log, "pos", {}),
    "sqrt": (math.sqrt, "pos", {}),
    "rsqrt": (lambda v: 1.0 / math.sqrt(v), "pos", {}),
    "tanh": (math.tanh, "any", {}),
    "sigmoid": (_sigmoid, "any", {}),
    "relu": (lambda v: max(v, 0.0), "any", {}),
    "leaky_relu": (lambda v: v if v > 0 else 0.2 * v, "any", {"alpha": 0.2}),
    "gelu": (_gelu, "any", {}),
    "gelu_tanh": (_gelu_tanh, "any", {"approximate": "tanh"}),
    "erf": (math.erf, "any", {}),
    "sin": (math.sin, "any", {}),
    "cos": (math.cos, "any", {}),
    "stop_gradient": (lambda v: v, "any", {}),
}


def _sample(domain: str, shape, dtype=np.float64):
    x = RNG.standard_normal(shape) * 2
    if domain == "pos":
        x = np.abs(x) + 0.1
    return x.astype(dtype)


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_unary_reference_matches_scalar_formula(name, shape):
    fn, domain, attrs = UNARY[name]
    op = "gelu" if name == "gelu_tanh" else name
    x = _sample(domain, shape)
    np.testing.assert_allclose(run_op(op, [x], attrs), scalar_map(fn, x), rtol=1e-12, atol=1e-14)
    x32 = x.astype(np.float32)
    y32 = run_op(op, [x32], attrs)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, scalar_map(fn, x32), rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(UNARY) - {"stop_gradient"}))
def test_unary_gradient(name):
    fn, domain, attrs = UNARY[name]
    op = "gelu" if name == "gelu_tanh" else name
    x = _sample(domain, (3, 5))
    if op in ("abs", "relu", "leaky_relu", "sign"):
        x = np.where(np.abs(x) < 0.05, 0.3, x)  # keep finite differences off the kink
    check_op_grads(op, [x], attrs)


def test_stop_gradient_blocks_gradient():
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((3,), "f64"))
    b = ir.Emitter(g)
    y = b.sum(b.mul(b.stop_gradient(x), x), axes=(0,))
    from graphc.passes.autodiff import grad
    (gx,) = grad(g, y, [x])
    xv = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(evaluate(g, {x: xv}, [gx])[gx], xv)  # d(c*x)/dx = c


def test_sigmoid_does_not_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], np.float32)
    y = run_op("sigmoid", [x])
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, scalar_map(_sigmoid, x), atol=1e-7)


def test_unary_dtype_rules():
    with pytest.raises(ir.DTypeError, match="floating-point"):
        infer("exp", [((3,), "i32")])
    assert infer("neg", [((3,), "i32")])[0] == ir.TensorType((3,), "i32")
    with pytest.raises(ir.DTypeError, match="bool"):
        infer("logical_not", [((3,), "f32")])


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "maximum": max,
    "minimum": min,
}
BROADCAST_CASES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 5), (3, 1)), ((1,), (17,)),
                   ((), (2, 3)), ((1000,), (1,))]


def _loop_binary(fn, a, b):
    shape = np.broadcast_shapes(a.shape, b.shape)
    ab, bb = np.broadcast_to(a, shape), np.broadcast_to(b, shape)
    out = np.empty(shape)
    for idx in itertools.product(*map(range, shape)):
        out[idx] = fn(float(ab[idx]), float(bb[idx]))
    return out


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", BROADCAST_CASES)
def test_binary_reference_and_broadcasting(name, sa, sb):
    a, b = RNG.standard_normal(sa), RNG.standard_normal(sb)
    if name == "pow":
        a = np.abs(a) + 0.1
    if name == "div":
        b = np.where(np.abs(b) < 0.1, 0.5, b)
    out = run_op(name, [a, b])
    assert out.shape == np.broadcast_shapes(sa, sb)
    np.testing.assert_allclose(out, _loop_binary(BINARY[name], a, b), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("sa,sb", [((3, 4), (4,)), ((2, 1, 3), (4, 1)), ((), (2, 3))])
def test_binary_gradient(name, sa, sb):
    a, b = RNG.standard_normal(sa), RNG.standard_normal(sb)
    if name == "pow":
        a = np.abs(a) + 0.5
    if name == "div":
        b = np.where(np.abs(b) < 0.3, 0.7, b)
    if name in ("maximum", "minimum"):
        b = b + 0.05  # no ties, where the derivative jumps
    check_op_grads(name, [a, b])


def test_max_min_ties_go_to_first_operand():
    a = np.array([1.0, 2.0, 3.0])
    from graphc.passes.autodiff import grad
    for op in ("maximum", "minimum"):
        g = ir.Graph("t")
        x = g.add_input("x", ir.TensorType((3,), "f64"))
        y = g.add_input("y", ir.TensorType((3,), "f64"))
        b = ir.Emitter(g)
        loss = b.sum(getattr(b, op)(x, y), axes=(0,))
        gx, gy = grad(g, loss, [x, y])
        res = evaluate(g, {x: a, y: a.copy()}, [gx, gy])
        np.testing.assert_array_equal(res[gx], np.ones(3))
        np.testing.assert_array_equal(res[gy], np.zeros(3))


def test_integer_division_and_arithmetic():
    a = np.array([7, -7, 5, 0], np.int32)
    b = np.array([2, 2, 0, 3], np.int32)
    expect = np.array([7 // 2, -7 // 2, 0, 0], np.int32)  # documented: x/0 is 0 for ints
    np.testing.assert_array_equal(run_op("div", [a, b]), expect)
    np.testing.assert_array_equal(run_op("add", [a, b]), [9, -5, 5, 3])


def test_binary_errors_name_shapes_and_dtypes():
    with pytest.raises(ir.ShapeError, match=r"\(3, 4\) and \(5,\)"):
        infer("add", [((3, 4), "f32"), ((5,), "f32")])
    with pytest.raises(ir.DTypeError, match="cast"):
        infer("mul", [((3,), "f32"), ((3,), "f64")])
    with pytest.raises(ir.DTypeError):
        infer("pow", [((3,), "i32"), ((3,), "i32")])


COMPARE = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less,
           "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal}


@pytest.mark.parametrize("name", sorted(COMPARE))
def test_comparisons(name):
    a = RNG.integers(0, 3, (4, 5)).astype(np.float32)
    b = RNG.integers(0, 3, (5,)).astype(np.float32)
    out = run_op(name, [a, b])
    assert out.dtype == np.bool_
    py = {"equal": lambda x, y: x == y, "not_equal": lambda x, y: x != y,
          "less": lambda x, y: x < y, "less_equal": lambda x, y: x <= y,
          "greater": lambda x, y: x > y, "greater_equal": lambda x, y: x >= y}[name]
    np.testing.assert_array_equal(out, _loop_binary(lambda x, y: float(py(x, y)), a, b) > 0.5)


def test_logical_ops():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    np.testing.assert_array_equal(run_op("logical_and", [a, b]), [x and y for x, y in zip(a, b)])
    np.testing.assert_array_equal(run_op("logical_or", [a, b]), [x or y for x, y in zip(a, b)])
    np.testing.assert_array_equal(run_op("logical_not", [a]), [not x for x in a])


def test_where_reference_and_gradient():
    c = RNG.standard_normal((3, 4)) > 0
    x, y = RNG.standard_normal((3, 4)), RNG.standard_normal((4,))
    out = run_op("where", [c, x, y])
    for i, j in itertools.product(range(3), range(4)):
        assert out[i, j] == (x[i, j] if c[i, j] else y[j])
    check_op_grads("where", [c, x, y], wrt=[1, 2])
    with pytest.raises(ir.DTypeError, match="bool"):
        infer("where", [((3,), "f32"), ((3,), "f32"), ((3,), "f32")])


@pytest.mark.parametrize("src,dst", [("f64", "f32"), ("f32", "f16"), ("f32", "i32"), ("i32", "f32"),
                                     ("i64", "i32"), ("bool", "f32"), ("f32", "bool")])
def test_cast(src, dst):
    x = (RNG.standard_normal(7) * 5).astype(ir.dtypes.dtype(src).np_dtype)
    out = run_op("cast", [x], {"to": dst})
    assert out.dtype == ir.dtypes.dtype(dst).np_dtype
    for v, o in zip(x, out):
        if dst in ("i32", "i64"):
            assert o == int(math.trunc(float(v)))  # C semantics: toward zero
        elif dst == "bool":
            assert o == bool(v)
        else:
            assert o == np.asarray(float(v), ir.dtypes.dtype(dst).np_dtype)


def test_cast_gradient():
    check_op_grads("cast", [RNG.standard_normal(5)], {"to": "f32"}, rtol=1e-4, atol=1e-4, eps=1e-3)


# --- reductions ---------------------------------------------------------------------------

def _loop_reduce(fn, x, axes, keepdims):
    """Reduce with Python over explicit index groups: independent of numpy's reductions."""
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    out = np.empty(out_shape)
    for idx in itertools.product(*map(range, out_shape)):
        ranges = [range(x.shape[i]) if i in axes else [idx[i]] for i in range(x.ndim)]
        out[idx] = fn([float(x[j]) for j in itertools.product(*ranges)])
    return out if keepdims else out.reshape([d for i, d in enumerate(x.shape) if i not in axes])


REDUCE = {"sum": math.fsum, "mean": lambda v: math.fsum(v) / len(v), "max": max, "min": min}


@pytest.mark.parametrize("name", sorted(REDUCE))
@pytest.mark.parametrize("shape,axes", [((17,), (0,)), ((3, 4, 5), (1,)), ((3, 4, 5), (0, 2)),
                                        ((3, 4, 5), (0, 1, 2)), ((1, 3), (0,))])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(name, shape, axes, keepdims):
    x = RNG.standard_normal(shape)
    out = run_op(name, [x], {"axes": axes, "keepdims": keepdims})
    np.testing.assert_allclose(out, _loop_reduce(REDUCE[name], x, axes, keepdims), rtol=1e-12)
    check_op_grads(name, [x], {"axes": axes, "keepdims": keepdims})


def test_max_gradient_splits_ties():
    from graphc.passes.autodiff import grad
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((2, 3), "f64"))
    b = ir.Emitter(g)
    (gx,) = grad(g, b.sum(b.max(x, axes=(1,)), axes=(0,)), [x])
    xv = np.array([[1.0, 3.0, 3.0], [0.0, -1.0, 2.0]])
    np.testing.assert_allclose(evaluate(g, {x: xv}, [gx])[gx], [[0, 0.5, 0.5], [0, 0, 1]])


def test_argmax():
    x = RNG.standard_normal((4, 7))
    x[2, 5] = x[2, 1] = 10.0  # first maximum wins
    out = run_op("argmax", [x], {"axis": 1})
    assert out.dtype == np.int64
    assert list(out) == [max(range(7), key=lambda j: (x[i, j], -j)) for i in range(4)]
    assert infer("argmax", [((4, 7), "f32")], {"axis": 0, "keepdims": True})[0].shape == (1, 7)


def test_reduction_axis_errors():
    with pytest.raises(ir.ShapeError, match="out of range"):
        infer("sum", [((3, 4), "f32")], {"axes": (2,)})
    with pytest.raises(ir.ShapeError, match="sorted"):
        infer("sum", [((3, 4), "f32")], {"axes": (1, 0)})
    with pytest.raises(ir.AttrError, match="needs attribute axes"):
        infer("sum", [((3, 4), "f32")], {})
    with pytest.raises(ir.AttrError, match="no attribute"):
        infer("sum", [((3, 4), "f32")], {"axes": (0,), "keepdim": True})
    with pytest.raises(ir.ShapeError, match="empty"):
        infer("max", [((0, 4), "f32")], {"axes": (0,)})


# --- layout -------------------------------------------------------------------------------

def test_reshape_transpose_broadcast_expand_squeeze():
    x = RNG.standard_normal((2, 3, 4))
    flat = [float(v) for v in x.ravel()]
    r = run_op("reshape", [x], {"shape": (4, 6)})
    assert [float(v) for v in r.ravel()] == flat and r.shape == (4, 6)
    t = run_op("transpose", [x], {"perm": (2, 0, 1)})
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        assert t[k, i, j] == x[i, j, k]
    bsrc = RNG.standard_normal((3, 1))
    bt = run_op("broadcast_to", [bsrc], {"shape": (2, 3, 4)})
    for i, j, k in itertools.product(range(2), range(3), range(4)):
        assert bt[i, j, k] == bsrc[j, 0]
    e = run_op("expand_dims", [x], {"axes": (0, 3)})
    assert e.shape == (1, 2, 3, 1, 4)
    s = run_op("squeeze", [e], {"axes": (0, 3)})
    np.testing.assert_array_equal(s, x)
    for op, attrs in [("reshape", {"shape": (6, 4)}), ("transpose", {"perm": (1, 2, 0)}),
                      ("expand_dims", {"axes": (1,)})]:
        check_op_grads(op, [x], attrs)
    check_op_grads("broadcast_to", [bsrc], {"shape": (2, 3, 4)})
    check_op_grads("squeeze", [e], {"axes": (0, 3)})


def test_layout_errors():
    with pytest.raises(ir.ShapeError, match=r"24 elements\) to \(5, 5\)"):
        infer("reshape", [((2, 3, 4), "f32")], {"shape": (5, 5)})
    with pytest.raises(ir.ShapeError, match="permutation"):
        infer("transpose", [((2, 3), "f32")], {"perm": (0, 0)})
    with pytest.raises(ir.ShapeError, match="cannot broadcast"):
        infer("broadcast_to", [((3, 2), "f32")], {"shape": (3, 4)})
    with pytest.raises(ir.ShapeError, match="not 1"):
        infer("squeeze", [((3, 2), "f32")], {"axes": (0,)})


def test_concat():
    parts = [RNG.standard_normal((2, n, 3)) for n in (1, 4, 2)]
    out = run_op("concat", parts, {"axis": 1})
    col = 0
    for p in parts:
        for j in range(p.shape[1]):
            np.testing.assert_array_equal(out[:, col], p[:, j])
            col += 1
    check_op_grads("concat", parts, {"axis": 1})
    with pytest.raises(ir.ShapeError, match="agree off that axis"):
        infer("concat", [((2, 3), "f32"), ((3, 3), "f32")], {"axis": 1})


@pytest.mark.parametrize("starts,stops,steps", [((0, 0), (5, 7), (1, 1)), ((1, 2), (4, 7), (2, 3)),
                                                ((4, 0), (4, 7), (1, 2)), ((0, 6), (5, 7), (3, 5))])
def test_slice_and_its_gradient(starts, stops, steps):
    x = RNG.standard_normal((5, 7))
    out = run_op("slice", [x], {"starts": starts, "stops": stops, "steps": steps})
    rows = list(range(starts[0], stops[0], steps[0]))
    cols = list(range(starts[1], stops[1], steps[1]))
    assert out.shape == (len(rows), len(cols))
    for a, i in enumerate(rows):
        for b, j in enumerate(cols):
            assert out[a, b] == x[i, j]
    check_op_grads("slice", [x], {"starts": starts, "stops": stops, "steps": steps})


def test_pad_and_its_gradient():
    x = RNG.standard_normal((3, 2))
    attrs = {"low": (1, 0), "high": (2, 3), "interior": (1, 2), "value": -1.5}
    out = run_op("pad", [x], attrs)
    assert out.shape == (1 + 3 + 2 + 2, 0 + 2 + 1 * 2 + 3)
    expect = np.full(out.shape, -1.5)
    for i, j in itertools.product(range(3), range(2)):
        expect[1 + 2 * i, 3 * j] = x[i, j]
    np.testing.assert_array_equal(out, expect)
    check_op_grads("pad", [x], attrs)
    with pytest.raises(ir.ShapeError, match=">= 0"):
        infer("pad", [((3,), "f32")], {"low": (-1,), "high": (0,)})


def test_gather_scatter_add():
    table = RNG.standard_normal((5, 3))
    idx = np.array([[4, 0], [4, 2]])
    out = run_op("gather", [table, idx], {"axis": 0})
    for i, j in itertools.product(range(2), range(2)):
        np.testing.assert_array_equal(out[i, j], table[idx[i, j]])
    upd = RNG.standard_normal((2, 2, 3))
    acc = run_op("scatter_add", [idx, upd], {"shape": (5, 3), "axis": 0})
    expect = np.zeros((5, 3))
    for i, j in itertools.product(range(2), range(2)):
        expect[idx[i, j]] += upd[i, j]
    np.testing.assert_allclose(acc, expect)
    check_op_grads("gather", [table, idx], {"axis": 0})
    check_op_grads("gather", [table, np.array([2, 0, 2])], {"axis": 1})
    check_op_grads("scatter_add", [idx, upd], {"shape": (5, 3), "axis": 0}, wrt=[1])


def test_gather_out_of_range_is_an_error_not_garbage():
    with pytest.raises(ir.GraphcError, match="index 5 is out of range 0..4"):
        run_op("gather", [np.zeros((5, 2)), np.array([1, 5])], {"axis": 0})
    with pytest.raises(ir.GraphcError, match="out of range"):
        run_op("gather", [np.zeros((5, 2)), np.array([-1])], {"axis": 0})


# --- matmul -------------------------------------------------------------------------------

def _loop_matmul(a, b):
    m, k = a.shape
    n = b.shape[1]
    return np.array([[math.fsum(a[i, p] * b[p, j] for p in range(k)) for j in range(n)]
                     for i in range(m)])


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((1, 17), (17, 1)), ((2, 3, 4), (4, 5)),
                                   ((2, 1, 3, 4), (5, 4, 2)), ((7, 1), (1, 3))])
def test_matmul_batched_broadcast(sa, sb):
    a, b = RNG.standard_normal(sa), RNG.standard_normal(sb)
    out = run_op("matmul", [a, b])
    batch = np.broadcast_shapes(sa[:-2], sb[:-2])
    assert out.shape == batch + (sa[-2], sb[-1])
    ab = np.broadcast_to(a, batch + sa[-2:])
    bb = np.broadcast_to(b, batch + sb[-2:])
    for idx in itertools.product(*map(range, batch)):
        np.testing.assert_allclose(out[idx], _loop_matmul(ab[idx], bb[idx]), rtol=1e-12)
    check_op_grads("matmul", [a, b])


@pytest.mark.parametrize("ta,tb", [(False, True), (True, False), (True, True)])
def test_matmul_transposed_operands(ta, tb):
    a = RNG.standard_normal((2, 4, 3) if ta else (2, 3, 4))
    b = RNG.standard_normal((5, 4) if tb else (4, 5))
    out = run_op("matmul", [a, b], {"transpose_a": ta, "transpose_b": tb})
    a_ = np.swapaxes(a, -1, -2) if ta else a
    b_ = b.T if tb else b
    for i in range(2):
        np.testing.assert_allclose(out[i], _loop_matmul(a_[i], b_), rtol=1e-12)
    check_op_grads("matmul", [a, b], {"transpose_a": ta, "transpose_b": tb})


def test_matmul_errors():
    with pytest.raises(ir.ShapeError, match="contracts 4 with 5"):
        infer("matmul", [((3, 4), "f32"), ((5, 6), "f32")])
    with pytest.raises(ir.ShapeError, match="rank >= 2"):
        infer("matmul", [((4,), "f32"), ((4, 6), "f32")])
    with pytest.raises(ir.ShapeError, match="batch"):
        infer("matmul", [((2, 3, 4), "f32"), ((3, 4, 6), "f32")])


def test_costs_are_consistent():
    """matmul FLOPs are 2*M*N*K; elementwise bytes count inputs and outputs."""
    mm = ir.get_op("matmul")
    t = [ir.TensorType((8, 3, 4), "f32"), ir.TensorType((4, 5), "f32")]
    out = mm.infer_types(t, mm.check_attrs({}))
    c = mm.estimate_cost(t, out, mm.check_attrs({}))
    assert c.flops == 2 * 8 * 3 * 5 * 4
    add = ir.get_op("add")
    t2 = [ir.TensorType((10,), "f32"), ir.TensorType((10,), "f32")]
    assert add.estimate_cost(t2, add.infer_types(t2, {}), {}).bytes == 3 * 40


def test_every_registry_op_is_covered_by_a_test():
    """A new op without tests fails here: this file, test_ops_nn.py and test_window_ops.py
    cover the registry."""
    import pathlib
    here = pathlib.Path(__file__).parent
    text = "".join((here / f).read_text()
                   for f in ("test_ops_core.py", "test_ops_nn.py", "test_window_ops.py",
                             "test_winograd_ops.py"))
    missing = [name for name in ir.all_ops() if f'"{name}"' not in text]
    assert not missing, f"ops without tests: {missing}"
