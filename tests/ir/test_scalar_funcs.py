"""The kernel-IR scalar vocabulary (ir/kernel.py SCALAR_FUNCS) is the one list: the kernel
interpreter defines exactly its (function, dtype) pairs, with values an independent numpy
formula gives, and the LLVM math library implements exactly its library functions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from graphc.ir import kernel as K
from graphc.ir import interpret as I
from graphc.ir.dtypes import bool_, f32, f64, i32, i64
from graphc.ir.errors import GraphcError

DTYPES = (f32, f64, i32, i64, bool_)
SAMPLES = {"f": [-2.5, -0.75, -1e-4, 0.0, 0.3, 1.0, 3.25], "i": [-7, -1, 0, 1, 2, 5], "b": [False, True]}

# independent float64 formulas for the float functions (no code of the interpreter)
_ERF = np.vectorize(math.erf)
REFERENCE = {
    "neg": lambda x: -x, "abs": np.fabs, "sign": np.sign, "not": lambda x: (x == 0) * 1.0,
    "sqrt": lambda x: np.sqrt(x), "exp": np.exp, "expm1": np.expm1, "log": np.log,
    "rsqrt": lambda x: np.power(x, -0.5), "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)), "erf": _ERF, "sin": np.sin, "cos": np.cos,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide,
    "pow": np.power, "max": np.maximum, "min": np.minimum,
    "mod": lambda a, b: a - np.floor(a / b) * b,
    "and": lambda a, b: ((a != 0) & (b != 0)) * 1.0, "or": lambda a, b: ((a != 0) | (b != 0)) * 1.0,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal,
}


def _kind(dt) -> str:
    return "f" if dt.is_float else "b" if dt.is_bool else "i"


def _values(dt, positive: bool = False) -> np.ndarray:
    xs = np.array(SAMPLES[_kind(dt)], dtype=dt.np_dtype)
    return np.abs(xs) + (1 if dt.is_float else 0) if positive and not dt.is_bool else xs


def _apply(f: K.ScalarFunc, dt, xs, ys):
    if f.compare:
        return I.compare(f.name, xs, ys)
    if f.arity == 1:
        return I.unary(f.name, xs, dt)
    return I.binary(f.name, xs, ys, dt)


def test_vocabulary_lists_come_from_the_table() -> None:
    assert set(K.UNARY_FUNCS) | set(K.BINARY_FUNCS) | set(K.COMPARE_FUNCS) == set(K.SCALAR_FUNCS)
    assert "expm1" in K.UNARY_FUNCS and "expm1" in K.MATH_FUNCS
    assert set(REFERENCE) == set(K.SCALAR_FUNCS)  # a new entry needs a reference here


@pytest.mark.parametrize("name", sorted(K.SCALAR_FUNCS))
@pytest.mark.parametrize("dt", DTYPES, ids=str)
def test_interpreter_defines_exactly_the_table(name: str, dt) -> None:
    f = K.SCALAR_FUNCS[name]
    positive = name in ("log", "sqrt", "rsqrt", "pow", "div", "mod")  # in-domain operands
    xs = _values(dt, positive)
    ys = _values(dt, positive=True)[::-1]
    if K.scalar_func(name, dt) is None:
        with pytest.raises(GraphcError):
            _apply(f, dt, xs, ys)
        return
    got = np.asarray(_apply(f, dt, xs, ys))
    if not dt.is_float:
        return  # integer and bool semantics are checked exactly in test_interpret.py
    args = (xs.astype(np.float64),) if f.arity == 1 else (xs.astype(np.float64), ys.astype(np.float64))
    want = REFERENCE[name](*args)
    rtol = 2e-6 if dt == f32 else 1e-13
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol)


def test_llvm_math_library_implements_the_library_entries() -> None:
    mathlib = pytest.importorskip("graphc.backends.llvm.mathlib")
    assert set(mathlib.MATH_FUNCS) == set(K.MATH_FUNCS)


def test_llvm_codegen_reads_the_table() -> None:
    codegen = pytest.importorskip("graphc.backends.llvm.codegen")
    assert set(codegen.MATH_FUNCS) == set(K.MATH_FUNCS)
