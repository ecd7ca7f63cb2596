"""Neural-network ops: 2-D convolution and its two gradients, max and average pooling and
their gradients, softmax / log_softmax, one_hot, softmax cross-entropy, batch and layer
normalisation.

Canonical attributes (the builder normalises user spellings into these before a node is
made; the ops reject anything else):

- ``strides=(sh, sw)``, ``dilations=(dh, dw)``, ``kernel=(kh, kw)``: two ints >= 1.
- ``padding=(top, bottom, left, right)``: four ints >= 0. Note the order: ONNX ``pads`` is
  (top, left, bottom, right) and ``torch.nn.functional.pad`` is (left, right, top, bottom).
- ``groups``: an int >= 1 dividing both C and K (depthwise is ``groups == C``).
- ``input_shape`` / ``weight_shape`` on the gradient ops: the full 4-tuple of the
  corresponding forward operand.
- ``axis``: a non-negative int (0..rank-1); ``axes`` of layer_norm: the sorted trailing axes
  that are normalised, e.g. (rank-1,) or (rank-2, rank-1).
- Layout is NCHW for images and (K, C/groups, KH, KW) for convolution weights.

Precision: every reference computes in float64 and rounds once to the operand dtype (f16,
f32 or f64), so the oracle is at least as accurate as any backend. The exceptions are
max_pool2d and max_pool2d_select, which only select elements and are exact in the operand
dtype.

Gradient structure. conv2d, conv2d_grad_input and conv2d_grad_weight are bilinear and each
one's VJP is built from the other two, so derivatives of any order exist. avg_pool2d and
avg_pool2d_grad are adjoint linear maps and differentiate into each other. max_pool2d's
VJP is max_pool2d_grad(x, g), which routes each window's gradient to the window's *first*
maximum in row-major order over the kernel (PyTorch's convention; a NaN counts as a
maximum, and padding never wins). The routing is piecewise constant in x, so
max_pool2d_grad and max_pool2d_select (the gather at the same positions, its adjoint in g)
pass no gradient to x (``nondiff_inputs=(0,)``) and differentiate into each other in their
second operand: double-backward through max pooling works.

Decompositions. Every op here except one_hot is composite: its ``decompose`` hook rebuilds it
from primitives (elementwise ops, reductions, layout ops, matmul, one_hot and the window ops
im2col/col2im of ir/ops/window.py) for backends without a dedicated kernel; see
passes/legalize.py. Convolutions are im2col + one batched GEMM (groups split by a free
reshape, the weight broadcast over the batch) and col2im for the input gradient; pools are
im2col + a reduction over the window axis; max pooling's gradient routing keeps the
reference's first-maximum convention exactly. The decompositions compute in the operand
dtype (f16 widened to f32) with the references' stable formulas, so they match the
references to rounding: exactly for the selections (max_pool2d, max_pool2d_grad,
max_pool2d_select), and within a few ulps of the result's scale in float64 elsewhere.
"""
from __future__ import annotations

from math import prod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import batch
from .. import dtypes
from ..errors import AttrError, GraphcError, ShapeError
from ..registry import Attr, Cost, Fusion, OpDef, register
from ..types import TensorType, format_shape as _fs
from ._common import check_axes, require_float, require_int, same_dtype

_F64 = np.float64
_EXP_FLOPS = 10   # as the elementwise table counts exp and log
_DIV_FLOPS = 4    # as the elementwise table counts div
_RSQRT_FLOPS = 5  # as the elementwise table counts rsqrt


def _nbytes(*types: TensorType) -> int:
    return sum(t.nbytes for t in types)


def _io_cost(flops: int, ins, outs) -> Cost:
    """Compulsory traffic: every operand read once and every result written once."""
    return Cost(int(flops), _nbytes(*ins) + _nbytes(*outs))


def _float_operands(op: str, ts: list[TensorType]):
    for t in ts:
        require_float(op, t)
    return same_dtype(op, ts)


# --- window geometry (shared by convolution and pooling) -------------------------------------

_PAIR_SPEC = {"kernel": (2, 1), "strides": (2, 1), "dilations": (2, 1), "padding": (4, 0)}


def _check_window_attrs(op: str, a: dict, names: tuple[str, ...]) -> None:
    for name in names:
        length, low = _PAIR_SPEC[name]
        v = a[name]
        if len(v) != length or any(d < low for d in v):
            what = " (top, bottom, left, right)" if name == "padding" else ""
            raise AttrError(f"{op}: {name}={tuple(v)} must be {length} ints >= {low}{what}")


def _check_shape_attr(op: str, name: str, shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or any(d < 0 for d in shape):
        raise AttrError(f"{op}: {name}={tuple(shape)} must be 4 non-negative ints (NCHW)")


def _out_len(op: str, what: str, size: int, lo: int, hi: int, k: int, stride: int, dil: int,
             xshape: tuple[int, ...]) -> int:
    span = dil * (k - 1) + 1
    padded = size + lo + hi
    if span > padded:
        dil_txt = f", dilation {dil}" if dil != 1 else ""
        raise ShapeError(f"{op}: the window's {what} extent {span} (kernel {k}{dil_txt}) exceeds "
                         f"the padded input {what} {padded} ({size} + padding {lo} + {hi}) of "
                         f"input {_fs(xshape)}")
    return (padded - span) // stride + 1


def _out_hw(hw, kernel, strides, padding, dilations=(1, 1)) -> tuple[int, int]:
    """Output spatial size for already-validated geometry (references use this)."""
    (h, w), (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = hw, kernel, strides, padding, dilations
    return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1,
            (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)


def _pad_hw(x: np.ndarray, padding, value) -> np.ndarray:
    pt, pb, pl, pr = padding
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def _windows(xp: np.ndarray, kernel, strides, dilations, oh: int, ow: int) -> np.ndarray:
    """A (N, C, OH, OW, KH, KW) read-only view of the windows of the padded NCHW array."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    v = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def _col2im(cols: np.ndarray, padded_hw, strides, dilations) -> np.ndarray:
    """Sum (N, C, OH, OW, KH, KW) window contributions back into a padded (N, C, Hp, Wp) array.

    Loops over the KH*KW kernel taps only; within one tap the target positions are distinct,
    so each step is one vectorised strided add. Rows and columns that no window reaches
    (the stride remainder) stay zero.
    """
    n, c, oh, ow, kh, kw = cols.shape
    (sh, sw), (dh, dw) = strides, dilations
    out = np.zeros((n, c) + tuple(padded_hw), cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[:, :, :, :, i, j]
    return out


def _crop(xp: np.ndarray, padding, hw) -> np.ndarray:
    pt, _, pl, _ = padding
    return xp[:, :, pt:pt + hw[0], pl:pl + hw[1]]


# --- decompositions: shared helpers -----------------------------------------------------------
# Every op in this file has a `decompose(b, node)` hook that rebuilds it from primitives a code
# generator lowers directly: elementwise ops, reductions, layout ops, matmul, one_hot, and the
# window ops im2col/col2im (ir/ops/window.py). They compute in the operand dtype with the
# same stable formulas as the references (max subtracted before exp, two-pass variance);
# f16 operands are widened to f32 first, so that sums are not accumulated in half precision.

def _up(b, v):
    return b.cast(v, to=dtypes.f32) if v.dtype == dtypes.f16 else v


def _down(b, v, dt):
    return v if v.dtype == dt else b.cast(v, to=dt)


def _window_geometry(a: dict, dilations=(1, 1)) -> dict:
    return {"kernel": a["kernel"], "strides": a["strides"], "padding": a["padding"],
            "dilations": a.get("dilations", dilations)}


def _pool_cols(b, x, a: dict, value: float):
    """im2col of x as (N, C, KH*KW, OH, OW): axis 2 runs over each window (row-major)."""
    n, c, h, w = x.shape
    oh, ow = _out_hw((h, w), a["kernel"], a["strides"], a["padding"])
    cols = b.im2col(x, value=value, **_window_geometry(a))
    return b.reshape(cols, (n, c, a["kernel"][0] * a["kernel"][1], oh, ow))


def _pool_uncols(b, cols, input_shape, a: dict):
    """col2im of (N, C, KH*KW, OH, OW) window contributions back to input_shape."""
    n, c, kk, oh, ow = cols.shape
    return b.col2im(b.reshape(cols, (n, c * kk, oh * ow)), input_shape=tuple(input_shape),
                    **_window_geometry(a))


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


def _lower_conv2d(ctx, node, out=None, epilogue=None):
    from .conv_lowering import lower_conv2d
    lower_conv2d(ctx, node, out, epilogue)


def _conv2d_gemm_shape(node):
    from .conv_lowering import conv_gemm_shape
    return conv_gemm_shape(node)


register(OpDef(
    "conv2d", Fusion.CONTRACTION, _conv2d_infer, _conv2d_ref, 2, dict(_CONV_ATTRS), _conv2d_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(outs[0].shape, ts[1].shape), ts, outs),
    doc="2-D cross-correlation, NCHW input, (K, C/groups, KH, KW) weight; zero padding "
        "(top, bottom, left, right), strides, dilations and channel groups",
    decompose=_conv2d_decompose, lower=_lower_conv2d, lower_nests_gemm=True,
    lower_epilogue=_lower_conv2d, gemm_shape=_conv2d_gemm_shape, batch_split=batch.first_input))


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


def _lower_conv2d_grad_input(ctx, node):
    from .conv_lowering import lower_conv2d_grad_input
    lower_conv2d_grad_input(ctx, node)


register(OpDef(
    "conv2d_grad_input", Fusion.CONTRACTION, _conv2d_grad_input_infer, _conv2d_grad_input_ref, 2,
    {"input_shape": Attr("ints"), **_CONV_ATTRS}, _conv2d_grad_input_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(ts[0].shape, ts[1].shape), ts, outs),
    doc="gradient of conv2d with respect to its input (a transposed convolution) given the "
        "output gradient g and the weight; input positions no window reads get zero",
    decompose=_conv2d_grad_input_decompose, lower=_lower_conv2d_grad_input, lower_nests_gemm=True))


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


def _lower_conv2d_grad_weight(ctx, node):
    from .conv_lowering import lower_conv2d_grad_weight  # imports window.py, which imports this
    lower_conv2d_grad_weight(ctx, node)


register(OpDef(
    "conv2d_grad_weight", Fusion.CONTRACTION, _conv2d_grad_weight_infer, _conv2d_grad_weight_ref,
    2, {"weight_shape": Attr("ints"), **_CONV_ATTRS}, _conv2d_grad_weight_vjp,
    lambda ts, outs, a: _io_cost(_conv_flops(ts[1].shape, outs[0].shape), ts, outs),
    doc="gradient of conv2d with respect to its weight, given the input x and the output "
        "gradient g",
    decompose=_conv2d_grad_weight_decompose, lower=_lower_conv2d_grad_weight, lower_nests_gemm=True))


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


def _lower_max_pool2d(ctx, node):
    from .pool_lowering import lower_max_pool2d  # window scans; imports this module's helpers
    lower_max_pool2d(ctx, node)


def _lower_max_pool2d_grad(ctx, node):
    from .pool_lowering import lower_max_pool2d_grad
    lower_max_pool2d_grad(ctx, node)


register(OpDef(
    "max_pool2d", Fusion.OPAQUE, _max_pool2d_infer, _max_pool2d_ref, 1, dict(_POOL_ATTRS),
    _max_pool2d_vjp,
    lambda ts, outs, a: _io_cost(_pool_flops(outs[0].shape, a["kernel"]), ts, outs),
    doc="maximum over kernel windows (NCHW); padding (top, bottom, left, right) is -inf and "
        "every window must overlap the input; NaN propagates",
    decompose=_max_pool2d_decompose, lower=_lower_max_pool2d, batch_split=batch.first_input))


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
    decompose=_max_pool2d_grad_decompose, lower=_lower_max_pool2d_grad))


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


# --- softmax and log_softmax -------------------------------------------------------------------

def _axis_infer(op: str):
    def infer(ts, a):
        (t,) = ts
        require_float(op, t)
        ax = a["axis"]
        if not 0 <= ax < t.rank:
            raise ShapeError(f"{op}: axis {ax} is out of range for {t} (axes are canonical: "
                             f"0..rank-1)")
        return t
    return infer


def _softmax_ref(x, axis):
    if x.size == 0:
        return x.copy()
    z = x.astype(_F64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))  # stable: the largest exponent is 0
    return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)


def _log_softmax_ref(x, axis):
    if x.size == 0:
        return x.copy()
    z = x.astype(_F64)
    z = z - z.max(axis=axis, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis=axis, keepdims=True))).astype(x.dtype)


def _softmax_vjp(b, n, g):
    y = n.outputs[0]
    s = b.sum(b.mul(g, y), axes=(n.attrs["axis"],), keepdims=True)
    return [b.mul(y, b.sub(g, s))]


def _log_softmax_vjp(b, n, g):
    y = n.outputs[0]
    s = b.sum(g, axes=(n.attrs["axis"],), keepdims=True)
    return [b.sub(g, b.mul(b.exp(y), s))]


def _shifted(b, x, axis: int):
    """x - max(x) along axis (stable: the largest exponent becomes 0)."""
    return b.sub(x, b.max(x, axes=(axis,), keepdims=True))


def _softmax_decompose(b, n):
    x, ax = n.inputs[0], n.attrs["axis"]
    if x.shape[ax] == 0:  # nothing to normalise (and no maximum to take)
        return [x]
    e = b.exp(_shifted(b, _up(b, x), ax))
    s = b.sum(e, axes=(ax,), keepdims=True)
    return [_down(b, b.mul(e, b.div(b.scalar(1.0, s), s)), x.dtype)]  # one division per row


def _log_softmax_decompose(b, n):
    x, ax = n.inputs[0], n.attrs["axis"]
    if x.shape[ax] == 0:
        return [x]
    z = _shifted(b, _up(b, x), ax)
    lse = b.log(b.sum(b.exp(z), axes=(ax,), keepdims=True))
    return [_down(b, b.sub(z, lse), x.dtype)]


def _softmax_cost(per_element: int, per_row: int):
    def cost(ts, outs, a):
        t = ts[0]
        rows = t.size // t.shape[a["axis"]] if t.shape[a["axis"]] else 0
        return _io_cost(per_element * t.size + per_row * rows, ts, outs)
    return cost


_SOFTMAX_ATTRS = {"axis": Attr("int")}
# Softmax per element: max, subtract, exp, sum, multiply by the row's reciprocal; per row: 1/s.
register(OpDef("softmax", Fusion.REDUCTION, _axis_infer("softmax"), _softmax_ref, 1,
               dict(_SOFTMAX_ATTRS), _softmax_vjp, _softmax_cost(4 + _EXP_FLOPS, _DIV_FLOPS),
               doc="exp(x - max) / sum(exp(x - max)) along one axis",
               decompose=_softmax_decompose))
# log_softmax per element: max, subtract, exp, sum, subtract; per row: log.
register(OpDef("log_softmax", Fusion.REDUCTION, _axis_infer("log_softmax"), _log_softmax_ref, 1,
               dict(_SOFTMAX_ATTRS), _log_softmax_vjp, _softmax_cost(4 + _EXP_FLOPS, _EXP_FLOPS),
               doc="x - max - log(sum(exp(x - max))) along one axis",
               decompose=_log_softmax_decompose))


# --- one_hot and softmax cross-entropy -------------------------------------------------------

def _check_labels(op: str, labels: np.ndarray, depth: int) -> None:
    bad = (labels < 0) | (labels >= depth)
    if bad.any():
        pos = tuple(int(i) for i in np.argwhere(bad)[0])
        raise GraphcError(f"{op}: label {int(labels[pos])} at index {pos} is out of range: "
                          f"labels must lie in [0, {depth}) for depth {depth}")


def _one_hot_infer(ts, a):
    (t,) = ts
    require_int("one_hot", t, "label tensor")
    if a["depth"] < 0:
        raise AttrError(f"one_hot: depth={a['depth']} must be >= 0")
    return TensorType(t.shape + (a["depth"],), a["dtype"])


def _one_hot_ref(labels, depth, dtype):
    _check_labels("one_hot", labels, depth)
    return (labels[..., None] == np.arange(depth)).astype(dtypes.dtype(dtype).np_dtype)


def _lower_one_hot(ctx, node):
    """out[i, j] = (labels[i] == j); a label outside [0, depth) is reported after the call."""
    from .. import kernel as K
    from .. import lowering as L
    labels, out = node.inputs[0], node.outputs[0]
    depth = node.attrs["depth"]
    lb, ob = ctx.buf(labels), ctx.buf(out)

    def body(vs):
        i, j = vs
        lab = K.Cast(K.Load(lb, i, labels.dtype), dtypes.i64)
        _, flag = ctx.check_index(lab, depth, "one_hot label")
        hit = K.Compare("eq", lab, j)
        return [flag, K.Store(ob, L.linear_index([i, j], [depth, 1]), K.Cast(hit, out.dtype))]
    ctx.kernel(ctx.loops([labels.type.size, depth], body), [lb], [ob, ctx.status])


register(OpDef(
    "one_hot", Fusion.OPAQUE, _one_hot_infer, _one_hot_ref, 1,
    {"depth": Attr("int"), "dtype": Attr("dtype", "f32")}, None,
    lambda ts, outs, a: _io_cost(outs[0].size, ts, outs), nondiff_inputs=(0,), lower=_lower_one_hot,
    doc="labels[..., None] == arange(depth) as dtype; a label outside [0, depth) is an error. "
        "Opaque to fusion: its output has one more axis than its input, which elementwise "
        "ops never have"))


def _ce_infer(ts, a):
    op = "softmax_cross_entropy"
    logits, labels = ts
    require_float(op, logits)
    require_int(op, labels, "label tensor")
    if logits.rank != 2:
        raise ShapeError(f"{op}: logits must have shape (N, C), got {logits}")
    n, c = logits.shape
    if labels.shape != (n,):
        raise ShapeError(f"{op}: labels {labels} should have shape ({n},) to match logits "
                         f"{logits}")
    if c == 0:
        raise ShapeError(f"{op}: logits {logits} have no classes")
    return logits.with_shape((n,) if a["reduction"] == "none" else ())


def _ce_ref(logits, labels, reduction):
    n, c = logits.shape
    _check_labels("softmax_cross_entropy", labels, c)
    z = logits.astype(_F64)
    m = z.max(axis=1)
    lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))  # log-sum-exp, stable
    loss = lse - z[np.arange(n), labels]
    if reduction == "sum":
        loss = loss.sum()
    elif reduction == "mean":
        loss = loss.sum() / n if n else np.float64(np.nan)  # mean of no examples is NaN
    return np.asarray(loss).astype(logits.dtype)


def _ce_vjp(b, n, g):
    logits, labels = n.inputs
    rows, classes = logits.shape
    d = b.sub(b.softmax(logits, axis=1), b.one_hot(labels, depth=classes, dtype=logits.dtype))
    red = n.attrs["reduction"]
    if red == "none":
        g = b.reshape(g, (rows, 1))
    elif red == "mean":
        g = b.div(g, b.scalar(float(max(rows, 1)), g))
    return [b.mul(d, g), None]


def _ce_decompose(b, n):
    logits, labels = n.inputs
    rows, classes = logits.shape
    z = _shifted(b, _up(b, logits), 1)                              # logits - max
    lse = b.log(b.sum(b.exp(z), axes=(1,), keepdims=False))         # log-sum-exp - max
    # z[i, labels[i]]: select with a one-hot mask (one_hot checks the label range, as the
    # reference does); the other terms are -0.0, so the sum is the picked value exactly,
    # and a -inf logit elsewhere in the row does not turn it into NaN as 0 * -inf would.
    hot = b.one_hot(labels, depth=classes, dtype=dtypes.bool_)
    picked = b.sum(b.where(hot, z, b.scalar(-0.0, z)), axes=(1,), keepdims=False)
    loss = b.sub(lse, picked)                                       # (N,)
    red = n.attrs["reduction"]
    if red != "none":
        loss = b.sum(loss, axes=(0,), keepdims=False)
        if red == "mean":  # 0 / 0 is NaN for an empty batch, as in the reference
            loss = b.div(loss, b.scalar(float(rows), loss))
    return [_down(b, loss, logits.dtype)]


def _ce_cost(ts, outs, a):
    n, c = ts[0].shape
    # Per logit: max, subtract, exp, sum; per row: log, add max, subtract picked logit; + reduce.
    return _io_cost(n * c * (3 + _EXP_FLOPS) + n * (_EXP_FLOPS + 3), ts, outs)


register(OpDef(
    "softmax_cross_entropy", Fusion.REDUCTION, _ce_infer, _ce_ref, 2,
    {"reduction": Attr("str", "mean", ("mean", "sum", "none"))}, _ce_vjp, _ce_cost,
    nondiff_inputs=(1,),
    doc="-log softmax(logits)[i, labels[i]] per row (N, C) logits, int labels (N,); reduced "
        "by mean (default), sum, or none (shape (N,)); a label outside [0, C) is an error",
    decompose=_ce_decompose))


# --- normalisation -----------------------------------------------------------------------------

_NORM_ATTRS = {"axis": Attr("int", 1), "eps": Attr("float", 1e-5)}


def _bshape(rank: int, axis: int, c: int) -> tuple[int, ...]:
    return tuple(c if i == axis else 1 for i in range(rank))


def _other_axes(rank: int, axis: int) -> tuple[int, ...]:
    return tuple(i for i in range(rank) if i != axis)


def _check_norm(op: str, x: TensorType, params, names, a: dict):
    require_float(op, x)
    dt = same_dtype(op, [x, *params])
    ax = a["axis"]
    if not 0 <= ax < x.rank:
        raise ShapeError(f"{op}: channel axis {ax} is out of range for input {x} (axes are "
                         "canonical: 0..rank-1)")
    if a["eps"] < 0:
        raise AttrError(f"{op}: eps={a['eps']} must be >= 0")
    c = x.shape[ax]
    for name, t in zip(names, params):
        if t.shape != (c,):
            raise ShapeError(f"{op}: {name} has shape {_fs(t.shape)} but input {x} has {c} "
                             f"channels on axis {ax}; expected ({c},)")
    return dt, c


def _bn_infer(ts, a):
    x = ts[0]
    dt, c = _check_norm("batch_norm", x, ts[1:], ("gamma", "beta"), a)
    if x.size == 0 and c != 0:
        raise ShapeError(f"batch_norm: input {x} has no elements per channel to take batch "
                         "statistics over")
    return [x, TensorType((c,), dt), TensorType((c,), dt)]


def _bn_ref(x, gamma, beta, axis, eps):
    red = _other_axes(x.ndim, axis)
    bs = _bshape(x.ndim, axis, x.shape[axis])
    xd = x.astype(_F64)
    mean = xd.mean(axis=red, keepdims=True)
    xc = xd - mean
    var = (xc * xc).mean(axis=red, keepdims=True)  # two-pass, biased
    y = xc / np.sqrt(var + eps) * gamma.astype(_F64).reshape(bs) + beta.astype(_F64).reshape(bs)
    return y.astype(x.dtype), mean.reshape(-1).astype(x.dtype), var.reshape(-1).astype(x.dtype)


def _bn_vjp(b, n, gs):
    gy, gmean, gvar = gs
    x, gamma, _ = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    rank, c = x.type.rank, x.shape[ax]
    red = _other_axes(rank, ax)
    count = max(prod(x.shape[i] for i in red), 1)
    bs = _bshape(rank, ax, c)
    xc = b.sub(x, b.reshape(n.outputs[1], bs))
    gx = ggamma = gbeta = None
    if gy is not None:
        rstd = b.rsqrt(b.add(b.reshape(n.outputs[2], bs), b.scalar(eps, x)))
        xhat = b.mul(xc, rstd)
        gbeta = b.sum(gy, axes=red, keepdims=False)
        ggamma = b.sum(b.mul(gy, xhat), axes=red, keepdims=False)
        gxhat = b.mul(gy, b.reshape(gamma, bs))
        # d xhat/dx through the batch mean and variance:
        # gx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat))
        centred = b.sub(gxhat, b.mean(gxhat, axes=red, keepdims=True))
        proj = b.mul(xhat, b.mean(b.mul(gxhat, xhat), axes=red, keepdims=True))
        gx = b.mul(rstd, b.sub(centred, proj))
    if gmean is not None:  # mean = sum(x) / count
        t = b.broadcast(b.div(b.reshape(gmean, bs), b.scalar(float(count), gmean)), x.shape)
        gx = t if gx is None else b.add(gx, t)
    if gvar is not None:  # var = mean((x - mean)^2); the path through mean sums to zero
        t = b.mul(xc, b.mul(b.reshape(gvar, bs), b.scalar(2.0 / count, gvar)))
        gx = t if gx is None else b.add(gx, t)
    return [gx, ggamma, gbeta]


def _centred(b, x, axes: tuple[int, ...]):
    """(mean, x - mean) over axes, keepdims, accurate to the data's spread, not its size.

    The data is first shifted by each group's first element (exact or nearly so, by
    Sterbenz's lemma, for values of similar size), so the mean is taken of deviations and
    x - mean is (x - x0) - mean(x - x0): the mean is carried in two numbers. With f32 data of
    mean 1e4 and spread 3, a plain mean's rounding (~5e-4) alone would shift every
    normalised value by ~1e-4; this keeps it to a few ulps. (The float64 references take a
    plain mean: on such data they are the less accurate, by ~eps64 * mean / spread.)
    """
    if any(x.shape[a] == 0 for a in axes):
        mean = b.mean(x, axes=axes, keepdims=True)
        return mean, b.sub(x, mean)
    rank = x.type.rank
    first = b.slice(x, starts=(0,) * rank, steps=(1,) * rank,
                    stops=tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    # An infinite or NaN first element would poison every deviation: shift by 0 instead.
    first = b.where(b.less(b.abs(first), b.scalar(np.inf, first)), first, b.scalar(0.0, first))
    shifted = b.sub(x, first)
    mean = b.mean(shifted, axes=axes, keepdims=True)
    return b.add(mean, first), b.sub(shifted, mean)


def _normalize(b, xc, var, eps: float, gamma, beta):
    """xc * (1 / sqrt(var + eps)) * gamma + beta: one division per row or channel, a
    multiplication per element (within an ulp of dividing each element)."""
    inv = b.div(b.scalar(1.0, var), b.sqrt(b.add(var, b.scalar(eps, var))))
    return b.add(b.mul(b.mul(xc, inv), gamma), beta)


def _bn_decompose(b, n):
    x, gamma, beta = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    red, bs, c = _other_axes(x.type.rank, ax), _bshape(x.type.rank, ax, x.shape[ax]), x.shape[ax]
    xu = _up(b, x)
    mean, xc = _centred(b, xu, red)
    var = b.mean(b.mul(xc, xc), axes=red, keepdims=True)  # two-pass, biased
    y = _normalize(b, xc, var, eps, b.reshape(_up(b, gamma), bs), b.reshape(_up(b, beta), bs))
    return [_down(b, y, x.dtype), _down(b, b.reshape(mean, (c,)), x.dtype),
            _down(b, b.reshape(var, (c,)), x.dtype)]


def _bn_cost(ts, outs, a):
    x = ts[0]
    c = x.shape[a["axis"]]
    # Per element: sum for the mean, (sub, square, add) for the variance, (sub, mul) to
    # normalise, (mul, add) for the affine. Per channel: two divisions by the count, an rsqrt.
    return _io_cost(8 * x.size + c * (2 * _DIV_FLOPS + _RSQRT_FLOPS + 1), ts, outs)


register(OpDef(
    "batch_norm", Fusion.REDUCTION, _bn_infer, _bn_ref, 3, dict(_NORM_ATTRS), _bn_vjp, _bn_cost,
    num_outputs=3,
    doc="training-mode batch normalisation over every axis but `axis` (the channel axis): "
        "outputs y = (x - mean) / sqrt(var + eps) * gamma + beta, the batch mean (C,) and the "
        "biased batch variance (C,)",
    decompose=_bn_decompose))


def _bni_infer(ts, a):
    _check_norm("batch_norm_inference", ts[0], ts[1:],
                ("gamma", "beta", "running_mean", "running_var"), a)
    return ts[0]


def _bni_ref(x, gamma, beta, running_mean, running_var, axis, eps):
    bs = _bshape(x.ndim, axis, x.shape[axis])
    f = lambda t: t.astype(_F64).reshape(bs)  # noqa: E731
    y = (x.astype(_F64) - f(running_mean)) / np.sqrt(f(running_var) + eps) * f(gamma) + f(beta)
    return y.astype(x.dtype)


def _bni_decompose(b, n):
    x, gamma, beta, rmean, rvar = n.inputs
    bs = _bshape(x.type.rank, n.attrs["axis"], x.shape[n.attrs["axis"]])
    f = lambda t: b.reshape(_up(b, t), bs)  # noqa: E731
    xc = b.sub(_up(b, x), f(rmean))
    return [_down(b, _normalize(b, xc, f(rvar), n.attrs["eps"], f(gamma), f(beta)), x.dtype)]


def _bni_vjp(b, n, g):
    x, gamma, _, rmean, rvar = n.inputs
    ax, eps = n.attrs["axis"], n.attrs["eps"]
    rank, c = x.type.rank, x.shape[ax]
    red = _other_axes(rank, ax)
    bs = _bshape(rank, ax, c)
    s = b.rsqrt(b.add(b.reshape(rvar, bs), b.scalar(eps, x)))       # (var + eps)^-1/2
    xc = b.sub(x, b.reshape(rmean, bs))
    scale = b.mul(b.reshape(gamma, bs), s)
    gbeta = b.sum(g, axes=red, keepdims=False)
    g_xc = b.sum(b.mul(g, xc), axes=red, keepdims=False)             # sum(g * (x - mean))
    s_c = b.reshape(s, (c,))
    ggamma = b.mul(g_xc, s_c)
    gmean = b.neg(b.mul(gbeta, b.reshape(scale, (c,))))
    s3 = b.mul(s_c, b.mul(s_c, s_c))                                  # d s / d var = -s^3 / 2
    gvar = b.mul(b.mul(g_xc, gamma), b.mul(s3, b.scalar(-0.5, g)))
    return [b.mul(g, scale), ggamma, gbeta, gmean, gvar]


register(OpDef(
    "batch_norm_inference", Fusion.REDUCTION, _bni_infer, _bni_ref, 5, dict(_NORM_ATTRS),
    _bni_vjp,
    # Per element: (sub, mul, mul, add); per channel: add eps and rsqrt.
    lambda ts, outs, a: _io_cost(4 * ts[0].size + ts[1].size * (1 + _RSQRT_FLOPS), ts, outs),
    doc="batch normalisation with given statistics: (x - running_mean) / sqrt(running_var + "
        "eps) * gamma + beta, per channel on `axis`",
    decompose=_bni_decompose))


def _ln_infer(ts, a):
    op = "layer_norm"
    x, gamma, beta = ts
    require_float(op, x)
    same_dtype(op, ts)
    if a["eps"] < 0:
        raise AttrError(f"{op}: eps={a['eps']} must be >= 0")
    axes = check_axes(op, a["axes"], x.rank)
    k = len(axes)
    if k == 0 or axes != tuple(range(x.rank - k, x.rank)):
        raise ShapeError(f"{op}: axes {axes} must be trailing axes of input {x}, e.g. "
                         f"({max(x.rank - 1, 0)},)")
    want = x.shape[x.rank - k:]
    for name, t in (("gamma", gamma), ("beta", beta)):
        if t.shape != want:
            raise ShapeError(f"{op}: {name} has shape {_fs(t.shape)} but the normalised axes "
                             f"{axes} of input {x} have shape {_fs(want)}")
    if prod(want) == 0:
        raise ShapeError(f"{op}: the normalised axes {axes} of input {x} hold no elements")
    return x


def _ln_ref(x, gamma, beta, axes, eps):
    xd = x.astype(_F64)
    mean = xd.mean(axis=axes, keepdims=True)
    xc = xd - mean
    var = (xc * xc).mean(axis=axes, keepdims=True)
    return (xc / np.sqrt(var + eps) * gamma.astype(_F64) + beta.astype(_F64)).astype(x.dtype)


def _ln_vjp(b, n, g):
    x, gamma, _ = n.inputs
    axes, eps = n.attrs["axes"], n.attrs["eps"]
    xc = b.sub(x, b.mean(x, axes=axes, keepdims=True))
    var = b.mean(b.mul(xc, xc), axes=axes, keepdims=True)
    rstd = b.rsqrt(b.add(var, b.scalar(eps, x)))
    xhat = b.mul(xc, rstd)
    gxhat = b.mul(g, gamma)
    centred = b.sub(gxhat, b.mean(gxhat, axes=axes, keepdims=True))
    proj = b.mul(xhat, b.mean(b.mul(gxhat, xhat), axes=axes, keepdims=True))
    gx = b.mul(rstd, b.sub(centred, proj))
    return [gx, b.sum_to(b.mul(g, xhat), gamma.shape), b.sum_to(g, gamma.shape)]


def _ln_decompose(b, n):
    x, gamma, beta = n.inputs
    axes = n.attrs["axes"]
    _, xc = _centred(b, _up(b, x), axes)
    var = b.mean(b.mul(xc, xc), axes=axes, keepdims=True)  # two-pass, biased
    # gamma and beta have the trailing axes' shape: numpy broadcasting lines them up.
    return [_down(b, _normalize(b, xc, var, n.attrs["eps"], _up(b, gamma), _up(b, beta)),
                  x.dtype)]


def _ln_cost(ts, outs, a):
    x = ts[0]
    group = prod(x.shape[i] for i in a["axes"])
    rows = x.size // group if group else 0
    # As batch_norm: 8 per element; per normalised row: two divisions and an rsqrt.
    return _io_cost(8 * x.size + rows * (2 * _DIV_FLOPS + _RSQRT_FLOPS + 1), ts, outs)


register(OpDef(
    "layer_norm", Fusion.REDUCTION, _ln_infer, _ln_ref, 3,
    {"axes": Attr("ints"), "eps": Attr("float", 1e-5)}, _ln_vjp, _ln_cost,
    doc="normalise over the trailing `axes` (biased variance), then scale by gamma and shift "
        "by beta, which have the shape of those axes",
    decompose=_ln_decompose))
