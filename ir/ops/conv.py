"""2-D convolution and its two gradients (conv2d, conv2d_grad_input, conv2d_grad_weight).

Gradient structure: the three are bilinear and each one's VJP is built from the other two,
so derivatives of any order exist. Decompositions are im2col + one batched GEMM (groups
split by a free reshape, the weight broadcast over the batch) and col2im for the input
gradient. Kernels: ir/ops/conv_lowering.py. Attribute conventions: ir/ops/_nn_common.py.
"""
from __future__ import annotations

import numpy as np

from .. import batch
from ..errors import AttrError, ShapeError
from ..registry import Attr, Fusion, OpDef, register
from ..types import TensorType, format_shape as _fs
from ._nn_common import (_F64, _io_cost, _float_operands, _check_window_attrs, _check_shape_attr,
                         _out_len, _out_hw, _pad_hw, _windows, _col2im, _crop, _up, _down)
from .conv_lowering import (conv_gemm_shape, lower_conv2d, lower_conv2d_grad_input,
                            lower_conv2d_grad_weight)

# --- conv2d and its gradients ---------------------------------------------------------------

_CONV_ATTRS = {"strides": Attr("ints", (1, 1)), "padding": Attr("ints", (0, 0, 0, 0)),
               "dilations": Attr("ints", (1, 1)), "groups": Attr("int", 1)}


def _conv_attrs(a: dict) -> dict:
    return {k: a[k] for k in _CONV_ATTRS}


def _conv_out_shape(op: str, xs: tuple[int, ...], ws: tuple[int, ...], a: dict) -> tuple[int, ...]:
    if len(xs) != 4:
        raise ShapeError(f"{op}: input must have rank 4 (N, C, H, W), got {_fs(xs)}")
    if len(ws) != 4:
        raise ShapeError(f"{op}: weight must have rank 4 (K, C/groups, KH, KW), got {_fs(ws)}")
    _check_window_attrs(op, a, ("strides", "padding", "dilations"))
    g = a["groups"]
    if g < 1:
        raise AttrError(f"{op}: groups={g} must be >= 1")
    n, c, h, w = xs
    k, cg, kh, kw = ws
    if c % g:
        raise ShapeError(f"{op}: groups={g} does not divide the {c} channels of input {_fs(xs)}")
    if k % g:
        raise ShapeError(f"{op}: groups={g} does not divide the {k} output channels of weight "
                         f"{_fs(ws)}")
    if cg * g != c:
        raise ShapeError(f"{op}: input has {c} channels but weight {_fs(ws)} expects {cg * g} "
                         f"(groups={g})")
    if kh < 1 or kw < 1:
        raise ShapeError(f"{op}: weight {_fs(ws)} has an empty {kh}x{kw} kernel")
    (sh, sw), (pt, pb, pl, pr), (dh, dw) = a["strides"], a["padding"], a["dilations"]
    oh = _out_len(op, "height", h, pt, pb, kh, sh, dh, xs)
    ow = _out_len(op, "width", w, pl, pr, kw, sw, dw, xs)
    return (n, k, oh, ow)


def _im2col(x: np.ndarray, kernel, out_hw, groups, strides, padding, dilations) -> np.ndarray:
    """float64 patches of x, (G, N*OH*OW, C/G*KH*KW), row order (n, oh, ow), column (c, i, j)."""
    n, c = x.shape[:2]
    (kh, kw), (oh, ow) = kernel, out_hw
    win = _windows(_pad_hw(x.astype(_F64), padding, 0.0), kernel, strides, dilations, oh, ow)
    win = win.reshape(n, groups, c // groups, oh, ow, kh, kw)
    return win.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * oh * ow, (c // groups) * kh * kw)


def _grouped_rows(t: np.ndarray, groups: int) -> np.ndarray:
    """(N, K, OH, OW) -> float64 (G, N*OH*OW, K/G), matching _im2col's row order."""
    n, k, oh, ow = t.shape
    return (t.astype(_F64).reshape(n, groups, k // groups, oh, ow).transpose(1, 0, 3, 4, 2)
            .reshape(groups, n * oh * ow, k // groups))


def _conv2d_infer(ts, a):
    x, w = ts
    dt = _float_operands("conv2d", ts)
    return TensorType(_conv_out_shape("conv2d", x.shape, w.shape, a), dt)


def _conv2d_ref(x, w, strides, padding, dilations, groups):
    n = x.shape[0]
    k, cg, kh, kw = w.shape
    oh, ow = _out_hw(x.shape[2:], (kh, kw), strides, padding, dilations)
    cols = _im2col(x, (kh, kw), (oh, ow), groups, strides, padding, dilations)
    wm = w.astype(_F64).reshape(groups, k // groups, cg * kh * kw)
    out = np.matmul(cols, wm.transpose(0, 2, 1))  # (G, N*OH*OW, K/G): one GEMM per group
    out = out.reshape(groups, n, oh, ow, k // groups).transpose(1, 0, 4, 2, 3)
    return np.ascontiguousarray(out.reshape(n, k, oh, ow)).astype(x.dtype)


def _conv2d_vjp(b, n, g):
    x, w = n.inputs
    a = _conv_attrs(n.attrs)
    return [b.conv2d_grad_input(g, w, input_shape=x.shape, **a),
            b.conv2d_grad_weight(x, g, weight_shape=w.shape, **a)]


def _conv_gemm(b, x_shape, w_shape, out_hw, a: dict):
    """Views for convolution as GEMMs: (reshape to cols, weight matrix, output rows).

    im2col's rows are (c, i, j) with c = group * C/G + c', so splitting the row axis as
    (G, C/G*KH*KW) groups the columns without copying; the weight (K, C/G, KH, KW) reshapes
    to (G, K/G, C/G*KH*KW) and the output (N, K, OH, OW) to (N, G, K/G, OH*OW). matmul
    broadcasts the weight over the batch. With one group the G axis is left out.
    """
    n, c = x_shape[:2]
    k, cg, kh, kw = w_shape
    g, L = a["groups"], out_hw[0] * out_hw[1]
    lead = () if g == 1 else (g,)
    return (lambda v: b.reshape(v, (n,) + lead + (cg * kh * kw, L)),   # im2col(x)
            lambda v: b.reshape(v, lead + (k // g, cg * kh * kw)),      # weight
            lambda v: b.reshape(v, (n,) + lead + (k // g, L)))          # output / its grad


def _conv2d_decompose(b, n):
    x, w = n.inputs
    a = n.attrs
    out = n.outputs[0]
    as_cols, as_wmat, as_rows = _conv_gemm(b, x.shape, w.shape, out.shape[2:], a)
    cols = b.im2col(_up(b, x), kernel=w.shape[2:], strides=a["strides"], padding=a["padding"],
                    dilations=a["dilations"])
    y = b.matmul(as_wmat(_up(b, w)), as_cols(cols))  # (N, [G,] K/G, OH*OW)
    return [_down(b, b.reshape(y, out.shape), out.dtype)]


def _conv_flops(out_shape, weight_shape) -> int:
    n, k, oh, ow = out_shape
    _, cg, kh, kw = weight_shape
    return 2 * n * k * oh * ow * cg * kh * kw


register(OpDef(
    "conv2d", Fusion.CONTRACTION, _conv2d_infer, _conv2d_ref, 2, dict(_CONV_ATTRS), _conv2d_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(outs[0].shape, ts[1].shape), ts, outs),
    doc="2-D cross-correlation, NCHW input, (K, C/groups, KH, KW) weight; zero padding "
        "(top, bottom, left, right), strides, dilations and channel groups",
    decompose=_conv2d_decompose, lower=lower_conv2d, lower_nests_gemm=True,
    lower_epilogue=lower_conv2d, gemm_shape=conv_gemm_shape, batch_split=batch.first_input))


def _conv2d_grad_input_infer(ts, a):
    g, w = ts
    op = "conv2d_grad_input"
    dt = _float_operands(op, ts)
    xs = a["input_shape"]
    _check_shape_attr(op, "input_shape", xs)
    want = _conv_out_shape(op, xs, w.shape, a)
    if g.shape != want:
        raise ShapeError(f"{op}: gradient {g} should have shape {_fs(want)}, the conv2d output "
                         f"for input {_fs(xs)} and weight {w}")
    return TensorType(xs, dt)


def _conv2d_grad_input_ref(g, w, input_shape, strides, padding, dilations, groups):
    n, c, h, wd = input_shape
    k, cg, kh, kw = w.shape
    oh, ow = g.shape[2:]
    wm = w.astype(_F64).reshape(groups, k // groups, cg * kh * kw)
    cols = np.matmul(_grouped_rows(g, groups), wm)  # (G, N*OH*OW, C/G*KH*KW)
    cols = (cols.reshape(groups, n, oh, ow, cg, kh, kw).transpose(1, 0, 4, 2, 3, 5, 6)
            .reshape(n, c, oh, ow, kh, kw))
    pt, pb, pl, pr = padding
    dxp = _col2im(cols, (h + pt + pb, wd + pl + pr), strides, dilations)
    return np.ascontiguousarray(_crop(dxp, padding, (h, wd))).astype(g.dtype)


def _conv2d_grad_input_vjp(b, n, c):
    # dx = T(g, w) is bilinear: <c, T(g, w)> = <conv2d(c, w), g>.
    g, w = n.inputs
    a = _conv_attrs(n.attrs)
    return [b.conv2d(c, w, **a), b.conv2d_grad_weight(c, g, weight_shape=w.shape, **a)]


def _conv2d_grad_input_decompose(b, n):
    # Columns = W^T g per group (the transposed GEMM), then col2im adds overlapping windows.
    g, w = n.inputs
    a = n.attrs
    out = n.outputs[0]
    xs = a["input_shape"]
    as_cols, as_wmat, as_rows = _conv_gemm(b, xs, w.shape, g.shape[2:], a)
    cols = b.matmul(as_wmat(_up(b, w)), as_rows(_up(b, g)), transpose_a=True)
    cols = b.reshape(cols, (xs[0], xs[1] * w.shape[2] * w.shape[3], g.shape[2] * g.shape[3]))
    dx = b.col2im(cols, input_shape=xs, kernel=w.shape[2:], strides=a["strides"],
                  padding=a["padding"], dilations=a["dilations"])
    return [_down(b, dx, out.dtype)]


register(OpDef(
    "conv2d_grad_input", Fusion.CONTRACTION, _conv2d_grad_input_infer, _conv2d_grad_input_ref, 2,
    {"input_shape": Attr("ints"), **_CONV_ATTRS}, _conv2d_grad_input_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(ts[0].shape, ts[1].shape), ts, outs),
    doc="gradient of conv2d with respect to its input (a transposed convolution) given the "
        "output gradient g and the weight; input positions no window reads get zero",
    decompose=_conv2d_grad_input_decompose, lower=lower_conv2d_grad_input, lower_nests_gemm=True))


def _conv2d_grad_weight_infer(ts, a):
    x, g = ts
    op = "conv2d_grad_weight"
    dt = _float_operands(op, ts)
    ws = a["weight_shape"]
    _check_shape_attr(op, "weight_shape", ws)
    want = _conv_out_shape(op, x.shape, ws, a)
    if g.shape != want:
        raise ShapeError(f"{op}: gradient {g} should have shape {_fs(want)}, the conv2d output "
                         f"for input {x} and weight {_fs(ws)}")
    return TensorType(ws, dt)


def _conv2d_grad_weight_ref(x, g, weight_shape, strides, padding, dilations, groups):
    k, cg, kh, kw = weight_shape
    cols = _im2col(x, (kh, kw), g.shape[2:], groups, strides, padding, dilations)
    dw = np.matmul(_grouped_rows(g, groups).transpose(0, 2, 1), cols)  # (G, K/G, C/G*KH*KW)
    return dw.reshape(weight_shape).astype(x.dtype)


def _conv2d_grad_weight_vjp(b, n, c):
    # dw = U(x, g) is bilinear: <c, U(x, g)> = <conv2d(x, c), g>.
    x, g = n.inputs
    a = _conv_attrs(n.attrs)
    return [b.conv2d_grad_input(g, c, input_shape=x.shape, **a), b.conv2d(x, c, **a)]


def _conv2d_grad_weight_decompose(b, n):
    # Per image and group g @ im2col(x)^T, summed over the batch.
    x, g = n.inputs
    a = n.attrs
    out = n.outputs[0]
    ws = a["weight_shape"]
    as_cols, as_wmat, as_rows = _conv_gemm(b, x.shape, ws, g.shape[2:], a)
    cols = b.im2col(_up(b, x), kernel=ws[2:], strides=a["strides"], padding=a["padding"],
                    dilations=a["dilations"])
    per_image = b.matmul(as_rows(_up(b, g)), as_cols(cols), transpose_b=True)
    dw = b.sum(per_image, axes=(0,), keepdims=False)  # ([G,] K/G, C/G*KH*KW)
    return [_down(b, b.reshape(dw, ws), out.dtype)]


register(OpDef(
    "conv2d_grad_weight", Fusion.CONTRACTION, _conv2d_grad_weight_infer, _conv2d_grad_weight_ref,
    2, {"weight_shape": Attr("ints"), **_CONV_ATTRS}, _conv2d_grad_weight_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(ts[1].shape, outs[0].shape), ts, outs),
    doc="gradient of conv2d with respect to its weight, given the input x and the output "
        "gradient g",
    decompose=_conv2d_grad_weight_decompose, lower=lower_conv2d_grad_weight, lower_nests_gemm=True))
