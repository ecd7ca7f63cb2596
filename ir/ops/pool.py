"""Max and average pooling and their gradients (max_pool2d, max_pool2d_grad,
max_pool2d_select, avg_pool2d, avg_pool2d_grad).

avg_pool2d and avg_pool2d_grad are adjoint linear maps and differentiate into each other.
max_pool2d's VJP is max_pool2d_grad(x, g), which routes each window's gradient to the
window's *first* maximum in row-major order over the kernel (PyTorch's convention; a NaN
counts as a maximum, and padding never wins). The routing is piecewise constant in x, so
max_pool2d_grad and max_pool2d_select (the gather at the same positions, its adjoint in g)
pass no gradient to x (``nondiff_inputs=(0,)``) and differentiate into each other in their
second operand: double-backward through max pooling works. Decompositions are im2col + a
reduction over the window axis; max pooling's gradient routing keeps the reference's
first-maximum convention exactly. Kernels: ir/ops/pool_lowering.py.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .. import batch
from .. import dtypes
from ..errors import ShapeError
from ..registry import Attr, Fusion, OpDef, register
from ..types import format_shape as _fs
from ._common import require_float
from ._nn_common import (_F64, _io_cost, _float_operands, _check_window_attrs, _check_shape_attr,
                         _out_len, _out_hw, _pad_hw, _windows, _col2im, _crop, _up, _down,
                         _pool_cols, _pool_uncols)
from .pool_lowering import lower_max_pool2d, lower_max_pool2d_grad

# --- pooling ------------------------------------------------------------------------------------
# Pools are OPAQUE for fusion: a window reduction is not a REDUCTION in the registry's sense
# (that class reduces whole axes named by `axes`, which a fuser may read and tile over);
# overlapping windows (stride < kernel) read each input element several times, so fusing an
# elementwise producer into a pool means recomputing it per window. Pools get their own kernel.

_POOL_ATTRS = {"kernel": Attr("ints"), "strides": Attr("ints"),
               "padding": Attr("ints", (0, 0, 0, 0))}
_AVG_ATTRS = {**_POOL_ATTRS, "count_include_pad": Attr("bool", True)}


def _pool_out_shape(op: str, xs: tuple[int, ...], a: dict) -> tuple[int, ...]:
    if len(xs) != 4:
        raise ShapeError(f"{op}: input must have rank 4 (N, C, H, W), got {_fs(xs)}")
    _check_window_attrs(op, a, ("kernel", "strides", "padding"))
    n, c, h, w = xs
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = a["kernel"], a["strides"], a["padding"]
    oh = _out_len(op, "height", h, pt, pb, kh, sh, 1, xs)
    ow = _out_len(op, "width", w, pl, pr, kw, sw, 1, xs)
    # Every window must overlap the input: windows are monotone, so check the first and last.
    for what, size, lo, k, s, o in (("row", h, pt, kh, sh, oh), ("column", w, pl, kw, sw, ow)):
        bad = 0 if (k <= lo or size == 0) else o - 1 if s * (o - 1) >= lo + size else None
        if bad is not None:
            raise ShapeError(f"{op}: with kernel {tuple(a['kernel'])}, strides "
                             f"{tuple(a['strides'])} and padding {tuple(a['padding'])} the "
                             f"window of output {what} {bad} lies entirely in the padding of "
                             f"input {_fs(xs)}; every window must overlap the input")
    return (n, c, oh, ow)


def _pool_geometry(shape, kernel, strides, padding):
    n, c, h, w = shape
    pt, pb, pl, pr = padding
    return n, c, _out_hw((h, w), kernel, strides, padding), (h + pt + pb, w + pl + pr)


def _pool_flops(out_shape, kernel, extra: int = 0) -> int:
    return prod(out_shape) * (kernel[0] * kernel[1] + extra)


# max_pool2d --------------------------------------------------------------------------------

def _max_pool2d_infer(ts, a):
    (x,) = ts
    require_float("max_pool2d", x)
    return x.with_shape(_pool_out_shape("max_pool2d", x.shape, a))


def _max_pool2d_ref(x, kernel, strides, padding):
    _, _, (oh, ow), _ = _pool_geometry(x.shape, kernel, strides, padding)
    win = _windows(_pad_hw(x, padding, -np.inf), kernel, strides, (1, 1), oh, ow)
    return np.ascontiguousarray(win.max(axis=(4, 5)))  # a selection: exact in x's dtype


def _first_max(x, kernel, strides, padding) -> np.ndarray:
    """Flat index (row-major over the kernel) of each window's first maximum: (N, C, OH, OW).

    Padding never wins (even against -inf inputs); a NaN counts as a maximum, as it
    propagates through max_pool2d.
    """
    n, c, (oh, ow), _ = _pool_geometry(x.shape, kernel, strides, padding)
    kk = kernel[0] * kernel[1]
    win = _windows(_pad_hw(x, padding, -np.inf), kernel, strides, (1, 1), oh, ow)
    win = win.reshape(n, c, oh, ow, kk)
    real = _pad_hw(np.ones((1, 1) + x.shape[2:], bool), padding, False)
    real = _windows(real, kernel, strides, (1, 1), oh, ow).reshape(1, 1, oh, ow, kk)
    top = win.max(axis=-1, keepdims=True)
    hit = real & ((win == top) | np.isnan(win))
    return np.argmax(hit, axis=-1)


def _first_max_mask(b, x, a: dict):
    """Decomposed _first_max: a bool (N, C, KH*KW, OH, OW) mask, true at each window's first
    maximum only.

    A window position is a candidate when it equals the window's maximum or is NaN (a NaN
    maximum propagates), and when it is a real input element: padding never wins, even
    against -inf inputs (the (1, 1, KH*KW, OH, OW) map of real positions is a constant made
    here). argmax picks the first candidate in row-major kernel order; comparing its index
    with a constant iota over the window axis gives the mask.
    """
    cols = _pool_cols(b, x, a, -np.inf)
    kk, oh, ow = cols.shape[2:]
    hit = b.logical_or(b.equal(cols, b.max(cols, axes=(2,), keepdims=True)),
                       b.not_equal(cols, cols))
    if any(a["padding"]):
        real = _pad_hw(np.ones((1, 1) + x.shape[2:], bool), a["padding"], False)
        real = _windows(real, a["kernel"], a["strides"], (1, 1), oh, ow)  # (1,1,OH,OW,KH,KW)
        real = real.reshape(1, 1, oh, ow, kk).transpose(0, 1, 4, 2, 3)
        hit = b.logical_and(hit, b.const(real, dtypes.bool_))
    first = b.argmax(b.cast(hit, to=dtypes.i32), axis=2, keepdims=True)  # (N, C, 1, OH, OW)
    return b.equal(first, b.const(np.arange(kk).reshape(1, 1, kk, 1, 1), first.dtype))


def _max_pool2d_decompose(b, n):
    return [b.max(_pool_cols(b, n.inputs[0], n.attrs, -np.inf), axes=(2,), keepdims=False)]


def _max_pool2d_vjp(b, n, g):
    return [b.max_pool2d_grad(n.inputs[0], g, **n.attrs)]


register(OpDef(
    "max_pool2d", Fusion.OPAQUE, _max_pool2d_infer, _max_pool2d_ref, 1, dict(_POOL_ATTRS),
    _max_pool2d_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(outs[0].shape, a["kernel"]), ts, outs),
    doc="maximum over kernel windows (NCHW); padding (top, bottom, left, right) is -inf and "
        "every window must overlap the input; NaN propagates",
    decompose=_max_pool2d_decompose, lower=lower_max_pool2d, batch_split=batch.first_input))


def _max_pool2d_grad_infer(ts, a):
    x, g = ts
    op = "max_pool2d_grad"
    dt = _float_operands(op, ts)
    want = _pool_out_shape(op, x.shape, a)
    if g.shape != want:
        raise ShapeError(f"{op}: gradient {g} should have shape {_fs(want)}, the max_pool2d "
                         f"output for input {x}")
    return x.with_dtype(dt)


def _max_pool2d_grad_ref(x, g, kernel, strides, padding):
    n, c, (oh, ow), padded = _pool_geometry(x.shape, kernel, strides, padding)
    idx = _first_max(x, kernel, strides, padding)
    cols = np.zeros((n, c, oh, ow, kernel[0] * kernel[1]), _F64)
    np.put_along_axis(cols, idx[..., None], g.astype(_F64)[..., None], axis=-1)
    dxp = _col2im(cols.reshape(n, c, oh, ow, *kernel), padded, strides, (1, 1))
    return np.ascontiguousarray(_crop(dxp, padding, x.shape[2:])).astype(x.dtype)


def _max_pool2d_grad_decompose(b, n):
    x, g = n.inputs
    nb, c, oh, ow = g.shape
    mask = _first_max_mask(b, x, n.attrs)
    # The same columns as the reference builds (g at each first maximum, zeros elsewhere),
    # summed by the same col2im: bit-identical results.
    routed = b.where(mask, b.reshape(g, (nb, c, 1, oh, ow)), b.scalar(0.0, g))
    return [_pool_uncols(b, routed, x.shape, n.attrs)]


def _max_pool2d_grad_vjp(b, n, c):
    x, _ = n.inputs
    return [None, b.max_pool2d_select(x, c, **n.attrs)]


register(OpDef(
    "max_pool2d_grad", Fusion.OPAQUE, _max_pool2d_grad_infer, _max_pool2d_grad_ref, 2,
    dict(_POOL_ATTRS), _max_pool2d_grad_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(ts[1].shape, a["kernel"], 1), ts, outs),
    nondiff_inputs=(0,),
    doc="gradient of max_pool2d: each window's gradient goes to the first maximum of x in "
        "the window (row-major over the kernel, as PyTorch); overlapping windows add up. "
        "Piecewise constant in x, so no gradient flows to x",
    decompose=_max_pool2d_grad_decompose, lower=lower_max_pool2d_grad))


def _max_pool2d_select_infer(ts, a):
    x, v = ts
    op = "max_pool2d_select"
    dt = _float_operands(op, ts)
    if v.shape != x.shape:
        raise ShapeError(f"{op}: values {v} must have the shape of the pooled input {x}")
    return x.with_shape(_pool_out_shape(op, x.shape, a)).with_dtype(dt)


def _max_pool2d_select_ref(x, v, kernel, strides, padding):
    n, c, (oh, ow), _ = _pool_geometry(x.shape, kernel, strides, padding)
    idx = _first_max(x, kernel, strides, padding)
    win = _windows(_pad_hw(v, padding, 0), kernel, strides, (1, 1), oh, ow)
    win = win.reshape(n, c, oh, ow, kernel[0] * kernel[1])
    return np.ascontiguousarray(np.take_along_axis(win, idx[..., None], axis=-1)[..., 0])


def _max_pool2d_select_decompose(b, n):
    x, v = n.inputs
    mask = _first_max_mask(b, x, n.attrs)
    picked = b.where(mask, _pool_cols(b, v, n.attrs, 0.0), b.scalar(-0.0, v))
    # One true per window; the other terms are -0.0, so the sum is the picked value exactly.
    return [b.sum(picked, axes=(2,), keepdims=False)]


def _max_pool2d_select_vjp(b, n, g):
    x, _ = n.inputs
    return [None, b.max_pool2d_grad(x, g, **n.attrs)]


register(OpDef(
    "max_pool2d_select", Fusion.OPAQUE, _max_pool2d_select_infer, _max_pool2d_select_ref, 2,
    dict(_POOL_ATTRS), _max_pool2d_select_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(outs[0].shape, a["kernel"]), ts, outs),
    nondiff_inputs=(0,),
    doc="for each max_pool2d window of x, the value of v at the window's first maximum of x; "
        "the adjoint of max_pool2d_grad in g (it makes double-backward through max pooling)",
    decompose=_max_pool2d_select_decompose))


# avg_pool2d --------------------------------------------------------------------------------

def _avg_divisor(hw, kernel, strides, padding, count_include_pad, out_hw):
    """Scalar kh*kw, or a (1, 1, OH, OW) count of the input elements each window covers."""
    if count_include_pad:
        return float(kernel[0] * kernel[1])
    real = _pad_hw(np.ones((1, 1) + tuple(hw)), padding, 0.0)
    return _windows(real, kernel, strides, (1, 1), *out_hw).sum(axis=(4, 5))


def _avg_pool2d_infer(ts, a):
    (x,) = ts
    require_float("avg_pool2d", x)
    return x.with_shape(_pool_out_shape("avg_pool2d", x.shape, a))


def _avg_pool2d_ref(x, kernel, strides, padding, count_include_pad):
    _, _, out_hw, _ = _pool_geometry(x.shape, kernel, strides, padding)
    win = _windows(_pad_hw(x.astype(_F64), padding, 0.0), kernel, strides, (1, 1), *out_hw)
    div = _avg_divisor(x.shape[2:], kernel, strides, padding, count_include_pad, out_hw)
    return (win.sum(axis=(4, 5)) / div).astype(x.dtype)


def _avg_divisor_value(b, n, like):
    """The divisor as a graph constant: a scalar, or the (1, 1, OH, OW) count map of real
    elements (count_include_pad=false with padding), computed here with numpy."""
    a = n.attrs
    xs = a["input_shape"] if "input_shape" in a else n.inputs[0].shape
    out_hw = _out_hw(xs[2:], a["kernel"], a["strides"], a["padding"])
    div = np.asarray(_avg_divisor(xs[2:], a["kernel"], a["strides"], a["padding"],
                                  a["count_include_pad"], out_hw))
    if div.size and np.all(div == div.flat[0]):  # no window is cut by the padding
        div = div.flat[0]
    return b.const(div, like.dtype)


def _avg_pool2d_decompose(b, n):
    x = n.inputs[0]
    xu = _up(b, x)
    total = b.sum(_pool_cols(b, xu, n.attrs, 0.0), axes=(2,), keepdims=False)
    return [_down(b, b.div(total, _avg_divisor_value(b, n, xu)), x.dtype)]


def _avg_pool2d_vjp(b, n, g):
    return [b.avg_pool2d_grad(g, input_shape=n.inputs[0].shape, **n.attrs)]


register(OpDef(
    "avg_pool2d", Fusion.OPAQUE, _avg_pool2d_infer, _avg_pool2d_ref, 1, dict(_AVG_ATTRS),
    _avg_pool2d_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(outs[0].shape, a["kernel"], 1), ts, outs),
    doc="mean over kernel windows (NCHW) with zero padding; count_include_pad=false divides "
        "by the number of input elements in each window instead of kh*kw",
    decompose=_avg_pool2d_decompose, batch_split=batch.first_input))


def _avg_pool2d_grad_infer(ts, a):
    (g,) = ts
    op = "avg_pool2d_grad"
    require_float(op, g)
    xs = a["input_shape"]
    _check_shape_attr(op, "input_shape", xs)
    want = _pool_out_shape(op, xs, a)
    if g.shape != want:
        raise ShapeError(f"{op}: gradient {g} should have shape {_fs(want)}, the avg_pool2d "
                         f"output for input {_fs(xs)}")
    return g.with_shape(xs)


def _avg_pool2d_grad_ref(g, input_shape, kernel, strides, padding, count_include_pad):
    _, _, out_hw, padded = _pool_geometry(input_shape, kernel, strides, padding)
    div = _avg_divisor(input_shape[2:], kernel, strides, padding, count_include_pad, out_hw)
    share = g.astype(_F64) / div
    cols = np.broadcast_to(share[..., None, None], share.shape + tuple(kernel))
    dxp = _col2im(cols, padded, strides, (1, 1))
    return np.ascontiguousarray(_crop(dxp, padding, input_shape[2:])).astype(g.dtype)


def _avg_pool2d_grad_decompose(b, n):
    (g,) = n.inputs
    nb, c, oh, ow = g.shape
    kk = n.attrs["kernel"][0] * n.attrs["kernel"][1]
    gu = _up(b, g)
    share = b.reshape(b.div(gu, _avg_divisor_value(b, n, gu)), (nb, c, 1, oh, ow))
    cols = b.broadcast(share, (nb, c, kk, oh, ow))
    return [_down(b, _pool_uncols(b, cols, n.attrs["input_shape"], n.attrs), g.dtype)]


def _avg_pool2d_grad_vjp(b, n, c):
    a = {k: n.attrs[k] for k in _AVG_ATTRS}
    return [b.avg_pool2d(c, **a)]  # avg_pool2d_grad is avg_pool2d's adjoint, and vice versa


register(OpDef(
    "avg_pool2d_grad", Fusion.OPAQUE, _avg_pool2d_grad_infer, _avg_pool2d_grad_ref, 1,
    {"input_shape": Attr("ints"), **_AVG_ATTRS}, _avg_pool2d_grad_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(ts[0].shape, a["kernel"], 1), ts, outs),
    doc="gradient of avg_pool2d: each window's gradient, divided as in the forward, spread "
        "over the window; overlapping windows add up",
    decompose=_avg_pool2d_grad_decompose))
