"""Tests of the nn ops (ir/ops/conv.py, pool.py, softmax.py, norm.py): shape inference and
its errors, the numpy reference
against naive loop implementations written here, float64 gradient checks of every VJP
(double-backward included), dtype genericity and costs."""
from __future__ import annotations

import math
import re
import statistics

import numpy as np
import pytest

from graphc.backends.reference.interpreter import evaluate
from graphc.ir import (AttrError, DTypeError, Fusion, GraphcError, Graph, ShapeError,
                       TensorType, get_op)
from graphc.passes.autodiff import grad
from graphc.testing import check_grads, check_op_grads

RNG = np.random.default_rng(1234)
# tests/conftest.py records every check_grads call and reports the largest relative error.


# --- helpers ------------------------------------------------------------------------------

def run(op, *args, **attrs):
    """Evaluate one node with the reference interpreter (which checks shape and dtype)."""
    g = Graph("t")
    xs = [g.add_input(f"x{i}", TensorType(a.shape, a.dtype)) for i, a in enumerate(args)]
    node = g.add_node(op, xs, attrs)
    out = evaluate(g, dict(zip(xs, args)), node.outputs)
    res = [out[v] for v in node.outputs]
    return res[0] if len(res) == 1 else tuple(res)


def infer(op, *types, **attrs):
    g = Graph("t")
    xs = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    outs = g.add_node(op, xs, attrs).outputs
    shapes = [v.shape for v in outs]
    return shapes[0] if len(shapes) == 1 else shapes


def T(*shape, dt="f32"):
    return TensorType(tuple(shape), dt)


def rnd(*shape):
    return RNG.standard_normal(shape)


def distinct(*shape, scale=0.1):
    """Values that are pairwise at least `scale` apart: no ties, stable under finite diffs."""
    return (RNG.permutation(math.prod(shape)).reshape(shape) - math.prod(shape) / 2) * scale


def n_out(size, lo, hi, k, stride, dil=1):
    """Output length by enumerating window starts (independent of the closed formula)."""
    span = dil * (k - 1) + 1
    return len(range(0, size + lo + hi - span + 1, stride))


# --- naive implementations (explicit loops over output positions) --------------------------

def naive_conv2d(x, w, strides=(1, 1), padding=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = strides, padding, dilations
    OH, OW = n_out(H, pt, pb, KH, sh, dh), n_out(W, pl, pr, KW, sw, dw)
    Kg = K // groups
    out = np.zeros((N, K, OH, OW))
    for n in range(N):
        for k in range(K):
            c0 = (k // Kg) * Cg
            for oh in range(OH):
                for ow in range(OW):
                    acc = 0.0
                    for i in range(KH):
                        ih = oh * sh - pt + i * dh
                        if not 0 <= ih < H:
                            continue
                        for j in range(KW):
                            iw = ow * sw - pl + j * dw
                            if 0 <= iw < W:
                                acc += float(np.dot(x[n, c0:c0 + Cg, ih, iw], w[k, :, i, j]))
                    out[n, k, oh, ow] = acc
    return out


def naive_conv2d_grads(x_shape, w, g, x=None, strides=(1, 1), padding=(0, 0, 0, 0),
                       dilations=(1, 1), groups=1):
    """Scatter every output gradient back along the definition: returns (dx, dw or None)."""
    N, C, H, W = x_shape
    K, Cg, KH, KW = w.shape
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = strides, padding, dilations
    Kg = K // groups
    dx = np.zeros(x_shape)
    dwt = np.zeros(w.shape)
    for n in range(N):
        for k in range(K):
            c0 = (k // Kg) * Cg
            for oh in range(g.shape[2]):
                for ow in range(g.shape[3]):
                    for i in range(KH):
                        ih = oh * sh - pt + i * dh
                        for j in range(KW):
                            iw = ow * sw - pl + j * dw
                            if 0 <= ih < H and 0 <= iw < W:
                                dx[n, c0:c0 + Cg, ih, iw] += g[n, k, oh, ow] * w[k, :, i, j]
                                if x is not None:
                                    dwt[k, :, i, j] += g[n, k, oh, ow] * x[n, c0:c0 + Cg, ih, iw]
    return dx, (dwt if x is not None else None)


def naive_max_pool(x, kernel, strides, padding=(0, 0, 0, 0)):
    """(values, positions of the first maximum in each window) — PyTorch's scan order."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = kernel, strides, padding
    OH, OW = n_out(H, pt, pb, kh, sh), n_out(W, pl, pr, kw, sw)
    out = np.zeros((N, C, OH, OW))
    pos = {}
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, where = None, None
                    for i in range(kh):
                        for j in range(kw):
                            ih, iw = oh * sh - pt + i, ow * sw - pl + j
                            if 0 <= ih < H and 0 <= iw < W:
                                v = x[n, c, ih, iw]
                                if best is None or v > best:
                                    best, where = v, (ih, iw)
                    out[n, c, oh, ow] = best
                    pos[n, c, oh, ow] = where
    return out, pos


def naive_max_pool_grad(x, g, kernel, strides, padding=(0, 0, 0, 0)):
    _, pos = naive_max_pool(x, kernel, strides, padding)
    dx = np.zeros(x.shape)
    for (n, c, oh, ow), (ih, iw) in pos.items():
        dx[n, c, ih, iw] += g[n, c, oh, ow]
    return dx


def naive_avg_pool(x, kernel, strides, padding=(0, 0, 0, 0), count_include_pad=True):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = kernel, strides, padding
    OH, OW = n_out(H, pt, pb, kh, sh), n_out(W, pl, pr, kw, sw)
    out = np.zeros((N, C, OH, OW))
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    s, cnt = 0.0, 0
                    for i in range(kh):
                        for j in range(kw):
                            ih, iw = oh * sh - pt + i, ow * sw - pl + j
                            if 0 <= ih < H and 0 <= iw < W:
                                s += x[n, c, ih, iw]
                                cnt += 1
                    out[n, c, oh, ow] = s / (kh * kw if count_include_pad else cnt)
    return out


def naive_avg_pool_grad(x_shape, g, kernel, strides, padding=(0, 0, 0, 0),
                        count_include_pad=True):
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = kernel, strides, padding
    dx = np.zeros(x_shape)
    for n in range(N):
        for c in range(C):
            for oh in range(g.shape[2]):
                for ow in range(g.shape[3]):
                    cells = [(oh * sh - pt + i, ow * sw - pl + j)
                             for i in range(kh) for j in range(kw)]
                    cells = [(a, b) for a, b in cells if 0 <= a < H and 0 <= b < W]
                    div = kh * kw if count_include_pad else len(cells)
                    for a, b in cells:
                        dx[n, c, a, b] += g[n, c, oh, ow] / div
    return dx


# --- conv2d: shape inference ----------------------------------------------------------------

CONV_SHAPES = [
    # x, w, attrs, expected output
    ((1, 3, 7, 7), (8, 3, 3, 3), {}, (1, 8, 5, 5)),
    ((2, 3, 7, 7), (4, 3, 3, 3), {"strides": (2, 2)}, (2, 4, 3, 3)),            # (7-3)//2+1
    ((1, 3, 7, 7), (4, 3, 3, 3), {"padding": (1, 0, 2, 1)}, (1, 4, 6, 8)),      # 8-3+1, 10-3+1
    ((1, 3, 7, 7), (4, 3, 3, 3), {"dilations": (2, 2)}, (1, 4, 3, 3)),          # span 5
    ((1, 4, 5, 5), (6, 2, 3, 3), {"groups": 2}, (1, 6, 3, 3)),
    ((2, 3, 5, 5), (3, 1, 3, 3), {"groups": 3, "padding": (1, 1, 1, 1)}, (2, 3, 5, 5)),  # dw
    ((1, 2, 3, 3), (4, 1, 1, 1), {"groups": 2}, (1, 4, 3, 3)),   # depthwise, multiplier 2
    ((1, 3, 1, 1), (5, 3, 1, 1), {}, (1, 5, 1, 1)),                              # 1x1 on 1x1
    ((1, 1, 7, 1), (1, 1, 3, 1), {"strides": (2, 3)}, (1, 1, 3, 1)),
    ((3, 2, 6, 5), (4, 2, 3, 2), {"strides": (2, 1), "dilations": (1, 2)}, (3, 4, 2, 3)),
    ((1, 1, 1, 1), (1, 1, 3, 3), {"padding": (1, 1, 1, 1)}, (1, 1, 1, 1)),
    ((0, 2, 4, 4), (2, 2, 3, 3), {}, (0, 2, 2, 2)),                             # empty batch
]


@pytest.mark.parametrize("xs,ws,attrs,want", CONV_SHAPES)
def test_conv2d_shapes(xs, ws, attrs, want):
    assert infer("conv2d", T(*xs), T(*ws), **attrs) == want
    full = {"strides": (1, 1), "padding": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1,
            **attrs}
    # the gradient ops accept exactly the conv's geometry and give the operand shapes back
    assert infer("conv2d_grad_input", T(*want), T(*ws), input_shape=xs, **full) == xs
    assert infer("conv2d_grad_weight", T(*xs), T(*want), weight_shape=ws, **full) == ws


CONV_ERRORS = [
    ((1, 3, 7, 7), (8, 4, 3, 3), {}, ShapeError,
     re.escape("conv2d: input has 3 channels but weight (8, 4, 3, 3) expects 4 (groups=1)")),
    ((1, 4, 5, 5), (6, 4, 3, 3), {"groups": 2}, ShapeError,
     re.escape("input has 4 channels but weight (6, 4, 3, 3) expects 8 (groups=2)")),
    ((1, 3, 5, 5), (4, 1, 3, 3), {"groups": 2}, ShapeError,
     re.escape("groups=2 does not divide the 3 channels of input (1, 3, 5, 5)")),
    ((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, ShapeError,
     re.escape("groups=2 does not divide the 3 output channels of weight (3, 2, 3, 3)")),
    ((1, 1, 2, 2), (1, 1, 3, 3), {}, ShapeError, "exceeds the padded input height 2"),
    ((1, 1, 4, 4), (1, 1, 3, 3), {"dilations": (2, 2)}, ShapeError,
     r"extent 5 \(kernel 3, dilation 2\) exceeds the padded input height 4 .*\(1, 1, 4, 4\)"),
    ((1, 3, 7), (8, 3, 3, 3), {}, ShapeError, r"rank 4 \(N, C, H, W\), got \(1, 3, 7\)"),
    ((1, 3, 7, 7), (8, 3, 3), {}, ShapeError, r"weight must have rank 4.*\(8, 3, 3\)"),
    ((1, 3, 7, 7), (8, 3, 3, 3), {"strides": (0, 1)}, AttrError, r"strides=\(0, 1\)"),
    ((1, 3, 7, 7), (8, 3, 3, 3), {"strides": (2,)}, AttrError, "strides"),
    ((1, 3, 7, 7), (8, 3, 3, 3), {"padding": (1, 1)}, AttrError, "top, bottom, left, right"),
    ((1, 3, 7, 7), (8, 3, 3, 3), {"groups": 0}, AttrError, "groups=0"),
]


@pytest.mark.parametrize("xs,ws,attrs,exc,msg", CONV_ERRORS)
def test_conv2d_shape_errors(xs, ws, attrs, exc, msg):
    with pytest.raises(exc, match=msg):
        infer("conv2d", T(*xs), T(*ws), **attrs)


def test_conv2d_dtype_errors():
    with pytest.raises(DTypeError, match="different dtypes"):
        infer("conv2d", T(1, 3, 5, 5), T(4, 3, 3, 3, dt="f64"))
    with pytest.raises(DTypeError, match="floating-point"):
        infer("conv2d", T(1, 3, 5, 5, dt="i32"), T(4, 3, 3, 3, dt="i32"))


def test_conv2d_grad_shape_errors():
    a = dict(strides=(1, 1), padding=(0, 0, 0, 0), dilations=(1, 1), groups=1)
    with pytest.raises(ShapeError, match=r"gradient f32\[1,4,4,4\] should have shape "
                                         r"\(1, 4, 3, 3\)"):
        infer("conv2d_grad_input", T(1, 4, 4, 4), T(4, 3, 3, 3), input_shape=(1, 3, 5, 5), **a)
    with pytest.raises(ShapeError, match=r"should have shape \(1, 4, 3, 3\).*weight "
                                         r"\(4, 3, 3, 3\)"):
        infer("conv2d_grad_weight", T(1, 3, 5, 5), T(1, 4, 4, 4), weight_shape=(4, 3, 3, 3), **a)
    with pytest.raises(AttrError, match="input_shape"):
        infer("conv2d_grad_input", T(1, 4, 3, 3), T(4, 3, 3, 3), input_shape=(3, 5, 5), **a)


# --- conv2d: reference against the naive loops ----------------------------------------------

CONV_CASES = {
    "plain": ((2, 3, 5, 5), (4, 3, 3, 3), {}),
    "stride2_asympad": ((2, 2, 6, 7), (3, 2, 3, 3),
                        {"strides": (2, 2), "padding": (1, 0, 2, 1)}),
    "dilation2": ((1, 2, 7, 6), (2, 2, 3, 2), {"dilations": (2, 2), "padding": (1, 1, 0, 2)}),
    "groups2": ((2, 4, 5, 5), (6, 2, 3, 3), {"groups": 2, "strides": (1, 2)}),
    "depthwise": ((1, 3, 5, 6), (3, 1, 3, 3), {"groups": 3, "padding": (1, 1, 1, 1)}),
    "1x1_stride2": ((2, 3, 5, 5), (4, 3, 1, 1), {"strides": (2, 2)}),
    # H=6, kernel 3, stride 2: windows cover rows 0..4, row 5 is read by none (remainder)
    "remainder": ((1, 2, 6, 6), (2, 2, 3, 3), {"strides": (2, 3)}),
    "tiny": ((1, 1, 1, 1), (2, 1, 1, 1), {}),
}


def _full_conv(attrs):
    return {"strides": (1, 1), "padding": (0, 0, 0, 0), "dilations": (1, 1), "groups": 1,
            **attrs}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_reference_matches_naive(case):
    xs, ws, attrs = CONV_CASES[case]
    x, w = rnd(*xs), rnd(*ws)
    np.testing.assert_allclose(run("conv2d", x, w, **attrs), naive_conv2d(x, w, **attrs),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_grad_refs_match_naive_and_adjoint(case):
    xs, ws, attrs = CONV_CASES[case]
    a = _full_conv(attrs)
    x, w = rnd(*xs), rnd(*ws)
    y = run("conv2d", x, w, **attrs)
    g = rnd(*y.shape)
    dx = run("conv2d_grad_input", g, w, input_shape=xs, **a)
    dw = run("conv2d_grad_weight", x, g, weight_shape=ws, **a)
    ndx, ndw = naive_conv2d_grads(xs, w, g, x=x, **attrs)
    np.testing.assert_allclose(dx, ndx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, ndw, rtol=1e-12, atol=1e-12)
    # adjoint identities: <conv(x, w), g> = <x, dx> = <w, dw>
    lhs = float(np.sum(y * g))
    assert math.isclose(lhs, float(np.sum(x * dx)), rel_tol=1e-10, abs_tol=1e-10)
    assert math.isclose(lhs, float(np.sum(w * dw)), rel_tol=1e-10, abs_tol=1e-10)
    if case == "remainder":
        assert not dx[:, :, 5, :].any() and dx[:, :, 4, :].any()


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradients(case):
    xs, ws, attrs = CONV_CASES[case]
    check_op_grads("conv2d", [rnd(*xs), rnd(*ws)], attrs)


@pytest.mark.parametrize("case", ["stride2_asympad", "dilation2", "groups2", "depthwise",
                                  "remainder"])
def test_conv2d_grad_ops_gradients(case):
    """Each gradient op's own VJP (built from the trio) against finite differences."""
    xs, ws, attrs = CONV_CASES[case]
    a = _full_conv(attrs)
    ys = infer("conv2d", T(*xs), T(*ws), **attrs)
    check_op_grads("conv2d_grad_input", [rnd(*ys), rnd(*ws)], dict(input_shape=xs, **a))
    check_op_grads("conv2d_grad_weight", [rnd(*xs), rnd(*ys)], dict(weight_shape=ws, **a))


def test_conv2d_double_backward():
    """grad of a function of the input gradient: runs the gradient ops' VJPs via autodiff."""
    xs, ws, attrs = CONV_CASES["groups2"]

    def build(b, v):
        x, w = v
        y = b.conv2d(x, w, **attrs)
        loss = b.sum(b.mul(b.tanh(y), y), axes=(0, 1, 2, 3), keepdims=False)
        gx, gw = grad(b.graph, loss, [x, w])
        return b.add(b.sum(b.mul(gx, gx), axes=(0, 1, 2, 3), keepdims=False),
                     b.sum(b.mul(gw, gw), axes=(0, 1, 2, 3), keepdims=False))

    check_grads(build, [0.5 * rnd(*xs), 0.5 * rnd(*ws)])


def test_conv2d_cost():
    xs, ws, attrs = (2, 4, 7, 7), (6, 2, 3, 3), {"groups": 2, "strides": (2, 2)}
    t_x, t_w = T(*xs), T(*ws)
    t_y = T(*infer("conv2d", t_x, t_w, **attrs))  # (2, 6, 3, 3)
    op = get_op("conv2d")
    cost = op.estimate_cost([t_x, t_w], [t_y], op.check_attrs(attrs))
    assert cost.flops == 2 * 2 * 6 * 3 * 3 * 2 * 3 * 3
    assert cost.bytes == 4 * (2 * 4 * 7 * 7 + 6 * 2 * 3 * 3 + 2 * 6 * 3 * 3)
    assert op.fusion is Fusion.CONTRACTION


# --- pooling ---------------------------------------------------------------------------------

POOL_SHAPES = [
    ((1, 1, 7, 7), {"kernel": (3, 3), "strides": (2, 2)}, (1, 1, 3, 3)),
    ((2, 3, 3, 5), {"kernel": (2, 2), "strides": (1, 1), "padding": (1, 0, 0, 1)}, (2, 3, 3, 5)),
    ((1, 2, 1, 1), {"kernel": (1, 1), "strides": (1, 1)}, (1, 2, 1, 1)),
    ((1, 1, 7, 5), {"kernel": (2, 3), "strides": (3, 2)}, (1, 1, 2, 2)),
    ((1, 1, 1, 1), {"kernel": (3, 3), "strides": (1, 1), "padding": (1, 1, 1, 1)}, (1, 1, 1, 1)),
    ((2, 1, 6, 6), {"kernel": (3, 3), "strides": (2, 2)}, (2, 1, 2, 2)),  # row/col 5 unread
]


@pytest.mark.parametrize("xs,attrs,want", POOL_SHAPES)
def test_pool_shapes(xs, attrs, want):
    assert infer("max_pool2d", T(*xs), **attrs) == want
    assert infer("avg_pool2d", T(*xs), **attrs) == want
    assert infer("max_pool2d_grad", T(*xs), T(*want), **attrs) == xs
    assert infer("max_pool2d_select", T(*xs), T(*xs), **attrs) == want
    assert infer("avg_pool2d_grad", T(*want), input_shape=xs, **attrs) == xs


POOL_ERRORS = [
    ((1, 1, 2, 2), {"kernel": (3, 3), "strides": (1, 1)}, ShapeError,
     r"extent 3 \(kernel 3\) exceeds the padded input height 2 .*\(1, 1, 2, 2\)"),
    ((1, 1, 4, 4), {"kernel": (2, 2), "strides": (2, 2), "padding": (2, 0, 0, 0)}, ShapeError,
     r"window of output row 0 lies entirely in the padding of input \(1, 1, 4, 4\)"),
    ((1, 1, 3, 3), {"kernel": (1, 1), "strides": (1, 1), "padding": (0, 0, 0, 2)}, ShapeError,
     "window of output column 4 lies entirely in the padding"),
    ((1, 4, 4), {"kernel": (2, 2), "strides": (2, 2)}, ShapeError, r"rank 4.*\(1, 4, 4\)"),
    ((1, 1, 4, 4), {"kernel": (0, 2), "strides": (2, 2)}, AttrError, r"kernel=\(0, 2\)"),
    ((1, 1, 4, 4), {"kernel": (2, 2), "strides": (2, 2), "padding": (1, 1, 1, 1, 1)},
     AttrError, "padding"),
]


@pytest.mark.parametrize("xs,attrs,exc,msg", POOL_ERRORS)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_shape_errors(op, xs, attrs, exc, msg):
    with pytest.raises(exc, match=msg):
        infer(op, T(*xs), **attrs)


def test_pool_misc_errors():
    with pytest.raises(AttrError, match="needs attribute strides"):
        infer("max_pool2d", T(1, 1, 4, 4), kernel=(2, 2))
    with pytest.raises(DTypeError):
        infer("avg_pool2d", T(1, 1, 4, 4, dt="i64"), kernel=(2, 2), strides=(2, 2))
    with pytest.raises(ShapeError, match=r"gradient f32\[1,1,3,3\] should have shape "
                                         r"\(1, 1, 2, 2\)"):
        infer("max_pool2d_grad", T(1, 1, 4, 4), T(1, 1, 3, 3), kernel=(2, 2), strides=(2, 2))
    with pytest.raises(ShapeError, match=r"should have shape \(1, 1, 2, 2\).*\(1, 1, 4, 4\)"):
        infer("avg_pool2d_grad", T(1, 1, 3, 3), input_shape=(1, 1, 4, 4), kernel=(2, 2),
              strides=(2, 2))
    with pytest.raises(ShapeError, match="must have the shape of the pooled input"):
        infer("max_pool2d_select", T(1, 1, 4, 4), T(1, 1, 4, 3), kernel=(2, 2), strides=(2, 2))
    assert get_op("avg_pool2d").check_attrs({"kernel": (2, 2), "strides": (1, 1)}) == {
        "kernel": (2, 2), "strides": (1, 1), "padding": (0, 0, 0, 0), "count_include_pad": True}


POOL_CASES = {
    "k3s2": ((2, 2, 7, 7), {"kernel": (3, 3), "strides": (2, 2)}),
    "asympad": ((1, 2, 5, 6), {"kernel": (3, 2), "strides": (2, 1), "padding": (1, 1, 0, 1)}),
    "overlap_pad": ((1, 1, 4, 5), {"kernel": (3, 3), "strides": (1, 1),
                                   "padding": (2, 0, 1, 2)}),
    "1x1": ((1, 2, 3, 1), {"kernel": (1, 1), "strides": (2, 1)}),
    "remainder": ((1, 1, 6, 6), {"kernel": (3, 2), "strides": (2, 3)}),
}


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool2d_reference_matches_naive(case):
    xs, attrs = POOL_CASES[case]
    x = distinct(*xs)
    want, _ = naive_max_pool(x, **attrs)
    np.testing.assert_array_equal(run("max_pool2d", x, **attrs), want)
    g = rnd(*want.shape)
    np.testing.assert_allclose(run("max_pool2d_grad", x, g, **attrs),
                               naive_max_pool_grad(x, g, **attrs), rtol=1e-14, atol=0)
    v = rnd(*xs)
    _, pos = naive_max_pool(x, **attrs)
    sel = np.zeros(want.shape)
    for (n, c, oh, ow), (ih, iw) in pos.items():
        sel[n, c, oh, ow] = v[n, c, ih, iw]
    np.testing.assert_array_equal(run("max_pool2d_select", x, v, **attrs), sel)


@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool2d_reference_matches_naive(case, cip):
    xs, attrs = POOL_CASES[case]
    x = rnd(*xs)
    want = naive_avg_pool(x, count_include_pad=cip, **attrs)
    np.testing.assert_allclose(run("avg_pool2d", x, count_include_pad=cip, **attrs), want,
                               rtol=1e-12, atol=1e-12)
    g = rnd(*want.shape)
    np.testing.assert_allclose(
        run("avg_pool2d_grad", g, input_shape=xs, count_include_pad=cip, **attrs),
        naive_avg_pool_grad(xs, g, count_include_pad=cip, **attrs), rtol=1e-12, atol=1e-12)


def test_max_pool2d_ties_go_to_first_maximum():
    # Windows (2x2, stride 1) with tied maxima: the first in row-major window order wins.
    x = np.array([[1.0, 3.0, 3.0],
                  [3.0, 2.0, 0.0],
                  [1.0, 3.0, 3.0]]).reshape(1, 1, 3, 3)
    attrs = {"kernel": (2, 2), "strides": (1, 1)}
    g = np.array([1.0, 10.0, 100.0, 1000.0]).reshape(1, 1, 2, 2)
    dx = run("max_pool2d_grad", x, g, **attrs)
    np.testing.assert_array_equal(dx, naive_max_pool_grad(x, g, **attrs))
    assert dx[0, 0, 0, 2] == 0.0  # the later 3 of window (0, 1) gets nothing
    assert dx.sum() == g.sum()    # every window routes its whole gradient to one element
    v = np.arange(9.0).reshape(1, 1, 3, 3)
    sel = run("max_pool2d_select", x, v, **attrs)
    _, pos = naive_max_pool(x, **attrs)
    np.testing.assert_array_equal(sel.ravel(), [v[0, 0, ih, iw] for ih, iw in pos.values()])


def test_max_pool2d_padding_never_wins():
    # All inputs -inf, padded with -inf: each window's gradient still lands on real input.
    x = np.full((1, 1, 2, 2), -np.inf)
    attrs = {"kernel": (2, 2), "strides": (1, 1), "padding": (1, 0, 1, 0)}
    g = np.array([1.0, 2.0, 4.0, 8.0]).reshape(1, 1, 2, 2)
    dx = run("max_pool2d_grad", x, g, **attrs)
    np.testing.assert_array_equal(dx, naive_max_pool_grad(x, g, **attrs))
    assert dx.sum() == g.sum()
    assert np.all(run("max_pool2d", x, **attrs) == -np.inf)


def test_max_pool2d_nan_propagates():
    x = distinct(1, 1, 4, 4)
    x[0, 0, 1, 2] = np.nan
    y = run("max_pool2d", x, kernel=(2, 2), strides=(2, 2))
    assert np.isnan(y[0, 0, 0, 1]) and not np.isnan(np.delete(y.ravel(), 1)).any()
    dx = run("max_pool2d_grad", x, np.ones((1, 1, 2, 2)), kernel=(2, 2), strides=(2, 2))
    assert dx[0, 0, 1, 2] == 1.0  # the NaN is that window's maximum


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool_gradients(case):
    xs, attrs = POOL_CASES[case]
    ys = infer("max_pool2d", T(*xs), **attrs)
    x = distinct(*xs)  # no ties: finite differences never cross an argmax switch
    check_op_grads("max_pool2d", [x], attrs)
    check_op_grads("max_pool2d_grad", [x, rnd(*ys)], attrs)     # zero w.r.t. x, linear in g
    check_op_grads("max_pool2d_select", [x, rnd(*xs)], attrs)
    for cip in (True, False):
        a = dict(count_include_pad=cip, **attrs)
        check_op_grads("avg_pool2d", [rnd(*xs)], a)
        check_op_grads("avg_pool2d_grad", [rnd(*ys)], dict(input_shape=xs, **a))


def test_max_pool2d_double_backward():
    attrs = POOL_CASES["asympad"][1]

    def build(b, v):
        (x,) = v
        y = b.max_pool2d(x, **attrs)
        loss = b.sum(b.mul(y, b.mul(y, y)), axes=(0, 1, 2, 3), keepdims=False)
        (gx,) = grad(b.graph, loss, [x])
        return gx  # = max_pool2d_grad(x, 3 y^2): second derivative through g and y

    check_grads(build, [distinct(*POOL_CASES["asympad"][0])])


def test_pool_costs_and_fusion():
    t_x, attrs = T(1, 2, 7, 7), {"kernel": (3, 3), "strides": (2, 2)}
    t_y = T(*infer("max_pool2d", t_x, **attrs))  # (1, 2, 3, 3)
    for name, extra in (("max_pool2d", 0), ("avg_pool2d", 1)):
        op = get_op(name)
        cost = op.estimate_cost([t_x], [t_y], op.check_attrs(attrs))
        assert cost.flops == 2 * 3 * 3 * (9 + extra)
        assert cost.bytes == 4 * (2 * 7 * 7 + 2 * 3 * 3)
        assert op.fusion is Fusion.OPAQUE
    assert get_op("max_pool2d_grad").nondiff_inputs == (0,)


# --- softmax / log_softmax ------------------------------------------------------------------

@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_shapes_and_errors(op):
    assert infer(op, T(3, 4), axis=1) == (3, 4)
    assert infer(op, T(2, 3, 5), axis=0) == (2, 3, 5)
    assert infer(op, T(7), axis=0) == (7,)
    with pytest.raises(ShapeError, match=r"axis 2 is out of range for f32\[3,4\]"):
        infer(op, T(3, 4), axis=2)
    with pytest.raises(ShapeError, match="canonical"):
        infer(op, T(3, 4), axis=-1)
    with pytest.raises(DTypeError, match="floating-point"):
        infer(op, T(3, 4, dt="i32"), axis=1)
    with pytest.raises(AttrError, match="needs attribute axis"):
        infer(op, T(3, 4))
    assert get_op(op).fusion is Fusion.REDUCTION


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_reference(axis):
    x = rnd(2, 3, 4)
    e = np.exp(x)
    direct = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(run("softmax", x, axis=axis), direct, rtol=1e-13)
    np.testing.assert_allclose(run("log_softmax", x, axis=axis), np.log(direct), rtol=1e-12,
                               atol=1e-13)
    # stability: a huge shift along the axis changes nothing and overflows nothing
    big = x + 1000.0
    np.testing.assert_allclose(run("softmax", big, axis=axis), direct, rtol=1e-10)
    np.testing.assert_allclose(run("log_softmax", big, axis=axis), np.log(direct), rtol=1e-10,
                               atol=1e-10)


def test_softmax_extreme_and_empty():
    x = np.array([[1000.0, 0.0, -1000.0]])
    y = run("softmax", x, axis=1)
    assert np.isfinite(y).all() and y[0, 0] == 1.0
    ly = run("log_softmax", x, axis=1)
    assert ly[0, 0] == 0.0 and ly[0, 2] == -2000.0
    assert run("softmax", np.zeros((0, 3)), axis=1).shape == (0, 3)
    assert run("log_softmax", np.zeros((2, 0)), axis=1).shape == (2, 0)


@pytest.mark.parametrize("axis", [0, 2])
def test_softmax_gradients(axis):
    check_op_grads("softmax", [rnd(3, 4, 2)], {"axis": axis})
    check_op_grads("log_softmax", [rnd(3, 4, 2)], {"axis": axis})


# --- one_hot ----------------------------------------------------------------------------------

def test_one_hot_shapes_and_reference():
    assert infer("one_hot", T(2, 3, dt="i32"), depth=5) == (2, 3, 5)
    assert infer("one_hot", T(dt="i64"), depth=4) == (4,)
    labels = np.array([[0, 4, 2], [1, 1, 3]], dtype=np.int32)
    for dt in ("f16", "f32", "f64", "i32"):
        out = run("one_hot", labels, depth=5, dtype=dt)
        want = np.zeros((2, 3, 5))
        for i in range(2):
            for j in range(3):
                want[i, j, labels[i, j]] = 1
        assert out.dtype == TensorType((), dt).dtype.np_dtype
        np.testing.assert_array_equal(out, want)
    assert run("one_hot", labels, depth=5).dtype == np.float32  # default dtype f32
    op = get_op("one_hot")
    assert not op.differentiable and op.fusion is Fusion.OPAQUE


def test_one_hot_errors():
    with pytest.raises(DTypeError, match="integer label tensor"):
        infer("one_hot", T(3), depth=4)
    with pytest.raises(AttrError, match="depth=-1"):
        infer("one_hot", T(3, dt="i32"), depth=-1)
    with pytest.raises(GraphcError, match=r"label 5 at index \(1,\) is out of range: labels "
                                          r"must lie in \[0, 5\) for depth 5"):
        run("one_hot", np.array([0, 5], dtype=np.int64), depth=5)
    with pytest.raises(GraphcError, match=r"label -1 at index \(0, 1\)"):
        run("one_hot", np.array([[0, -1]], dtype=np.int32), depth=5)


# --- softmax_cross_entropy ----------------------------------------------------------------

def naive_ce(logits, labels):
    out = []
    for row, lab in zip(logits, labels):
        z = sum(math.exp(v) for v in row)
        out.append(-math.log(math.exp(row[lab]) / z))
    return np.array(out)


def test_ce_shapes_and_errors():
    lab = T(4, dt="i32")
    assert infer("softmax_cross_entropy", T(4, 5), lab) == ()
    assert infer("softmax_cross_entropy", T(4, 5), lab, reduction="sum") == ()
    assert infer("softmax_cross_entropy", T(4, 5), lab, reduction="none") == (4,)
    assert infer("softmax_cross_entropy", T(1, 1), T(1, dt="i64"), reduction="none") == (1,)
    with pytest.raises(ShapeError, match=r"labels i32\[3\] should have shape \(4,\) to match "
                                         r"logits f32\[4,5\]"):
        infer("softmax_cross_entropy", T(4, 5), T(3, dt="i32"))
    with pytest.raises(ShapeError, match=r"logits must have shape \(N, C\), got f32\[2,4,5\]"):
        infer("softmax_cross_entropy", T(2, 4, 5), T(2, dt="i32"))
    with pytest.raises(DTypeError, match="integer label tensor"):
        infer("softmax_cross_entropy", T(4, 5), T(4))
    with pytest.raises(AttrError, match="mean, sum, none"):
        infer("softmax_cross_entropy", T(4, 5), lab, reduction="max")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_reference(reduction):
    logits, labels = rnd(6, 5), np.array([0, 4, 2, 2, 1, 3], dtype=np.int64)
    per = naive_ce(logits, labels)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(run("softmax_cross_entropy", logits, labels,
                                   reduction=reduction), want, rtol=1e-12)
    # stable: shifting a row by a constant changes nothing, even far beyond exp's range
    shifted = logits + np.array([[900.0], [-900.0], [0], [0], [2000.0], [0]])
    np.testing.assert_allclose(run("softmax_cross_entropy", shifted, labels,
                                   reduction=reduction), want, rtol=1e-9)


def test_ce_bad_label():
    with pytest.raises(GraphcError, match=r"softmax_cross_entropy: label 7 at index \(1,\).*"
                                          r"\[0, 5\)"):
        run("softmax_cross_entropy", rnd(2, 5), np.array([0, 7], dtype=np.int32))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_gradients(reduction):
    labels = np.array([0, 4, 2, 2], dtype=np.int32)
    check_op_grads("softmax_cross_entropy", [rnd(4, 5), labels], {"reduction": reduction})
    assert get_op("softmax_cross_entropy").nondiff_inputs == (1,)


def test_ce_second_order():
    labels = np.array([1, 0, 2], dtype=np.int64)

    def build(b, v):
        logits = v[0]
        lab = b.const(labels, "i64")
        loss = b.softmax_cross_entropy(logits, lab, reduction="sum")
        (gl,) = grad(b.graph, loss, [logits])
        return gl  # softmax - one_hot: differentiating it runs softmax's VJP

    check_grads(build, [rnd(3, 4)])


# --- batch_norm and batch_norm_inference --------------------------------------------------

def naive_bn(x, gamma, beta, axis, eps):
    y = np.empty_like(x)
    means, variances = [], []
    for c in range(x.shape[axis]):
        sl = [slice(None)] * x.ndim
        sl[axis] = c
        vals = [float(v) for v in x[tuple(sl)].ravel()]
        m, var = statistics.fmean(vals), statistics.pvariance(vals)
        means.append(m)
        variances.append(var)
        y[tuple(sl)] = (x[tuple(sl)] - m) / math.sqrt(var + eps) * gamma[c] + beta[c]
    return y, np.array(means), np.array(variances)


def test_batch_norm_shapes_and_errors():
    assert infer("batch_norm", T(2, 3, 4, 4), T(3), T(3)) == [(2, 3, 4, 4), (3,), (3,)]
    assert infer("batch_norm", T(5, 3), T(3), T(3)) == [(5, 3), (3,), (3,)]
    assert infer("batch_norm", T(2, 5, 4), T(4), T(4), axis=2) == [(2, 5, 4), (4,), (4,)]
    assert infer("batch_norm_inference", T(2, 3, 4), *[T(3)] * 4) == (2, 3, 4)
    with pytest.raises(ShapeError, match=r"gamma has shape \(4,\) but input f32\[2,3,4,4\] has "
                                         r"3 channels on axis 1; expected \(3,\)"):
        infer("batch_norm", T(2, 3, 4, 4), T(4), T(3))
    with pytest.raises(ShapeError, match=r"beta has shape \(3, 1\)"):
        infer("batch_norm", T(2, 3), T(3), T(3, 1))
    with pytest.raises(ShapeError, match=r"channel axis 4 is out of range for input "
                                         r"f32\[2,3,4,4\]"):
        infer("batch_norm", T(2, 3, 4, 4), T(3), T(3), axis=4)
    with pytest.raises(ShapeError, match="no elements per channel"):
        infer("batch_norm", T(0, 3, 4, 4), T(3), T(3))
    with pytest.raises(ShapeError, match=r"running_var has shape \(2,\)"):
        infer("batch_norm_inference", T(2, 3), T(3), T(3), T(3), T(2))
    with pytest.raises(DTypeError, match="different dtypes"):
        infer("batch_norm", T(2, 3), T(3, dt="f64"), T(3))
    with pytest.raises(AttrError, match="eps"):
        infer("batch_norm", T(2, 3), T(3), T(3), eps=-1.0)
    assert get_op("batch_norm").num_outputs == 3
    assert get_op("batch_norm").fusion is Fusion.REDUCTION


@pytest.mark.parametrize("shape,axis", [((4, 3, 2, 3), 1), ((5, 2), 1), ((3, 2, 4), 2),
                                        ((3, 1, 1, 1), 1), ((6,), 0)])
def test_batch_norm_reference(shape, axis):
    c = shape[axis]
    x, gamma, beta = rnd(*shape) * 3 + 1, rnd(c), rnd(c)
    y, m, v = run("batch_norm", x, gamma, beta, axis=axis, eps=1e-3)
    ny, nm, nv = naive_bn(x, gamma, beta, axis, 1e-3)
    np.testing.assert_allclose(y, ny, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m, nm, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v, nv, rtol=1e-12, atol=1e-14)
    rm, rv = rnd(c), RNG.random(c) + 0.5
    yi = run("batch_norm_inference", x, gamma, beta, rm, rv, axis=axis, eps=1e-3)
    bs = [1] * x.ndim
    bs[axis] = c
    r = lambda t: t.reshape(bs)  # noqa: E731
    np.testing.assert_allclose(yi, r(gamma) * (x - r(rm)) / np.sqrt(r(rv) + 1e-3) + r(beta),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("output", [0, 1, 2])
@pytest.mark.parametrize("shape,axis", [((3, 2, 2, 3), 1), ((4, 3), 1), ((2, 3, 4), 2)])
def test_batch_norm_gradients(shape, axis, output):
    c = shape[axis]
    check_op_grads("batch_norm", [rnd(*shape), rnd(c), rnd(c)], {"axis": axis}, output=output)


def test_batch_norm_all_cotangents_and_double_backward():
    shape = (3, 2, 2, 2)

    def build(b, v):
        x, gamma, beta = v
        y, m, var = b.batch_norm(x, gamma, beta)
        # every output reaches the loss, so the VJP sees all three cotangents at once
        loss = b.add(b.sum(b.mul(b.tanh(y), y), axes=(0, 1, 2, 3), keepdims=False),
                     b.sum(b.mul(m, b.mul(var, var)), axes=(0,), keepdims=False))
        gx, gg = grad(b.graph, loss, [x, gamma])
        return b.add(b.sum(b.mul(gx, gx), axes=(0, 1, 2, 3), keepdims=False),
                     b.sum(b.mul(gg, gg), axes=(0,), keepdims=False))

    check_grads(build, [rnd(*shape), rnd(2), rnd(2)])

    def build1(b, v):
        y, m, var = b.batch_norm(*v)
        # (a plain sum of y per channel would be flat in x: sum(xhat) is identically 0)
        return b.add(b.sum(b.tanh(y), axes=(0, 2, 3), keepdims=False), b.add(m, var))

    check_grads(build1, [rnd(*shape), rnd(2), rnd(2)])


@pytest.mark.parametrize("shape,axis", [((3, 4, 2), 1), ((5, 3), 1), ((2, 2, 3), 2)])
def test_batch_norm_inference_gradients(shape, axis):
    c = shape[axis]
    args = [rnd(*shape), rnd(c), rnd(c), rnd(c), RNG.random(c) + 0.5]
    check_op_grads("batch_norm_inference", args, {"axis": axis, "eps": 1e-3})


# --- layer_norm ---------------------------------------------------------------------------------

def test_layer_norm_shapes_and_errors():
    assert infer("layer_norm", T(2, 3, 4), T(4), T(4), axes=(2,)) == (2, 3, 4)
    assert infer("layer_norm", T(2, 3, 4), T(3, 4), T(3, 4), axes=(1, 2)) == (2, 3, 4)
    assert infer("layer_norm", T(5), T(5), T(5), axes=(0,)) == (5,)
    with pytest.raises(ShapeError, match=r"axes \(1,\) must be trailing axes of input "
                                         r"f32\[2,3,4\]"):
        infer("layer_norm", T(2, 3, 4), T(3), T(3), axes=(1,))
    with pytest.raises(ShapeError, match=r"gamma has shape \(3,\) but the normalised axes "
                                         r"\(2,\) of input f32\[2,3,4\] have shape \(4,\)"):
        infer("layer_norm", T(2, 3, 4), T(3), T(4), axes=(2,))
    with pytest.raises(ShapeError, match="sorted and unique"):
        infer("layer_norm", T(2, 3, 4), T(3, 4), T(3, 4), axes=(2, 1))
    with pytest.raises(ShapeError, match="out of range"):
        infer("layer_norm", T(2, 3, 4), T(4), T(4), axes=(-1,))
    with pytest.raises(ShapeError, match="hold no elements"):
        infer("layer_norm", T(2, 0), T(0), T(0), axes=(1,))
    with pytest.raises(AttrError, match="needs attribute axes"):
        infer("layer_norm", T(2, 3, 4), T(4), T(4))
    assert get_op("layer_norm").fusion is Fusion.REDUCTION


@pytest.mark.parametrize("shape,k", [((2, 3, 4), 1), ((2, 3, 4), 2), ((5,), 1), ((3, 1), 1)])
def test_layer_norm_reference(shape, k):
    x = rnd(*shape) * 2 - 1
    tail = shape[len(shape) - k:]
    gamma, beta = rnd(*tail), rnd(*tail)
    axes = tuple(range(len(shape) - k, len(shape)))
    y = run("layer_norm", x, gamma, beta, axes=axes, eps=1e-4)
    rows = x.reshape(-1, math.prod(tail))
    want = np.empty_like(rows)
    for i, row in enumerate(rows):
        vals = [float(v) for v in row]
        m, v = statistics.fmean(vals), statistics.pvariance(vals)
        want[i] = (row - m) / math.sqrt(v + 1e-4) * gamma.ravel() + beta.ravel()
    np.testing.assert_allclose(y, want.reshape(shape), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape,k", [((2, 3, 4), 1), ((2, 3, 2), 2), ((4,), 1)])
def test_layer_norm_gradients(shape, k):
    tail = shape[len(shape) - k:]
    axes = tuple(range(len(shape) - k, len(shape)))
    check_op_grads("layer_norm", [rnd(*shape), rnd(*tail), rnd(*tail)], {"axes": axes})


# --- dtype genericity ---------------------------------------------------------------------------

def _dtype_cases():
    cv = {"strides": (2, 1), "padding": (1, 0, 1, 1), "dilations": (1, 1), "groups": 2}
    pool = {"kernel": (3, 2), "strides": (2, 1), "padding": (1, 0, 0, 1)}
    lab = np.array([1, 0, 3], dtype=np.int32)
    x4 = distinct(2, 4, 5, 5, scale=0.01)
    return [
        ("conv2d", [x4, rnd(6, 2, 3, 3)], cv),
        ("conv2d_grad_input", [rnd(2, 6, 2, 5), rnd(6, 2, 3, 3)],
         dict(input_shape=(2, 4, 5, 5), **cv)),
        ("conv2d_grad_weight", [x4, rnd(2, 6, 2, 5)], dict(weight_shape=(6, 2, 3, 3), **cv)),
        ("max_pool2d", [x4], pool),
        ("max_pool2d_grad", [x4, rnd(2, 4, 2, 5)], pool),
        ("max_pool2d_select", [x4, rnd(2, 4, 5, 5)], pool),
        ("avg_pool2d", [x4], dict(count_include_pad=False, **pool)),
        ("avg_pool2d_grad", [rnd(2, 4, 2, 5)], dict(input_shape=(2, 4, 5, 5), **pool)),
        ("softmax", [rnd(3, 4)], {"axis": 1}),
        ("log_softmax", [rnd(3, 4)], {"axis": 0}),
        ("softmax_cross_entropy", [rnd(3, 4), lab], {}),
        ("batch_norm", [rnd(3, 2, 4), rnd(2), rnd(2)], {}),
        ("batch_norm_inference", [rnd(3, 2, 4), rnd(2), rnd(2), rnd(2), RNG.random(2) + 0.5], {}),
        ("layer_norm", [rnd(3, 2, 4), rnd(2, 4), rnd(2, 4)], {"axes": (1, 2)}),
    ]


@pytest.mark.parametrize("dt,tol", [("f16", 2e-2), ("f32", 1e-5)])
def test_ops_are_dtype_generic(dt, tol):
    """Each op on f16/f32 operands returns that dtype and matches the f64 result rounded."""
    np_dt = TensorType((), dt).dtype.np_dtype
    for op, args, attrs in _dtype_cases():
        low = [a.astype(np_dt) if a.dtype.kind == "f" else a for a in args]
        ref = run(op, *[a.astype(np.float64) if a.dtype.kind == "f" else a for a in low],
                  **attrs)
        got = run(op, *low, **attrs)
        for r, o in zip(*((ref, got) if isinstance(ref, tuple) else ((ref,), (got,)))):
            assert o.dtype == np_dt, op
            np.testing.assert_allclose(o.astype(np.float64), r, rtol=tol, atol=tol, err_msg=op)


def test_every_nn_op_has_a_cost():
    for op, args, attrs in _dtype_cases():
        opdef = get_op(op)
        types = [TensorType(a.shape, a.dtype) for a in args]
        a = opdef.check_attrs(attrs)
        outs = opdef.infer_types(types, a)
        cost = opdef.estimate_cost(types, outs, a)
        assert cost.flops > 0 and cost.bytes == sum(t.nbytes for t in types + outs), op

