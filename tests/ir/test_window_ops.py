"""Tests of the window ops (ir/ops/window.py): "im2col" and "col2im" — shape inference and its
errors, the numpy references against naive loops, the layout contract with conv2d,
adjointness, float64 gradient checks, dtypes, fusion classes and costs."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.backends.reference.interpreter import evaluate
from graphc.ir import AttrError, DTypeError, Fusion, Graph, ShapeError, TensorType, get_op
from graphc.testing import check_op_grads

RNG = np.random.default_rng(2024)


def run(op, *args, **attrs):
    g = Graph("t")
    xs = [g.add_input(f"x{i}", TensorType(a.shape, a.dtype)) for i, a in enumerate(args)]
    node = g.add_node(op, xs, attrs)
    return evaluate(g, dict(zip(xs, args)), node.outputs)[node.outputs[0]]


def infer(op, t, **attrs):
    g = Graph("t")
    return g.add_node(op, [g.add_input("x", t)], attrs).outputs[0].type


def n_out(size, lo, hi, k, stride, dil):
    return len(range(0, size + lo + hi - (dil * (k - 1) + 1) + 1, stride))


def naive_im2col(x, kernel, strides=(1, 1), padding=(0, 0, 0, 0), dilations=(1, 1), value=0.0):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = kernel, strides, padding, dilations
    OH, OW = n_out(H, pt, pb, kh, sh, dh), n_out(W, pl, pr, kw, sw, dw)
    out = np.empty((N, C * kh * kw, OH * OW), x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oh in range(OH):
                        for ow in range(OW):
                            ih, iw = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                            inside = 0 <= ih < H and 0 <= iw < W
                            out[n, c * kh * kw + i * kw + j, oh * OW + ow] = \
                                x[n, c, ih, iw] if inside else value
    return out


def naive_col2im(cols, input_shape, kernel, strides=(1, 1), padding=(0, 0, 0, 0),
                 dilations=(1, 1)):
    N, C, H, W = input_shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = kernel, strides, padding, dilations
    OH, OW = n_out(H, pt, pb, kh, sh, dh), n_out(W, pl, pr, kw, sw, dw)
    out = np.zeros(input_shape)
    for n in range(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    for oh in range(OH):
                        for ow in range(OW):
                            ih, iw = oh * sh - pt + i * dh, ow * sw - pl + j * dw
                            if 0 <= ih < H and 0 <= iw < W:
                                out[n, c, ih, iw] += cols[n, c * kh * kw + i * kw + j,
                                                          oh * OW + ow]
    return out


CASES = {
    "3x3": ((2, 3, 5, 6), {"kernel": (3, 3)}),
    "stride_pad": ((1, 2, 7, 6), {"kernel": (3, 2), "strides": (2, 3), "padding": (1, 2, 0, 1)}),
    "dilated": ((2, 2, 7, 8), {"kernel": (2, 3), "strides": (1, 2), "dilations": (3, 2),
                               "padding": (0, 1, 2, 0)}),
    "remainder": ((1, 1, 6, 7), {"kernel": (2, 2), "strides": (3, 4)}),  # rows no window reads
    "pad_only_windows": ((1, 2, 2, 2), {"kernel": (2, 2), "padding": (3, 3, 2, 2)}),
    "1x1": ((2, 3, 3, 2), {"kernel": (1, 1), "strides": (2, 1)}),
    "whole": ((1, 2, 3, 4), {"kernel": (3, 4)}),
}


def _geom(attrs):
    return {k: attrs.get(k, d) for k, d in (("kernel", None), ("strides", (1, 1)),
                                            ("padding", (0, 0, 0, 0)), ("dilations", (1, 1)))}


# --- shape inference --------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_shapes(case):
    xs, attrs = CASES[case]
    g = _geom(attrs)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = (g["kernel"], g["strides"], g["padding"],
                                                      g["dilations"])
    oh, ow = n_out(xs[2], pt, pb, kh, sh, dh), n_out(xs[3], pl, pr, kw, sw, dw)
    cols = infer("im2col", TensorType(xs, "f32"), **attrs)
    assert cols == TensorType((xs[0], xs[1] * kh * kw, oh * ow), "f32")
    assert infer("col2im", cols, input_shape=xs, **attrs) == TensorType(xs, "f32")


def test_shape_errors():
    t = TensorType((1, 2, 5, 5), "f32")
    with pytest.raises(ShapeError, match="rank 4"):
        infer("im2col", TensorType((2, 5, 5), "f32"), kernel=(2, 2))
    with pytest.raises(DTypeError, match="floating-point"):
        infer("im2col", TensorType((1, 2, 5, 5), "i32"), kernel=(2, 2))
    with pytest.raises(ShapeError, match=r"height extent 7 \(kernel 4, dilation 2\) exceeds "
                                         r"the padded input height 6"):
        infer("im2col", t, kernel=(4, 1), dilations=(2, 1), padding=(1, 0, 0, 0))
    with pytest.raises(AttrError, match=r"kernel=\(0, 2\) must be 2 ints >= 1"):
        infer("im2col", t, kernel=(0, 2))
    with pytest.raises(AttrError, match=r"padding=\(1, 1\) must be 4 ints >= 0"):
        infer("im2col", t, kernel=(2, 2), padding=(1, 1))
    with pytest.raises(AttrError, match="needs attribute kernel"):
        infer("im2col", t)
    with pytest.raises(ShapeError, match=r"columns f32\[1,8,16\] should have shape \(1, 8, 9\) "
                                         r"\(N, C\*KH\*KW = 2\*2\*2, OH\*OW = 3\*3\)"):
        infer("col2im", TensorType((1, 8, 16), "f32"), input_shape=(1, 2, 4, 4), kernel=(2, 2))
    with pytest.raises(AttrError, match="input_shape"):
        infer("col2im", TensorType((1, 8, 9), "f32"), input_shape=(2, 4, 4), kernel=(2, 2))
    with pytest.raises(DTypeError, match="floating-point"):
        infer("col2im", TensorType((1, 8, 9), "i64"), input_shape=(1, 2, 4, 4), kernel=(2, 2))


# --- references -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_references_match_naive_loops(case):
    xs, attrs = CASES[case]
    x = RNG.standard_normal(xs)
    for value in (0.0, -np.inf, 1.5):
        np.testing.assert_array_equal(run("im2col", x, value=value, **attrs),
                                      naive_im2col(x, value=value, **_geom(attrs)))
    cols_t = infer("im2col", TensorType(xs, "f64"), **attrs)
    y = RNG.standard_normal(cols_t.shape)
    np.testing.assert_allclose(run("col2im", y, input_shape=xs, **attrs),
                               naive_col2im(y, xs, **_geom(attrs)), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("case", CASES)
def test_adjoint(case):
    """<im2col(x), y> == <x, col2im(y)>: each is the other's transpose."""
    xs, attrs = CASES[case]
    x = RNG.standard_normal(xs)
    cols = run("im2col", x, **attrs)
    y = RNG.standard_normal(cols.shape)
    lhs, rhs = float(np.sum(cols * y)), float(np.sum(x * run("col2im", y, input_shape=xs,
                                                               **attrs)))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@pytest.mark.parametrize("groups", [1, 2])
def test_conv2d_is_one_gemm_over_im2col(groups):
    """The documented row order: conv2d(x, w) == w.reshape(K, C*KH*KW) @ im2col(x)."""
    x, w = RNG.standard_normal((2, 4, 6, 5)), RNG.standard_normal((6, 4 // groups, 3, 2))
    attrs = {"strides": (2, 1), "padding": (1, 0, 1, 1), "dilations": (1, 2)}
    want = run("conv2d", x, w, groups=groups, **attrs)
    cols = run("im2col", x, kernel=(3, 2), **attrs)
    n, k, oh, ow = want.shape
    cols = cols.reshape(n, groups, -1, oh * ow)
    got = w.reshape(groups, k // groups, -1) @ cols
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-12, atol=1e-12)


def test_col2im_sums_overlaps_and_zeroes_the_unread():
    xs, attrs = (1, 1, 4, 5), {"kernel": (2, 2), "strides": (1, 3)}
    cols = np.ones(infer("im2col", TensorType(xs, "f64"), **attrs).shape)
    out = run("col2im", cols, input_shape=xs, **attrs)
    # Rows: windows start at 0, 1, 2 (kernel 2): counts 1, 2, 2, 1. Columns: starts 0, 3.
    np.testing.assert_array_equal(out[0, 0], np.outer([1, 2, 2, 1], [1, 1, 0, 1, 1]))


def test_dtypes_are_preserved_and_col2im_rounds_once():
    xs, attrs = (1, 2, 5, 5), {"kernel": (3, 3), "padding": (1, 1, 1, 1)}
    x = RNG.standard_normal(xs)
    for dt in (np.float16, np.float32):
        cols = run("im2col", x.astype(dt), value=-np.inf, **attrs)
        assert cols.dtype == dt
        np.testing.assert_array_equal(cols, naive_im2col(x.astype(dt), value=-np.inf,
                                                         **_geom(attrs)))
        y = RNG.standard_normal(cols.shape).astype(dt)
        got = run("col2im", y, input_shape=xs, **attrs)
        assert got.dtype == dt
        want = naive_col2im(y.astype(np.float64), xs, **_geom(attrs)).astype(dt)
        np.testing.assert_array_equal(got, want)  # float64 sums, one rounding


# --- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["stride_pad", "dilated", "remainder", "pad_only_windows"])
def test_gradients(case):
    xs, attrs = CASES[case]
    cols_shape = infer("im2col", TensorType(xs, "f64"), **attrs).shape
    check_op_grads("im2col", [RNG.standard_normal(xs)], dict(value=-2.0, **attrs))
    check_op_grads("col2im", [RNG.standard_normal(cols_shape)], dict(input_shape=xs, **attrs))


def test_vjps_are_each_other():
    g = Graph("t")
    x = g.add_input("x", TensorType((1, 2, 5, 5), "f32"))
    node = g.add_node("im2col", [x], {"kernel": (2, 2), "strides": (2, 1), "value": -1.0})
    from graphc.ir import Emitter
    b = Emitter(g)
    (gx,) = get_op("im2col").vjp(b, node, node.outputs[0])
    assert gx.producer.op == "col2im" and gx.type == x.type
    assert gx.producer.attrs["input_shape"] == (1, 2, 5, 5)
    (gc,) = get_op("col2im").vjp(b, gx.producer, gx)
    assert gc.producer.op == "im2col" and gc.producer.attrs["value"] == 0.0


# --- registry metadata -------------------------------------------------------------------------

def test_fusion_classes_costs_and_defaults():
    assert get_op("im2col").fusion is Fusion.LAYOUT
    assert get_op("col2im").fusion is Fusion.OPAQUE
    assert get_op("im2col").decompose is None and get_op("col2im").decompose is None
    t = TensorType((2, 3, 6, 6), "f32")
    op = get_op("im2col")
    a = op.check_attrs({"kernel": (3, 3)})
    assert a == {"kernel": (3, 3), "strides": (1, 1), "padding": (0, 0, 0, 0),
                 "dilations": (1, 1), "value": 0.0}
    (cols,) = op.infer_types([t], a)
    c = op.estimate_cost([t], [cols], a)
    assert c.flops == 0 and c.bytes == t.nbytes + cols.nbytes
    op2 = get_op("col2im")
    a2 = op2.check_attrs({"kernel": (3, 3), "input_shape": (2, 3, 6, 6)})
    c2 = op2.estimate_cost([cols], [t], a2)
    assert c2.flops == cols.size and c2.bytes == t.nbytes + cols.nbytes


def test_empty_batch():
    x = np.zeros((0, 2, 4, 4), np.float32)
    cols = run("im2col", x, kernel=(2, 2))
    assert cols.shape == (0, 8, 9)
    assert run("col2im", cols, input_shape=(0, 2, 4, 4), kernel=(2, 2)).shape == x.shape


@pytest.mark.parametrize("case", CASES)
def test_llvm_im2col_matches_naive_loops(case):
    # The llvm lowering copies each tap's in-image positions without bounds checks and fills
    # the rest first: every geometry (padding-only windows, rows no window reads) and pad
    # value must come out as the naive loops give.
    from graphc.backends import available_backends
    import graphc as gc
    if "llvm" not in available_backends():
        pytest.skip("llvm backend missing")
    xs, attrs = CASES[case]
    x = RNG.standard_normal(xs).astype(np.float32)
    g = Graph("im2col")
    xv = g.add_input("x", TensorType(xs, "f32"))
    values = (0.0, -np.inf, 1.5)
    outs = [g.add_node("im2col", [xv], dict(attrs, value=v)).outputs[0] for v in values]
    got = gc.compile(g, outs, backend="llvm")(x=x)
    for v, y in zip(values, got):
        np.testing.assert_array_equal(y, naive_im2col(x, value=v, **_geom(attrs)).astype(np.float32))
