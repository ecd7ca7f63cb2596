"""ONNX elementwise math graphc builds from registry ops at import: Floor, Ceil, Round, Mod,
IsInf, and the trigonometric/hyperbolic functions graphc's registry lacks (Tan, Sinh, Cosh,
Asin, Acos, Atan, Asinh, Acosh, Atanh).

Rounding is exact for every float (see decompose.rounded). Mod is exact for integers (floor
division with a sign fix, no overflow) and for floats whenever |a/b| < 2**53 (the quotient
is formed in f64 and a - q*b with an exact two-term product; see _float_fmod).
The inverse and hyperbolic functions avoid cancellation with series, expm1/log1p and odd
symmetry; each is within about 1e-6 relative of numpy in f32 over its whole domain.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import atan, k, log1p, rounded


def _float(ctx: NodeContext) -> Value:
    x = ctx.x(0)
    if not x.dtype.is_float:
        ctx.unsupported(f"{ctx.op} of {x.dtype} tensors")
    return x


def _via_f32(fn):
    """Evaluate an f16 function in f32 and round once at the end: f16's range (65504)
    overflows the intermediate squares and exponentials."""
    def convert(ctx: NodeContext):
        x = ctx.x(0)
        if x.dtype != dtypes.f16:
            return fn(ctx)
        ctx.inputs = [ctx.b.cast(x, to=dtypes.f32)] + list(ctx.inputs[1:])
        try:
            return [ctx.b.cast(y, to=dtypes.f16) for y in fn(ctx)]
        finally:
            ctx.inputs = [x] + list(ctx.inputs[1:])
    convert.__doc__ = fn.__doc__
    return convert


@converter("Floor", "Ceil", "Round")
def _round(ctx: NodeContext):
    x = _float(ctx)
    return [rounded(ctx.b, x, {"Floor": "floor", "Ceil": "ceil", "Round": "round"}[ctx.op])]


@converter("IsInf")
def _isinf(ctx: NodeContext):
    x = ctx.x(0)
    b = ctx.b
    pos, neg = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))
    if not x.dtype.is_float or not (pos or neg):
        return [b.const(np.zeros(x.shape, bool), dtypes.bool_)]
    hits = []
    if pos:
        hits.append(b.equal(x, k(b, np.inf, x)))
    if neg:
        hits.append(b.equal(x, k(b, -np.inf, x)))
    return [hits[0] if len(hits) == 1 else b.logical_or(*hits)]


# -- Mod ---------------------------------------------------------------------------------

def _int_mod(ctx: NodeContext, a: Value, c: Value, fmod: bool) -> Value:
    """Python's a % c (fmod=0) or C's fmod (fmod=1) for integers: floor division (graphc's
    integer div), then for fmod a fix where the remainder's sign differs from a's. Never
    overflows; x % 0 is 0 (numpy's answer; ONNX leaves it undefined)."""
    b = ctx.b
    zero = k(b, 0, a)
    r = b.sub(a, b.mul(b.div(a, c), c))       # sign of c (or 0)
    if fmod:
        wrong = b.logical_and(b.not_equal(r, zero),
                              b.not_equal(b.less(r, zero), b.less(a, zero)))
        r = b.where(wrong, b.sub(r, c), r)
    return b.where(b.equal(c, zero), zero, r)


def _two_product(b, x: Value, y: Value) -> tuple[Value, Value]:
    """p + e == x * y exactly, p = fl(x * y) (Dekker's product with Veltkamp's split; graphc
    rounds elementwise arithmetic exactly as written, no FMA contraction or reassociation)."""
    def split(v: Value) -> tuple[Value, Value]:
        t = b.mul(v, k(b, 134217729.0, v))  # 2**27 + 1
        hi = b.sub(t, b.sub(t, v))
        return hi, b.sub(v, hi)
    p = b.mul(x, y)
    xh, xl = split(x)
    yh, yl = split(y)
    e = b.add(b.add(b.add(b.sub(b.mul(xh, yh), p), b.mul(xh, yl)), b.mul(xl, yh)), b.mul(xl, yl))
    return p, e


def _float_fmod(ctx: NodeContext, a: Value, c: Value) -> Value:
    """C fmod(a, c) (sign of a) for floats, computed in f64: q = trunc(a / c), then
    a - q*c with q*c as an exact two-term product, so the remainder (always representable)
    comes out exactly; a quotient rounded across an integer is fixed by one step of |c|.
    Exact whenever |a / c| < 2**53."""
    b = ctx.b
    dt = a.dtype
    wide = dtypes.f64
    aw = a if dt == wide else b.cast(a, to=wide)
    cw = c if dt == wide else b.cast(c, to=wide)
    q = rounded(b, b.div(aw, cw), "trunc")
    finite_q = b.less(b.abs(q), k(b, 2.0 ** 60, aw))
    qs = b.where(finite_q, q, k(b, 0.0, aw))  # keep the split away from inf/NaN
    p, e = _two_product(b, qs, cw)
    r = b.sub(b.sub(aw, p), e)
    r = b.where(finite_q, r, b.sub(aw, b.mul(q, cw)))  # inf/NaN cases: as IEEE gives them
    zero = k(b, 0.0, aw)
    ac = b.abs(cw)
    sa = b.where(b.less(aw, zero), k(b, -1.0, aw), k(b, 1.0, aw))
    # the quotient rounded up across an integer: r has the wrong sign; rounded down: |r| >= |c|
    wrong_sign = b.logical_and(b.not_equal(r, zero), b.not_equal(b.less(r, zero), b.less(aw, zero)))
    r = b.where(wrong_sign, b.add(r, b.mul(sa, ac)), r)
    r = b.where(b.greater_equal(b.abs(r), ac), b.sub(r, b.mul(sa, ac)), r)
    r = b.where(b.equal(r, zero), b.mul(aw, zero), r)  # fmod(-4, 2) is -0.0
    finite_a = b.less(b.abs(aw), k(b, np.inf, aw))
    inf_c = b.equal(ac, k(b, np.inf, aw))
    r = b.where(b.logical_and(finite_a, inf_c), aw, r)  # fmod(a, inf) = a
    return r if dt == wide else b.cast(r, to=dt)


def _float_mod(ctx: NodeContext, a: Value, c: Value) -> Value:
    """numpy's mod (sign of the divisor) for floats: fmod, moved by c when the signs differ."""
    b = ctx.b
    r = _float_fmod(ctx, a, c)
    zero = k(b, 0.0, r)
    differ = b.logical_and(b.not_equal(r, zero), b.not_equal(b.less(r, zero), b.less(c, zero)))
    moved = b.add(r, c)
    r = b.where(differ, moved, r)
    # a zero remainder takes the divisor's sign (numpy: mod(-4, 2) = 0.0, mod(4, -2) = -0.0)
    return b.where(b.equal(r, zero), b.where(b.less(c, zero), k(b, -0.0, r), zero), r)


@converter("Mod")
def _mod(ctx: NodeContext):
    a, c = ctx.x(0), ctx.x(1)
    if a.dtype != c.dtype:
        ctx.unsupported(f"operands of dtypes {a.dtype} and {c.dtype}")
    if a.dtype.is_bool:
        ctx.unsupported("Mod of bool tensors")
    fmod = bool(ctx.attr("fmod", 0))
    if a.dtype.is_int:
        return [_int_mod(ctx, a, c, fmod)]
    return [_float_fmod(ctx, a, c) if fmod else _float_mod(ctx, a, c)]


# -- trigonometric and hyperbolic ------------------------------------------------------------

def _sqrt1m(ctx: NodeContext, x: Value) -> Value:
    """sqrt(1 - x^2) as sqrt((1 - x)(1 + x)), without cancellation near |x| = 1."""
    b = ctx.b
    one = k(b, 1.0, x)
    return b.sqrt(b.mul(b.sub(one, x), b.add(one, x)))


@converter("Tan")
@_via_f32
def _tan(ctx: NodeContext):
    x = _float(ctx)
    return [ctx.b.div(ctx.b.sin(x), ctx.b.cos(x))]


def _half_exp(ctx: NodeContext, x: Value) -> tuple[Value, Value]:
    """(exp(|x|)/2, exp(-|x|)/2) without overflow below the float's cosh limit."""
    b = ctx.b
    h = b.exp(b.sub(b.abs(x), k(b, math.log(2.0), x)))
    return h, b.div(k(b, 0.25, x), h)


@converter("Sinh")
@_via_f32
def _sinh(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    small = b.less(b.abs(x), k(b, 0.5, x))
    xs = b.where(small, x, k(b, 0.0, x))
    x2 = b.mul(xs, xs)
    poly = k(b, 1.0, x)  # x (1 + x^2/6 (1 + x^2/20 (1 + x^2/42 (1 + x^2/72))))
    for d in (72.0, 42.0, 20.0, 6.0):
        poly = b.add(k(b, 1.0, x), b.mul(b.div(x2, k(b, d, x)), poly))
    h, l = _half_exp(ctx, x)
    big = b.mul(b.sign(x), b.sub(h, l))
    return [b.where(small, b.mul(xs, poly), big)]


@converter("Cosh")
@_via_f32
def _cosh(ctx: NodeContext):
    x = _float(ctx)
    h, l = _half_exp(ctx, x)
    return [ctx.b.add(h, l)]


@converter("Asinh")
@_via_f32
def _asinh(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    a = b.abs(x)
    huge = b.greater(a, k(b, 1e15, x))
    am = b.where(huge, k(b, 1.0, x), a)
    # asinh(a) = log1p(a + a^2 / (1 + sqrt(1 + a^2)))
    s = b.sqrt(b.add(k(b, 1.0, x), b.mul(am, am)))
    v = log1p(b, b.add(am, b.div(b.mul(am, am), b.add(k(b, 1.0, x), s))))
    v = b.where(huge, b.add(b.log(a), k(b, math.log(2.0), x)), v)
    return [b.mul(b.sign(x), v)]


@converter("Acosh")
@_via_f32
def _acosh(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    huge = b.greater(x, k(b, 1e15, x))
    xm = b.where(huge, k(b, 2.0, x), x)
    t = b.sub(xm, k(b, 1.0, x))  # exact for x in [1, 2]
    # acosh(x) = log1p(t + sqrt(t (t + 2))); NaN below 1, as sqrt of a negative
    v = log1p(b, b.add(t, b.sqrt(b.mul(t, b.add(t, k(b, 2.0, x))))))
    return [b.where(huge, b.add(b.log(x), k(b, math.log(2.0), x)), v)]


@converter("Atanh")
@_via_f32
def _atanh(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    # atanh(x) = 0.5 log1p(2x / (1 - x))
    u = b.div(b.mul(k(b, 2.0, x), x), b.sub(k(b, 1.0, x), x))
    return [b.mul(k(b, 0.5, x), log1p(b, u))]


@converter("Atan")
@_via_f32
def _atan(ctx: NodeContext):
    return [atan(ctx.b, _float(ctx))]


@converter("Asin")
@_via_f32
def _asin(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    # asin(x) = 2 atan(x / (1 + sqrt(1 - x^2))): no cancellation anywhere in [-1, 1]
    return [b.mul(k(b, 2.0, x), atan(b, b.div(x, b.add(k(b, 1.0, x), _sqrt1m(ctx, x)))))]


@converter("Acos")
@_via_f32
def _acos(ctx: NodeContext):
    x = _float(ctx)
    b = ctx.b
    one = k(b, 1.0, x)
    # acos(x) = 2 atan(sqrt((1 - x) / (1 + x))): accurate near 1, pi at -1
    return [b.mul(k(b, 2.0, x), atan(b, b.sqrt(b.div(b.sub(one, x), b.add(one, x)))))]
