"""ONNX NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss from registry ops at import.

loss[n, d...] = -input[n, target[n, d...], d...] * weight[target], 0 where target equals
ignore_index; `mean` divides the sum by the sum of the weights that count (by their number
without weights), `sum` sums, `none` keeps the shape of target. The picked entries come
from one flat `gather` (run-time range-checked: a target outside [0, C) that is not
ignore_index is an error); SoftmaxCrossEntropyLoss is the same on log_softmax over axis 1,
and its optional second output is that log-probability. Gradients come from the parts.
"""
from __future__ import annotations

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import k
from .errors import OnnxError
from .ops_index import _elements_index


def _nll(ctx: NodeContext, x: Value, target: Value, weight: Value | None) -> Value:
    b = ctx.b
    if x.type.rank < 2:
        raise OnnxError(f"{ctx.op}: the input {x.type} must be (N, C, d...)")
    n, c = x.shape[:2]
    if target.shape != (n,) + x.shape[2:]:
        raise OnnxError(f"{ctx.op}: target {target.type} must have shape "
                        f"{[n] + list(x.shape[2:])} for input {x.type}")
    if not target.dtype.is_int:
        raise OnnxError(f"{ctx.op}: target must be integers, got {target.type}")
    if weight is not None:
        ctx.expect_shape(weight, (c,), "the weight (one per class)")
        if weight.dtype != x.dtype:
            weight = b.cast(weight, to=x.dtype)
    t = target if target.dtype == dtypes.i64 else b.cast(target, to=dtypes.i64)
    ignore = ctx.attr("ignore_index", None)
    keep = None
    if ignore is not None:
        keep = b.not_equal(t, b.const(np.asarray(int(ignore)), dtypes.i64))
        t = b.where(keep, t, b.const(np.asarray(0), dtypes.i64))  # ignore_index may be any value
    shape = (n, 1) + x.shape[2:]
    lin = _elements_index(ctx, x.shape, b.reshape(t, shape), 1, wrap=False)
    picked = b.reshape(b.gather(b.reshape(x, (x.type.size,)), lin, axis=0), t.shape)
    w = b.gather(weight, t, axis=0) if weight is not None else None
    if keep is not None:
        w = b.where(keep, w if w is not None else k(b, 1.0, x), k(b, 0.0, x))
    loss = b.neg(picked) if w is None else b.mul(b.neg(picked), w)
    red = ctx.attr("reduction", "mean")
    axes = tuple(range(loss.type.rank))
    if red == "none":
        return loss
    if red not in ("sum", "mean"):
        raise OnnxError(f"{ctx.op}: reduction={red!r} (none, sum or mean)")
    total = b.sum(loss, axes=axes, keepdims=False)
    if red == "sum":
        return total
    if w is None:
        return b.div(total, k(b, float(loss.type.size), total))
    if w.shape != loss.shape:
        w = b.broadcast(w, loss.shape)
    return b.div(total, b.sum(w, axes=axes, keepdims=False))


def _float(ctx: NodeContext) -> Value:
    x = ctx.x(0)
    if not x.dtype.is_float:
        raise OnnxError(f"{ctx.op}: the input must be floats, got {x.type}")
    return x


@converter("NegativeLogLikelihoodLoss")
def _nll_loss(ctx: NodeContext):
    return [_nll(ctx, _float(ctx), ctx.x(1), ctx.opt(2))]


@converter("SoftmaxCrossEntropyLoss")
def _sce_loss(ctx: NodeContext):
    x = _float(ctx)
    if x.type.rank < 2:
        raise OnnxError(f"{ctx.op}: the scores {x.type} must be (N, C, d...)")
    logp = ctx.b.log_softmax(x, axis=1)
    return [_nll(ctx, logp, ctx.x(1), ctx.opt(2)), logp]
