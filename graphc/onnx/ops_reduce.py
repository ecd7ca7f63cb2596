"""ONNX reductions onto graphc's sum/mean/max/min (and compositions for the L1, L2,
log-sum, log-sum-exp and sum-of-squares variants), plus ArgMax.

Older forms: the axes are an attribute before opset 13 (ReduceSum) or 18 (the others),
read by `ctx.ints_from` either way; TopK's k is an attribute before opset 10, handed on
as TopK-10's input (when graphc imports TopK)."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes
from .context import NodeContext, converter

_DIRECT = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min"}
_COMPOSED = ("ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp")


def _reduce_axes(ctx: NodeContext, rank: int) -> tuple[int, ...] | None:
    """The reduced axes, or None when the node is a no-op (noop_with_empty_axes)."""
    axes = ctx.ints_from("axes", 1, "axes")
    if not axes:
        return None if ctx.attr("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({ctx.axis(a, rank) for a in axes}))


@converter(*_DIRECT, *_COMPOSED)
def _reduce(ctx: NodeContext):
    x = ctx.x(0)
    axes = _reduce_axes(ctx, x.type.rank)
    keep = bool(ctx.attr("keepdims", 1))
    b = ctx.b
    if axes is None:
        return [x]
    if any(x.shape[a] == 0 for a in axes):
        return [_empty_reduction(ctx, x, axes, keep)]
    if ctx.op in _DIRECT:
        if x.dtype.is_bool:  # any / all: reduce as 0/1 integers
            y = b.op(_DIRECT[ctx.op], b.cast(x, to=dtypes.i32), axes=axes, keepdims=keep)
            return [b.cast(y, to=dtypes.bool_)]
        return [b.op(_DIRECT[ctx.op], x, axes=axes, keepdims=keep)]
    if not x.dtype.is_float:
        ctx.unsupported(f"{ctx.op} of {x.dtype} tensors")
    if ctx.op == "ReduceSumSquare":
        return [b.sum(b.mul(x, x), axes=axes, keepdims=keep)]
    if ctx.op == "ReduceL1":
        return [b.sum(b.abs(x), axes=axes, keepdims=keep)]
    if ctx.op == "ReduceL2":
        return [b.sqrt(b.sum(b.mul(x, x), axes=axes, keepdims=keep))]
    if ctx.op == "ReduceLogSum":
        return [b.log(b.sum(x, axes=axes, keepdims=keep))]
    # log-sum-exp, shifted by the maximum so it never overflows
    m = b.max(x, axes=axes, keepdims=True)
    s = b.log(b.sum(b.exp(b.sub(x, m)), axes=axes, keepdims=True))
    y = b.add(s, m)
    if not keep:
        y = b.squeeze(y, axes=axes)
    return [y]


def _empty_reduction(ctx: NodeContext, x, axes: tuple[int, ...], keep: bool):
    """A reduction over no elements is its identity (ONNX: 0 for sums, -inf for max...)."""
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
    np_dt = x.dtype.np_dtype
    big = np.inf if x.dtype.is_float else (True if x.dtype.is_bool else np.iinfo(np_dt).max)
    small = -np.inf if x.dtype.is_float else (False if x.dtype.is_bool else np.iinfo(np_dt).min)
    fill = {"ReduceMax": small, "ReduceMin": big, "ReduceMean": np.nan,
            "ReduceLogSum": -np.inf, "ReduceLogSumExp": -np.inf}.get(ctx.op, 0)
    return ctx.b.const(np.full(shape, fill, dtype=np_dt), x.dtype)


@converter("ArgMax")
def _argmax(ctx: NodeContext):
    x = ctx.x(0)
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    keep = bool(ctx.attr("keepdims", 1))
    b = ctx.b
    n = x.shape[axis]
    if ctx.attr("select_last_index", 0):  # the first maximum of the reversed axis
        rev = b.const(np.arange(n - 1, -1, -1, dtype=np.int64), dtypes.i64)
        y = b.argmax(b.gather(x, rev, axis=axis), axis=axis, keepdims=keep)
        y = b.sub(b.const(np.asarray(n - 1), y.dtype), y)
    else:
        y = b.argmax(x, axis=axis, keepdims=keep)
    return [y if y.dtype == dtypes.i64 else b.cast(y, to=dtypes.i64)]


@converter("TopK", until=9, needs=("TopK",))
def _topk_1(ctx: NodeContext):
    """TopK-1: k is an attribute; TopK-10 takes it as an input (largest and sorted)."""
    k = ctx.b.const(np.array([int(ctx.attr("k"))], np.int64), dtypes.i64)
    return ctx.delegate("TopK", 10, inputs=[ctx.x(0), k], drop=("k",))
