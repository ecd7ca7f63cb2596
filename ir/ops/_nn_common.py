"""Helpers shared by the neural-network op families (conv.py, pool.py, softmax.py, norm.py)
and the window ops (window.py): NCHW window geometry, the numpy window views the references
use, f16 widening for decompositions, and the compulsory-traffic cost.

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

Decompositions. Every nn op except one_hot is composite: its ``decompose`` hook rebuilds it
from primitives (elementwise ops, reductions, layout ops, matmul, one_hot and the window ops
im2col/col2im of ir/ops/window.py) for backends without a dedicated kernel; see
passes/legalize.py. They compute in the operand dtype (f16 widened to f32) with the
references' stable formulas, so they match the references to rounding: exactly for the
selections (max_pool2d, max_pool2d_grad, max_pool2d_select), and within a few ulps of the
result's scale in float64 elsewhere.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import dtypes
from ..errors import AttrError, ShapeError
from ..registry import Cost
from ..types import TensorType, format_shape as _fs
from ._common import require_float, same_dtype

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
# Every nn op has a `decompose(b, node)` hook that rebuilds it from primitives a code
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
