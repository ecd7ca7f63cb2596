"""Elementwise ops: unary math, binary arithmetic with numpy broadcasting, comparisons,
logical ops, where and cast."""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes
from ..registry import Attr, Fusion, OpDef, elementwise_cost, register
from ..types import TensorType
from .. import kernel as K
from ..errors import DTypeError
from ._common import broadcast_shapes, require_float, require_numeric, same_dtype

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_GELU_C = 0.044715

_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def erf_ref(x: np.ndarray) -> np.ndarray:
    """erf to double precision (math.erf per element; the oracle values accuracy over speed)."""
    return np.asarray(_erf_scalar(x.astype(np.float64)), dtype=np.float64).astype(x.dtype)


def _gelu_ref(x: np.ndarray, approximate: str) -> np.ndarray:
    xd = x.astype(np.float64)
    if approximate == "tanh":
        y = 0.5 * xd * (1.0 + np.tanh(_SQRT_2_OVER_PI * (xd + _GELU_C * xd ** 3)))
    else:
        y = 0.5 * xd * (1.0 + erf_ref(xd / math.sqrt(2.0)))
    return y.astype(x.dtype)


def _k(value: float, dt) -> K.Const:
    """A kernel IR constant of dtype dt (ints stay ints)."""
    return K.Const(value if dt.is_float else int(value), dt)


# --- unary ------------------------------------------------------------------------------

def _unary(name: str, ref, vjp, flops: int, kind: str = "float", attrs=None, doc: str = "",
           out_dtype=None, scalar=None) -> None:
    """kind: which operand dtypes the op accepts: float, numeric, bool or any. `scalar`
    defaults to the kernel IR function of the same name."""
    def infer(ts: list[TensorType], a: dict) -> TensorType:
        (t,) = ts
        if kind == "float":
            require_float(name, t)
        elif kind == "numeric":
            require_numeric(name, t)
        elif kind == "bool" and not t.dtype.is_bool:
            raise DTypeError(f"{name} needs a bool operand, got {t}")
        return t if out_dtype is None else t.with_dtype(out_dtype)

    if scalar is None:
        def scalar(xs, a, dt):
            return K.Unary(name, xs[0], dt)
    register(OpDef(name, Fusion.ELEMENTWISE, infer, ref, 1, attrs or {}, vjp,
                   elementwise_cost(flops), doc=doc, scalar=scalar))


def _zero_where(b, cond, g):
    return b.where(cond, g, b.scalar(0.0, g))


_unary("neg", lambda x: np.negative(x), lambda b, n, g: [b.neg(g)], 1, "numeric")
_unary("abs", lambda x: np.abs(x), lambda b, n, g: [b.mul(g, b.sign(n.inputs[0]))], 1, "numeric")
_unary("sign", lambda x: np.sign(x), lambda b, n, g: [b.mul(g, b.scalar(0.0, g))], 1, "numeric",
       doc="-1, 0 or 1; its gradient is zero almost everywhere")
_unary("exp", np.exp, lambda b, n, g: [b.mul(g, n.outputs[0])], 10)
_unary("log", np.log, lambda b, n, g: [b.div(g, n.inputs[0])], 10)
_unary("sqrt", np.sqrt, lambda b, n, g: [b.div(b.mul(g, b.scalar(0.5, g)), n.outputs[0])], 4)


def _rsqrt_vjp(b, n, g):
    y = n.outputs[0]
    return [b.mul(b.mul(g, b.scalar(-0.5, g)), b.mul(y, b.mul(y, y)))]


_unary("rsqrt", lambda x: (1.0 / np.sqrt(x)).astype(x.dtype), _rsqrt_vjp, 5)
_unary("tanh", np.tanh,
       lambda b, n, g: [b.mul(g, b.sub(b.scalar(1.0, g), b.mul(n.outputs[0], n.outputs[0])))], 15)
_unary("sigmoid", lambda x: (0.5 * (1.0 + np.tanh(0.5 * x))).astype(x.dtype),
       lambda b, n, g: [b.mul(g, b.mul(n.outputs[0], b.sub(b.scalar(1.0, g), n.outputs[0])))],
       15, doc="1 / (1 + exp(-x)), evaluated as (1 + tanh(x/2)) / 2 so it never overflows")


def _relu_ref(x: np.ndarray) -> np.ndarray:
    # explicit, not np.maximum(x, 0): numpy returns +0 for -0 in f32/f64 but -0 in f16
    return np.where(x <= 0, np.zeros((), x.dtype), x).astype(x.dtype)


# relu(-0) is +0 on every path, as numpy's f32/f64 maximum(x, 0) and torch.compile's
# maximum(0, x) give (torch eager's clamp_min keeps -0: no library agrees); NaN stays NaN.
# Written as a select on an ordered `x <= 0`, not as max(x, 0): a kernel-IR max returns its
# first operand when the two compare equal, so max(-0, 0) would keep -0 (and rsqrt of it
# be -inf where the reference gives +inf). On x86 the select is a compare and an and-not.
_unary("relu", _relu_ref,
       lambda b, n, g: [_zero_where(b, b.greater(n.outputs[0], b.scalar(0, n.outputs[0])), g)],
       1, "numeric", doc="max(x, 0), with relu(-0) = +0 and relu(NaN) = NaN; the gradient "
       "reads the output, so it survives in-place",
       scalar=lambda xs, a, dt: K.Select(K.Compare("le", xs[0], _k(0, dt)), _k(0, dt), xs[0], dt))


def _leaky_vjp(b, n, g):
    x = n.inputs[0]
    slope = b.mul(g, b.scalar(n.attrs["alpha"], g))
    return [b.where(b.greater(x, b.scalar(0.0, x)), g, slope)]


_unary("leaky_relu", lambda x, alpha: np.where(x > 0, x, (x * alpha).astype(x.dtype)).astype(x.dtype),
       _leaky_vjp, 2, attrs={"alpha": Attr("float", 0.01)},
       scalar=lambda xs, a, dt: K.Select(K.Compare("gt", xs[0], _k(0, dt)), xs[0],
                                         K.Binary("mul", xs[0], _k(a["alpha"], dt), dt), dt))


def _erf_vjp(b, n, g):
    x = n.inputs[0]
    dens = b.exp(b.neg(b.mul(x, x)))
    return [b.mul(g, b.mul(dens, b.scalar(_TWO_OVER_SQRT_PI, x)))]


_unary("erf", erf_ref, _erf_vjp, 20)


def _gelu_vjp(b, n, g):
    x = n.inputs[0]
    s = lambda v: b.scalar(v, x)  # noqa: E731
    if n.attrs["approximate"] == "tanh":
        # y = x/2 (1 + tanh(u)), u = c (x + k x^3)
        x2 = b.mul(x, x)
        u = b.mul(s(_SQRT_2_OVER_PI), b.add(x, b.mul(s(_GELU_C), b.mul(x2, x))))
        t = b.tanh(u)
        du = b.mul(s(_SQRT_2_OVER_PI), b.add(s(1.0), b.mul(s(3 * _GELU_C), x2)))
        sech2 = b.sub(s(1.0), b.mul(t, t))
        d = b.add(b.mul(s(0.5), b.add(s(1.0), t)), b.mul(b.mul(s(0.5), x), b.mul(sech2, du)))
    else:
        # y = x Phi(x): dy/dx = Phi(x) + x phi(x)
        cdf = b.mul(s(0.5), b.add(s(1.0), b.erf(b.mul(x, s(1.0 / math.sqrt(2.0))))))
        pdf = b.mul(s(_INV_SQRT_2PI), b.exp(b.mul(s(-0.5), b.mul(x, x))))
        d = b.add(cdf, b.mul(x, pdf))
    return [b.mul(g, d)]


def _gelu_scalar(xs, a, dt):
    x = xs[0]

    def mul(p, q):
        return K.Binary("mul", p, q, dt)
    half_x = mul(_k(0.5, dt), x)
    if a["approximate"] == "tanh":
        inner = mul(_k(_SQRT_2_OVER_PI, dt), K.Binary("add", x, mul(_k(_GELU_C, dt), mul(x, mul(x, x))), dt))
        return mul(half_x, K.Binary("add", _k(1.0, dt), K.Unary("tanh", inner, dt), dt))
    return mul(half_x, K.Binary("add", _k(1.0, dt), K.Unary("erf", mul(x, _k(1 / math.sqrt(2.0), dt)), dt), dt))


_unary("gelu", _gelu_ref, _gelu_vjp, 25, attrs={"approximate": Attr("str", "none", ("none", "tanh"))},
       scalar=_gelu_scalar,
       doc="x * Phi(x); approximate='tanh' uses the tanh form of Hendrycks & Gimpel")
_unary("sin", np.sin, lambda b, n, g: [b.mul(g, b.cos(n.inputs[0]))], 15)
_unary("cos", np.cos, lambda b, n, g: [b.neg(b.mul(g, b.sin(n.inputs[0])))], 15)
_unary("stop_gradient", lambda x: x.copy(), lambda b, n, g: [None], 0, "any",
       scalar=lambda xs, a, dt: xs[0],
       doc="identity whose gradient is zero: the autodiff pass does not look through it")
_unary("logical_not", np.logical_not, None, 1, "bool",
       scalar=lambda xs, a, dt: K.Unary("not", xs[0], dt))


# --- binary -----------------------------------------------------------------------------

_KERNEL_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow",
                  "maximum": "max", "minimum": "min", "logical_and": "and", "logical_or": "or"}
_KERNEL_COMPARE = {"equal": "eq", "not_equal": "ne", "less": "lt", "less_equal": "le",
                   "greater": "gt", "greater_equal": "ge"}


def _binary_scalar(name: str):
    if name in _KERNEL_COMPARE:
        return lambda xs, a, dt: K.Compare(_KERNEL_COMPARE[name], xs[0], xs[1], dt)
    return lambda xs, a, dt: K.Binary(_KERNEL_BINARY[name], xs[0], xs[1], dt)


def _binary(name: str, ref, vjp, flops: int, kind: str = "numeric", result: str = "same",
            doc: str = "") -> None:
    def infer(ts: list[TensorType], a: dict) -> TensorType:
        dt = same_dtype(name, ts)
        for t in ts:
            if kind == "float":
                require_float(name, t)
            elif kind == "numeric":
                require_numeric(name, t)
            elif kind == "bool" and not t.dtype.is_bool:
                raise DTypeError(f"{name} needs bool operands, got {t}")
        shape = broadcast_shapes(name, ts[0].shape, ts[1].shape)
        return TensorType(shape, dtypes.bool_ if result == "bool" else dt)

    register(OpDef(name, Fusion.ELEMENTWISE, infer, ref, 2, {}, vjp, elementwise_cost(flops),
                   doc=doc, scalar=_binary_scalar(name)))


def _sides(b, n, ga, gb):
    a, c = n.inputs
    return [None if ga is None else b.sum_to(ga, a.shape),
            None if gb is None else b.sum_to(gb, c.shape)]


_binary("add", np.add, lambda b, n, g: _sides(b, n, g, g), 1)
_binary("sub", np.subtract, lambda b, n, g: _sides(b, n, g, b.neg(g)), 1)
_binary("mul", np.multiply,
        lambda b, n, g: _sides(b, n, b.mul(g, n.inputs[1]), b.mul(g, n.inputs[0])), 1)


def _div_ref(a, c):
    if np.issubdtype(a.dtype, np.integer):
        return np.floor_divide(a, c, where=c != 0, out=np.zeros(np.broadcast_shapes(a.shape, c.shape),
                                                                 a.dtype))
    return np.divide(a, c)


def _div_vjp(b, n, g):
    a, c = n.inputs
    ga = b.div(g, c)
    gc = b.neg(b.mul(ga, n.outputs[0]))
    return _sides(b, n, ga, gc)


_binary("div", _div_ref, _div_vjp, 4,
        doc="true division for floats; floor division for ints (x/0 gives 0 for ints)")


def _pow_vjp(b, n, g):
    a, e = n.inputs
    y = n.outputs[0]
    ga = b.mul(g, b.mul(e, b.pow(a, b.sub(e, b.scalar(1.0, e)))))
    pos = b.greater(a, b.scalar(0.0, a))
    safe = b.where(pos, a, b.scalar(1.0, a))
    ge = b.mul(g, b.mul(b.log(safe), y))  # d/de a^e = log(a) a^e, taken as 0 where a <= 0
    return _sides(b, n, ga, ge)


_binary("pow", np.power, _pow_vjp, 20, kind="float")


def _minmax_vjp(pick_first_cmp):
    def vjp(b, n, g):
        a, c = n.inputs
        first = getattr(b, pick_first_cmp)(a, c)  # ties go to the first operand
        zero = b.scalar(0.0, g)
        shape = n.outputs[0].shape
        return _sides(b, n, b.where(first, g, zero), b.where(first, zero, b.broadcast(g, shape)))
    return vjp


_binary("maximum", np.maximum, _minmax_vjp("greater_equal"), 1)
_binary("minimum", np.minimum, _minmax_vjp("less_equal"), 1)

for _name, _fn in [("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less),
                   ("less_equal", np.less_equal), ("greater", np.greater),
                   ("greater_equal", np.greater_equal)]:
    _binary(_name, _fn, None, 1, kind="any", result="bool")
for _name, _fn in [("logical_and", np.logical_and), ("logical_or", np.logical_or)]:
    _binary(_name, _fn, None, 1, kind="bool", result="bool")


# --- where and cast -----------------------------------------------------------------------

def _where_infer(ts: list[TensorType], a: dict) -> TensorType:
    c, x, y = ts
    if not c.dtype.is_bool:
        raise DTypeError(f"where: the condition must be bool, got {c}")
    dt = same_dtype("where", [x, y])
    return TensorType(broadcast_shapes("where", c.shape, x.shape, y.shape), dt)


def _where_vjp(b, n, g):
    c, x, y = n.inputs
    zero = b.scalar(0.0, g)
    return [None, b.sum_to(b.where(c, g, zero), x.shape), b.sum_to(b.where(c, zero, g), y.shape)]


register(OpDef("where", Fusion.ELEMENTWISE, _where_infer, np.where, 3, {}, _where_vjp,
               elementwise_cost(1), nondiff_inputs=(0,),
               scalar=lambda xs, a, dt: K.Select(xs[0], xs[1], xs[2], dt),
               doc="select x where cond is true, else y, with broadcasting"))


def _cast_infer(ts: list[TensorType], a: dict) -> TensorType:
    return ts[0].with_dtype(a["to"])


def _cast_ref(x: np.ndarray, to) -> np.ndarray:
    if x.dtype.kind == "f" and to.is_int:
        return dtypes.float_to_int(x, to)
    return x.astype(to.np_dtype)


def _cast_vjp(b, n, g):
    src = n.inputs[0].dtype
    if not (src.is_float and g.dtype.is_float):
        return [None]
    return [b.cast(g, to=src)]


register(OpDef("cast", Fusion.ELEMENTWISE, _cast_infer, _cast_ref, 1, {"to": Attr("dtype")},
               _cast_vjp, elementwise_cost(1), scalar=lambda xs, a, dt: K.Cast(xs[0], dt),
               doc="convert the dtype (float to int truncates toward zero, saturates at the integer "
                   "range and maps NaN to 0)"))
