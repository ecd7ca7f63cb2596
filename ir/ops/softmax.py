"""Softmax and the losses built on it: softmax, log_softmax, one_hot and softmax
cross-entropy.

The decompositions subtract the row maximum before exp, as the float64 references do.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from ..errors import AttrError, GraphcError, ShapeError
from ..registry import Attr, Fusion, OpDef, register
from ..types import TensorType
from ._common import require_float, require_int
from ._nn_common import _F64, _EXP_FLOPS, _DIV_FLOPS, _io_cost, _up, _down

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
