"""Exact building blocks the ONNX converters share when an ONNX op has no registry op of its
own and is built from registry ops at import: rounding (trunc/floor/ceil/round-half-even
without a floor op), expm1/log1p without cancellation, atan by range reduction, integer
index arithmetic, and a log-depth product/scan. Gradients come from the parts.

Each helper says how exact it is; the bounds are the ones the ONNX converters quote.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..ir import dtypes
from ..ir.emitter import Emitter
from ..ir.graph import Value

# |x| at or above this is already an integer in the dtype (2**mantissa bits).
INTEGRAL_FROM = {"f16": 2.0 ** 10, "f32": 2.0 ** 23, "f64": 2.0 ** 52}


def k(b: Emitter, value: float, like: Value) -> Value:
    """A rank-0 constant of `like`'s dtype."""
    return b.const(np.asarray(value), like.dtype)


def signed_zero_like(b: Emitter, r: Value, x: Value) -> Value:
    """r, but a zero result carries x's sign (x * 0), as trunc/floor/ceil/round of a negative
    number above -1 give -0.0 in IEEE arithmetic. Only valid where x is finite."""
    return b.where(b.equal(r, k(b, 0.0, r)), b.mul(x, k(b, 0.0, x)), r)


def rounded(b: Emitter, x: Value, mode: str) -> Value:
    """trunc / floor / ceil / round (half to even) of a float tensor, exact for every value.

    graphc's float -> i64 cast truncates toward zero and is exact for |x| < 2**63, which
    covers every non-integral float (|x| < 2**mantissa_bits); from 2**mantissa_bits up, x is
    already an integer (or inf/NaN) and passes through. The result has zero gradient."""
    big = INTEGRAL_FROM[x.dtype.name]
    ti = b.cast(x, to=dtypes.i64)
    t = b.cast(ti, to=x.dtype)
    if mode == "trunc":
        r = t
    else:
        d = b.sub(x, t)  # exact: t and x share sign and magnitude within a factor of 2
        one = k(b, 1.0, x)
        zero = k(b, 0.0, x)
        if mode == "floor":
            r = b.sub(t, b.where(b.less(d, zero), one, zero))
        elif mode == "ceil":
            r = b.add(t, b.where(b.greater(d, zero), one, zero))
        elif mode == "round":
            ad = b.abs(d)
            half = k(b, 0.5, x)
            two = b.const(np.asarray(2), dtypes.i64)
            odd = b.not_equal(b.sub(ti, b.mul(b.div(ti, two), two)), b.const(np.asarray(0), dtypes.i64))
            away = b.logical_or(b.greater(ad, half), b.logical_and(b.equal(ad, half), odd))
            r = b.add(t, b.where(away, b.sign(x), zero))
        else:
            raise ValueError(mode)
    r = signed_zero_like(b, r, x)
    out = b.where(b.less(b.abs(x), k(b, big, x)), r, x)  # NaN, inf and big values pass
    return b.stop_gradient(out)


def expm1(b: Emitter, x: Value) -> Value:
    """exp(x) - 1 without cancellation near 0: a degree-7 Taylor polynomial for |x| < 0.1
    (truncation below 2e-10 relative), exp(x) - 1 elsewhere (cancellation at most a factor
    of 10 there: a few ulps)."""
    small = b.less(b.abs(x), k(b, 0.1, x))
    xs = b.where(small, x, k(b, 0.0, x))  # the series never sees large x (nor its gradient)
    poly = k(b, 1.0, x)
    for n in (7, 6, 5, 4, 3, 2):
        poly = b.add(k(b, 1.0, x), b.mul(b.div(xs, k(b, float(n), x)), poly))
    series = b.mul(xs, poly)
    return b.where(small, series, b.sub(b.exp(x), k(b, 1.0, x)))


def log1p(b: Emitter, u: Value) -> Value:
    """log(1 + u) accurate near u = 0: w = 1 + u rounds, and log(w) * u / (w - 1) cancels
    that rounding (Goldberg's trick; a few ulps wherever log is accurate)."""
    one = k(b, 1.0, u)
    w = b.add(one, u)
    exact = b.logical_or(b.equal(w, one), b.equal(w, k(b, np.inf, u)))  # log1p(inf) = inf
    den = b.where(exact, one, b.sub(w, one))
    return b.where(exact, u, b.div(b.mul(b.log(w), u), den))


def atan(b: Emitter, x: Value) -> Value:
    """arctan by range reduction to |t| <= tan(pi/8) and an odd Taylor polynomial of degree
    19 (truncation below 3e-9 relative): atan(x) = pi/2 - atan(1/|x|) for |x| > 1, then
    pi/4 + atan((y - 1)/(y + 1)) for y > tan(pi/8). About 1e-7 relative in f32."""
    a = b.abs(x)
    big = b.greater(a, k(b, 1.0, x))
    safe = b.where(big, a, k(b, 1.0, x))
    y = b.where(big, b.div(k(b, 1.0, x), safe), a)                 # y in [0, 1]
    mid = b.greater(y, k(b, math.tan(math.pi / 8), x))
    t = b.where(mid, b.div(b.sub(y, k(b, 1.0, x)), b.add(y, k(b, 1.0, x))), y)
    t2 = b.mul(t, t)
    poly = k(b, -1.0 / 19, x)
    for n in range(17, 0, -2):
        sign = -1.0 if (n // 2) % 2 else 1.0
        poly = b.add(k(b, sign / n, x), b.mul(t2, poly))
    r = b.mul(t, poly)
    r = b.where(mid, b.add(k(b, math.pi / 4, x), r), r)
    r = b.where(big, b.sub(k(b, math.pi / 2, x), r), r)
    return b.mul(b.sign(x), r)


def iota(b: Emitter, n: int, axis: int, rank: int, dtype=dtypes.i64) -> Value:
    """arange(n) shaped to lie along `axis` of a rank-`rank` tensor (ones elsewhere)."""
    shape = [1] * rank
    shape[axis] = n
    return b.const(np.arange(n).reshape(shape).astype(dtype.np_dtype), dtype)


def wrap_negative(b: Emitter, idx: Value, n: int) -> Value:
    """ONNX indices may count from the end: idx + n where idx < 0 (as i64)."""
    if idx.dtype != dtypes.i64:
        idx = b.cast(idx, to=dtypes.i64)
    if idx.kind == "const":
        d = np.asarray(idx.data).astype(np.int64)
        return b.const(np.where(d < 0, d + n, d), dtypes.i64)
    neg = b.less(idx, b.const(np.asarray(0), dtypes.i64))
    return b.where(neg, b.add(idx, b.const(np.asarray(n), dtypes.i64)), idx)


def move_to_end(b: Emitter, x: Value, axes: list[int]) -> Value:
    """x with `axes` moved, in order, to the end."""
    rest = [i for i in range(x.type.rank) if i not in axes]
    perm = tuple(rest + list(axes))
    return x if perm == tuple(range(x.type.rank)) else b.transpose(x, perm=perm)


def shift(b: Emitter, x: Value, axis: int, by: int, fill: float, reverse: bool) -> Value:
    """x moved `by` places along `axis` (towards higher indices, or lower when reversed),
    the vacated places filled with `fill`."""
    r, n = x.type.rank, x.shape[axis]
    if by >= n:
        return b.const(np.full(x.shape, fill, x.dtype.np_dtype), x.dtype)
    low, high = [0] * r, [0] * r
    (high if reverse else low)[axis] = by
    p = b.pad(x, low=low, high=high, interior=[0] * r, value=float(fill))
    starts, stops = [0] * r, list(p.shape)
    if reverse:
        starts[axis], stops[axis] = by, by + n
    else:
        stops[axis] = n
    return b.slice(p, starts=starts, stops=stops, steps=[1] * r)


def scan(b: Emitter, x: Value, axis: int, op: str, fill: float, exclusive: bool,
         reverse: bool) -> Value:
    """Inclusive/exclusive prefix sums or products along `axis` in ceil(log2 n) steps of
    shift-and-combine (Hillis-Steele). Exact for integers (wrapping aside); for floats each
    output combines the same terms as the sequential scan in a tree order, so its rounding
    error is O(log n) ulps of the terms instead of O(n)."""
    combine: Callable[[Value, Value], Value] = getattr(b, op)
    n = x.shape[axis]
    y = shift(b, x, axis, 1, fill, reverse) if exclusive and n else x
    step = 1
    while step < n:
        y = combine(y, shift(b, y, axis, step, fill, reverse))
        step *= 2
    return y


def tree_product(b: Emitter, x: Value) -> Value:
    """The product over the last axis (keepdims) by halving: pairs multiply in ceil(log2 n)
    rounds, each product correctly rounded, so zeros, signs, infinities and NaN come out as
    in a sequential product (exp-sum-log would not); an odd length pads with 1."""
    r = x.type.rank
    while x.shape[-1] > 1:
        n = x.shape[-1]
        if n % 2:
            x = b.pad(x, low=[0] * r, high=[0] * (r - 1) + [1], interior=[0] * r, value=1.0)
            n += 1
        half = n // 2
        lo = b.slice(x, starts=[0] * r, stops=list(x.shape[:-1]) + [half], steps=[1] * r)
        hi = b.slice(x, starts=[0] * (r - 1) + [half], stops=list(x.shape), steps=[1] * r)
        x = b.mul(lo, hi)
    if x.shape[-1] == 0:
        return b.const(np.ones(x.shape[:-1] + (1,), x.dtype.np_dtype), x.dtype)
    return x
