"""Elementwise ONNX ops: unary math and activations, broadcasting binary ops, comparisons,
Max/Min/Sum/Mean over any number of inputs, Clip and Where. ONNX (from opset 7) and graphc
share numpy's broadcasting rules, so binary ops map one to one.

Older forms: Max/Min/Sum/Mean do not broadcast before opset 8; Clip's bounds are
attributes before opset 11; Not has had one form since opset 1."""
from __future__ import annotations

from ..ir import dtypes
from .context import NodeContext, converter
from .errors import OnnxError

_UNARY = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Exp": "exp",
          "Log": "log", "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs", "Sin": "sin", "Cos": "cos",
          "Sign": "sign"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "equal", "Less": "less",
           "Greater": "greater", "LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
           "And": "logical_and", "Or": "logical_or"}


@converter(*_UNARY)
def _unary(ctx: NodeContext):
    x = ctx.x(0)
    if x.dtype.is_int and ctx.op not in ("Neg", "Abs", "Sign", "Relu"):
        ctx.unsupported(f"{ctx.op} of integer tensors")
    if ctx.op == "Relu" and not x.dtype.is_float:
        return [ctx.b.maximum(x, ctx.scalar(0, x))]
    return [ctx.b.op(_UNARY[ctx.op], x)]


@converter("Not", since=1)  # Not-1 is its only form
def _not(ctx: NodeContext):
    return [ctx.b.logical_not(ctx.x(0))]


@converter(*_BINARY)
def _binary(ctx: NodeContext):
    return [ctx.b.op(_BINARY[ctx.op], ctx.x(0), ctx.x(1))]


@converter("Div")
def _div(ctx: NodeContext):
    a, c = ctx.x(0), ctx.x(1)
    if a.dtype.is_float:
        return [ctx.b.div(a, c)]
    # ONNX integer division truncates toward zero (C); graphc's floors. f64 holds every
    # i32 exactly, and the cast back truncates.
    q = ctx.b.div(ctx.b.cast(a, to=dtypes.f64), ctx.b.cast(c, to=dtypes.f64))
    return [ctx.b.cast(q, to=a.dtype)]


@converter("Pow")
def _pow(ctx: NodeContext):
    a, e = ctx.x(0), ctx.x(1)
    work = a.dtype if a.dtype.is_float else dtypes.f64
    base = a if a.dtype == work else ctx.b.cast(a, to=work)
    exp = e if e.dtype == work else ctx.b.cast(e, to=work)
    y = ctx.b.pow(base, exp)
    return [y if work == a.dtype else ctx.b.cast(y, to=a.dtype)]


@converter("Reciprocal")
def _reciprocal(ctx: NodeContext):
    x = ctx.x(0)
    return [ctx.b.div(ctx.scalar(1.0, x), x)]


@converter("LeakyRelu")
def _leaky_relu(ctx: NodeContext):
    return [ctx.b.leaky_relu(ctx.x(0), alpha=float(ctx.attr("alpha", 0.01)))]


@converter("Gelu")
def _gelu(ctx: NodeContext):
    mode = ctx.attr("approximate", "none")
    if mode not in ("none", "tanh"):
        ctx.unsupported(f"approximate={mode!r}")
    return [ctx.b.gelu(ctx.x(0), approximate=mode)]


@converter("Softplus")
def _softplus(ctx: NodeContext):
    # log(1 + exp(x)) = max(x, 0) + log(1 + exp(-|x|)), which never overflows.
    x = ctx.x(0)
    b = ctx.b
    tail = b.log(b.add(ctx.scalar(1.0, x), b.exp(b.neg(b.abs(x)))))
    return [b.add(b.maximum(x, ctx.scalar(0.0, x)), tail)]


@converter("HardSigmoid")
def _hard_sigmoid(ctx: NodeContext):
    x = ctx.x(0)
    b = ctx.b
    y = b.add(b.mul(x, ctx.scalar(ctx.attr("alpha", 0.2), x)), ctx.scalar(ctx.attr("beta", 0.5), x))
    return [b.minimum(b.maximum(y, ctx.scalar(0.0, x)), ctx.scalar(1.0, x))]


@converter("Max", "Min", "Sum", "Mean", since=1, until=7)
def _variadic_same_shape(ctx: NodeContext):
    """Before opset 8 (Max-6...) the inputs do not broadcast: they must agree in shape."""
    xs = [ctx.x(i) for i in range(len(ctx.inputs))]
    for k, x in enumerate(xs[1:], 1):
        if x.shape != xs[0].shape:
            raise OnnxError(f"{ctx.op}: at opset {ctx.opset} (no broadcasting before opset 8) "
                            f"every input has input 0's shape {xs[0].type}; input {k} is {x.type}")
    return _variadic(ctx)


@converter("Max", "Min", "Sum", "Mean", since=8)
def _variadic(ctx: NodeContext):
    op = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[ctx.op]
    xs = [ctx.x(i) for i in range(len(ctx.inputs))]
    out = xs[0]
    for x in xs[1:]:
        out = ctx.b.op(op, out, x)
    if ctx.op == "Mean" and len(xs) > 1:
        out = ctx.b.div(out, ctx.scalar(len(xs), out))
    return [out]


@converter("Clip", until=10)
def _clip_6(ctx: NodeContext):
    """Clip-6: the bounds are float attributes (absent: no bound on that side)."""
    x = ctx.x(0)
    lo = ctx.scalar(ctx.attr("min"), x) if ctx.has_attr("min") else None
    hi = ctx.scalar(ctx.attr("max"), x) if ctx.has_attr("max") else None
    return [_clamp(ctx, x, lo, hi)]


@converter("Clip", since=11)
def _clip(ctx: NodeContext):
    """Clip-11 on: the bounds are optional inputs."""
    x = ctx.x(0)
    return [_clamp(ctx, x, ctx.opt(1), ctx.opt(2))]


def _clamp(ctx: NodeContext, x, lo, hi):
    out = x
    if lo is not None:
        out = ctx.b.maximum(out, lo)
    if hi is not None:
        out = ctx.b.minimum(out, hi)
    return out


@converter("Where")
def _where(ctx: NodeContext):
    return [ctx.b.where(ctx.x(0), ctx.x(1), ctx.x(2))]


@converter("Xor")
def _xor(ctx: NodeContext):
    return [ctx.b.not_equal(ctx.x(0), ctx.x(1))]


@converter("IsNaN")
def _isnan(ctx: NodeContext):
    x = ctx.x(0)
    return [ctx.b.not_equal(x, x)]

