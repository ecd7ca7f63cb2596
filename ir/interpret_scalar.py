"""Scalar semantics of the kernel-IR interpreter (ir/interpret.py): one numpy definition
of every function of the scalar vocabulary (ir/kernel.py SCALAR_FUNCS) and of conversions.

Scalar semantics are the LLVM generator's (see backends/llvm/codegen.py's docstring): f16
values are computed in f32 and rounded to half precision only where the generator rounds
(casts to f16, stores, constants); integer division floors with x // 0 = 0; float to int
casts truncate, saturate and map NaN to 0 (ir.dtypes.float_to_int); max/min propagate NaN
(and inside `reduce` loops order -0 below +0, as llvm.maximum). Arithmetic is done in the
buffer's own dtype (float32 for f32); transcendental functions are evaluated in float64
and rounded: the generator's are within 1.5 ulp of the true value over the ranges its math
library documents, which numpy's float32 kernels are not (sin of 3e38 is far off). Reassociation and FMA contraction, which the generator may apply,
are not: the interpreter sums in order (GEMMs through numpy's matmul).

"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

from . import kernel as K
from .dtypes import DType, float_to_int
from .errors import KernelInterpretError

# -- scalar semantics (backends/llvm/codegen.py is the reference) ---------------------------

def compute_dtype(dt: DType) -> np.dtype:
    """numpy dtype a value of dt is computed in: f16 in float32, like the generator."""
    return np.dtype(np.float32) if dt.name == "f16" else dt.np_dtype


def memory_dtype(dt: DType) -> np.dtype:
    """numpy dtype of dt in memory (bool is one byte, read as != 0)."""
    return np.dtype(np.uint8) if dt.is_bool else dt.np_dtype


def _round_half(v):
    return np.asarray(v).astype(np.float16).astype(np.float32)[()]


def const_value(value: Any, dt: DType):
    """A constant as the generator materialises it (f16 rounded, ints wrapped)."""
    if dt.is_bool:
        return np.bool_(bool(value))
    if dt.is_float:
        v = compute_dtype(dt).type(float(value))
        return _round_half(v) if dt.name == "f16" else v
    bits = dt.itemsize * 8
    v = ((int(value) + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))
    return dt.np_dtype.type(v)


def convert(v, src: DType, dst: DType):
    """A value of src converted to dst (the generator's `convert`)."""
    if src == dst:
        return v
    if dst.is_bool:
        return np.not_equal(v, 0)  # NaN -> true
    target = compute_dtype(dst)
    if src.is_bool:
        return np.asarray(v).astype(target)[()]
    if src.is_float and dst.is_float:
        if dst.name == "f16":  # one correct rounding (the generator rounds f64 to odd first)
            return np.asarray(v).astype(np.float16).astype(np.float32)[()]
        return np.asarray(v).astype(target)[()]
    if src.is_float:  # truncation, saturating, NaN -> 0 (graphc's definition)
        return float_to_int(np.asarray(v), dst)[()]
    if dst.is_float:
        out = np.asarray(v).astype(np.float32 if dst.name == "f16" else target)
        return (out.astype(np.float16).astype(np.float32) if dst.name == "f16" else out)[()]
    return np.asarray(v).astype(target)[()]  # sext / trunc (wraps)


def promote(a: DType, b: DType) -> DType:
    """Common dtype of a Compare's operands (the generator's `_promote`)."""
    order = ["bool", "i32", "i64", "f16", "f32", "f64"]
    return a if order.index(a.name) >= order.index(b.name) else b


def _sigmoid(x):
    # the mathlib's form: e = exp(-|x|), (x >= 0 ? 1 : e) / (1 + e), never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


_erf = np.frompyfunc(math.erf, 1, 1)


def _wide(fn):
    """fn evaluated in float64 and rounded to the operand's dtype: the (nearly) correctly
    rounded value, which the generator's math functions are within 1.5 ulp of over their
    documented ranges, rather than numpy's float32 kernels (whose sin and cos of huge
    arguments are far off)."""
    return lambda x: np.asarray(fn(np.asarray(x, np.float64))).astype(x.dtype)


# One float64 implementation per unary math-library entry of the kernel-IR vocabulary
# (ir/kernel.py SCALAR_FUNCS); tests/ir/test_scalar_funcs.py holds the two to each other.
_LIBRARY = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "tanh": np.tanh, "sin": np.sin,
    "cos": np.cos, "sigmoid": _sigmoid, "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "erf": lambda x: np.asarray(_erf(x), np.float64),
}

_FLOAT_UNARY = {
    "neg": np.negative, "abs": np.abs, "sqrt": np.sqrt,
    **{name: _wide(fn) for name, fn in _LIBRARY.items()},
    "sign": lambda x: np.where(np.isnan(x), x, np.where(x > 0, x.dtype.type(1),
                                                        np.where(x < 0, x.dtype.type(-1), x.dtype.type(0)))),
    # the generator returns an i1 here, which no float-typed use accepts; its evident meaning
    "not": lambda x: (x == 0).astype(x.dtype),
}
_INT_UNARY = {
    "neg": np.negative, "abs": lambda x: np.where(x < 0, np.negative(x), x),
    "sign": lambda x: (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype), "not": np.invert,
}
_BOOL_UNARY = {"not": np.logical_not, "abs": lambda x: x, "neg": lambda x: x, "sign": lambda x: x}


def unary(op: str, x, dt: DType):
    """op applied to x, a value of dt."""
    table = _FLOAT_UNARY if dt.is_float else _BOOL_UNARY if dt.is_bool else _INT_UNARY
    fn = table.get(op) if K.scalar_func(op, dt) is not None else None
    if fn is None:
        raise KernelInterpretError(f"unary {op} is not defined for {dt}")
    return np.asarray(fn(np.asarray(x))).astype(compute_dtype(dt))[()]


def _float_max_min(op: str, a, b, in_reduction: bool):
    a, b = np.asarray(a), np.asarray(b)
    t = np.where(b > a, b, a) if op == "max" else np.where(b < a, b, a)
    if in_reduction:  # llvm.maximum/minimum: -0 < +0
        zeros = (a == 0) & (b == 0)
        pick_b = np.signbit(a) if op == "max" else ~np.signbit(a)
        t = np.where(zeros & pick_b, b, t)
        return np.where(np.isnan(a), a, np.where(np.isnan(b), b, t))[()]
    return np.where(np.isnan(b), b, t)[()]  # b beats a only when better; a NaN b wins


def _float_mod(a, b):
    a, b = np.asarray(a), np.asarray(b)
    zero = a.dtype.type(0)
    r = np.fmod(a, b)
    fix = (r != 0) & ((r < 0) ^ (b < 0))
    r = np.where(fix, r + b, r)
    return np.where(r == 0, np.copysign(zero, b), r)[()]


def _int_div_mod(op: str, a, b):
    a, b = np.asarray(a), np.asarray(b)
    one = a.dtype.type(1)
    bad = (b == 0) | (b == -1)
    d = np.where(bad, one, b)
    if op == "div":
        return np.where(b == 0, a.dtype.type(0), np.where(b == -1, np.negative(a), a // d))[()]
    return np.where(bad, a.dtype.type(0), a % d)[()]


def _int_pow(a, b):
    a, b = np.asarray(a), np.asarray(b)
    a, b = np.broadcast_arrays(a, b)
    t = a.dtype.type
    acc, base, e = np.ones_like(a), a.copy(), np.where(b < 0, t(0), b)
    while np.any(e != 0):
        acc = np.where((e & 1) == 1, acc * base, acc)
        base = base * base
        e = e >> 1
    # negative exponents: exact for bases 1 and -1, else 0 (numpy raises)
    neg = np.where(a == 1, t(1), np.where(a == -1, np.where((b & 1) == 1, t(-1), t(1)), t(0)))
    return np.where(b < 0, neg, acc)[()]


_RING = {"add": operator.add, "sub": operator.sub, "mul": operator.mul}


def binary(op: str, a, b, dt: DType, in_reduction: bool = False):
    """a op b for values of dt; in_reduction: an Assign in a `reduce` loop."""
    if K.scalar_func(op, dt) is None or op in K.COMPARE_FUNCS:
        raise KernelInterpretError(f"binary {op} is not defined for {dt}")
    if not dt.is_bool and op in _RING:  # wrapping for ints, IEEE for floats: numpy's own
        return _RING[op](a, b)
    if dt.is_float:
        if op == "div":
            return a / b
        if op == "pow":  # through float64, as the other math functions
            wide = np.power(np.asarray(a, np.float64), np.asarray(b, np.float64))
            return wide.astype(compute_dtype(dt))[()]
        if op in ("max", "min"):
            return _float_max_min(op, a, b, in_reduction)
        if op == "mod":
            return _float_mod(a, b)
        if op in ("and", "or"):
            za, zb = np.not_equal(a, 0), np.not_equal(b, 0)
            both = np.logical_and(za, zb) if op == "and" else np.logical_or(za, zb)
            return both.astype(compute_dtype(dt))
    elif dt.is_bool:
        if op in ("add", "or", "max"):
            return np.logical_or(a, b)
        if op in ("mul", "and", "min"):
            return np.logical_and(a, b)
        if op == "sub":
            return np.logical_xor(a, b)
    else:
        if op in ("div", "mod"):
            return _int_div_mod(op, a, b)
        if op == "max":
            return np.maximum(a, b)
        if op == "min":
            return np.minimum(a, b)
        if op == "and":
            return np.bitwise_and(a, b)
        if op == "or":
            return np.bitwise_or(a, b)
        if op == "pow":
            return _int_pow(a, b)
    raise KernelInterpretError(f"binary {op} is not defined for {dt}")


_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
            "gt": np.greater, "ge": np.greater_equal}


def compare(op: str, a, b):
    """Ordered float compares except ne (NaN != NaN); ints signed; bools unsigned."""
    fn = _COMPARE.get(op)
    if fn is None:
        raise KernelInterpretError(f"unknown compare op {op!r}")
    return fn(a, b)
