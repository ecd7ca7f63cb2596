"""ONNX reductions onto graphc's sum/mean/max/min (and compositions for the L1, L2,
log-sum, log-sum-exp and sum-of-squares variants), plus ArgMax."""
from __future__ import annotations

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
    if ctx.op in _DIRECT:
        if x.dtype.is_bool:
            ctx.unsupported("reductions of bool tensors")
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


@converter("ArgMax")
def _argmax(ctx: NodeContext):
    x = ctx.x(0)
    ctx.only_attrs(select_last_index=0)
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    y = ctx.b.argmax(x, axis=axis, keepdims=bool(ctx.attr("keepdims", 1)))
    return [y if y.dtype == dtypes.i64 else ctx.b.cast(y, to=dtypes.i64)]
