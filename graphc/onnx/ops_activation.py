"""ONNX activations that graphc builds from registry ops at import: Elu, Selu, Celu, PRelu,
HardSwish, Mish, Softsign, ThresholdedRelu, Shrink, Swish, Hardmax. Their gradients come
from the parts. Exponential branches read min(x, 0), so the branch a `where` discards
never overflows (and never turns a zero gradient into NaN)."""
from __future__ import annotations

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import expm1, iota, k


def _float_input(ctx: NodeContext) -> Value:
    x = ctx.x(0)
    if not x.dtype.is_float:
        ctx.unsupported(f"{ctx.op} of {x.dtype} tensors (ONNX defines it for floats)")
    return x


def _neg_part_expm1(ctx: NodeContext, x: Value, scale: float = 1.0) -> Value:
    """expm1(min(x, 0) / scale)."""
    b = ctx.b
    xn = b.minimum(x, k(b, 0.0, x))
    if scale != 1.0:
        xn = b.div(xn, k(b, scale, x))
    return expm1(b, xn)


@converter("Elu")
def _elu(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    neg = b.mul(k(b, alpha, x), _neg_part_expm1(ctx, x))
    return [b.where(b.less(x, k(b, 0.0, x)), neg, x)]


@converter("Selu")
def _selu(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    neg = b.mul(k(b, alpha, x), _neg_part_expm1(ctx, x))
    return [b.mul(k(b, gamma, x), b.where(b.greater(x, k(b, 0.0, x)), x, neg))]


@converter("Celu")
def _celu(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    # max(0, x) + min(0, alpha * expm1(x / alpha)); the second term is 0 for x >= 0.
    neg = b.mul(k(b, alpha, x), _neg_part_expm1(ctx, x, alpha))
    return [b.add(b.maximum(x, k(b, 0.0, x)), b.minimum(neg, k(b, 0.0, x)))]


@converter("PRelu")
def _prelu(ctx: NodeContext):
    x, slope = ctx.x(0), ctx.x(1)
    b = ctx.b
    try:
        out = tuple(np.broadcast_shapes(x.shape, slope.shape))
    except ValueError:
        out = None
    if out != x.shape:
        from .errors import OnnxError
        raise OnnxError(f"PRelu: slope {slope.type} does not broadcast to X {x.type}")
    if slope.dtype != x.dtype:
        ctx.unsupported(f"slope of dtype {slope.dtype} for X of dtype {x.dtype}")
    return [b.where(b.less(x, k(b, 0, x)), b.mul(x, slope), x)]


@converter("HardSwish")
def _hard_swish(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    gate = b.add(b.mul(x, k(b, 1.0 / 6.0, x)), k(b, 0.5, x))
    gate = b.minimum(b.maximum(gate, k(b, 0.0, x)), k(b, 1.0, x))
    return [b.mul(x, gate)]


def _softplus(ctx: NodeContext, x: Value) -> Value:
    b = ctx.b  # max(x, 0) + log(1 + exp(-|x|)): never overflows
    tail = b.log(b.add(k(b, 1.0, x), b.exp(b.neg(b.abs(x)))))
    return b.add(b.maximum(x, k(b, 0.0, x)), tail)


@converter("Mish")
def _mish(ctx: NodeContext):
    x = _float_input(ctx)
    return [ctx.b.mul(x, ctx.b.tanh(_softplus(ctx, x)))]


@converter("Softsign")
def _softsign(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    return [b.div(x, b.add(k(b, 1.0, x), b.abs(x)))]


@converter("ThresholdedRelu")
def _thresholded_relu(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    return [b.where(b.greater(x, k(b, alpha, x)), x, k(b, 0.0, x))]


@converter("Shrink")
def _shrink(ctx: NodeContext):
    x = ctx.x(0)
    if x.dtype.is_bool:
        ctx.unsupported("Shrink of bool tensors")
    b = ctx.b
    bias, lambd = float(ctx.attr("bias", 0.0)), float(ctx.attr("lambd", 0.5))
    if x.dtype.is_int and (bias != int(bias)):
        ctx.unsupported(f"bias={bias} for an integer tensor")
    lam = b.const(np.asarray(lambd), dtypes.f64)
    xf = x if x.dtype == dtypes.f64 else b.cast(x, to=dtypes.f64)  # compare as ONNX does
    lo, hi = b.less(xf, b.neg(lam)), b.greater(xf, lam)
    bb = k(b, bias if x.dtype.is_float else int(bias), x)
    return [b.where(lo, b.add(x, bb), b.where(hi, b.sub(x, bb), k(b, 0, x)))]


@converter("Swish")
def _swish(ctx: NodeContext):
    x = _float_input(ctx)
    b = ctx.b
    alpha = float(ctx.attr("alpha", 1.0))
    z = x if alpha == 1.0 else b.mul(x, k(b, alpha, x))
    return [b.mul(x, b.sigmoid(z))]


@converter("Hardmax", since=13)
def _hardmax(ctx: NodeContext):
    x = ctx.x(0)
    return [_hardmax_axis(ctx, x, ctx.axis(ctx.attr("axis", -1), x.type.rank))]


@converter("Hardmax", until=12)
def _hardmax_2d(ctx: NodeContext):
    """Hardmax before opset 13: over the input flattened to 2-D at `axis` (default 1)."""
    x = ctx.x(0)
    axis = ctx.attr("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis
    if not 0 <= axis <= x.type.rank:
        ctx.unsupported(f"axis {axis} for rank {x.type.rank}")
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = ctx.b.reshape(x, (rows, x.type.size // max(rows, 1)))
    return [ctx.b.reshape(_hardmax_axis(ctx, flat, 1), x.shape)]


def _hardmax_axis(ctx: NodeContext, x: Value, axis: int) -> Value:
    b = ctx.b
    rank = x.type.rank
    if x.type.size == 0:
        return x
    first = b.argmax(x, axis=axis, keepdims=True)  # the first maximum, as ONNX asks
    if first.dtype != dtypes.i64:
        first = b.cast(first, to=dtypes.i64)
    hot = b.equal(first, iota(b, x.shape[axis], axis, rank))
    one = b.const(np.ones((), x.dtype.np_dtype), x.dtype)
    zero = b.const(np.zeros((), x.dtype.np_dtype), x.dtype)
    return b.where(hot, one, zero)
