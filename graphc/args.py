"""Checking the builder's non-tensor arguments: ints, int sequences, shapes, dtypes, arrays.

Every public function that takes a Python value where the graph needs an int (an axis, a
stride, a shape) goes through these, so the same input is refused the same way everywhere:
a float is never truncated (`kernel=2.5` is an error, not 2), a bool is not an int, nested
sequences and strings are not int sequences, and values beyond 64 bits (the kernel IR's
index width) are refused. Errors are BuildErrors at the caller's source line.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .ir import dtypes
from .ir.errors import BuildError, GraphcError
from .ir.loc import capture_loc

INT64_MAX = 2**63 - 1


def _fail(message: str) -> BuildError:
    return BuildError(message, loc=capture_loc())


def is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def as_int(v: Any, what: str) -> int:
    """An int (Python or numpy, not bool) that fits in 64 bits."""
    if not is_int(v):
        raise _fail(f"{what} must be an int, got {v!r} ({type(v).__name__})")
    out = int(v)
    if not -INT64_MAX - 1 <= out <= INT64_MAX:
        raise _fail(f"{what} = {out} does not fit in 64 bits")
    return out


def as_ints(v: Any, what: str, *, scalar: bool = True) -> tuple[int, ...]:
    """A flat sequence of ints (a list, tuple or 1-D integer array); an int alone is one
    item when `scalar`. Strings, nested sequences, floats and None are refused."""
    if scalar and is_int(v):
        return (as_int(v, what),)
    if isinstance(v, np.ndarray):
        if v.ndim != 1:
            raise _fail(f"{what} must be a flat sequence of ints, got a {v.ndim}-D array")
        v = v.tolist() if v.dtype.kind in "iu" else list(v)
    if not isinstance(v, (list, tuple)):
        kind = "an int or a sequence of ints" if scalar else "a sequence of ints"
        raise _fail(f"{what} must be {kind}, got {v!r} ({type(v).__name__})")
    return tuple(as_int(x, f"{what}[{i}]") for i, x in enumerate(v))


def as_shape(v: Any, what: str = "shape") -> tuple[int, ...]:
    """Non-negative dimensions whose product an int64 index can address."""
    shape = as_ints(v, what)
    if any(d < 0 for d in shape):
        raise _fail(f"{what} {shape} has a negative dimension")
    if math.prod(shape) > INT64_MAX:
        raise _fail(f"{what} {shape} has more elements than a 64-bit index can address")
    return shape


def as_float(v: Any, what: str) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _fail(f"{what} must be a number, got {v!r} ({type(v).__name__})")
    try:
        return float(v)
    except OverflowError:
        raise _fail(f"{what} = {v} is too large for a float") from None


def as_bool(v: Any, what: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _fail(f"{what} must be True or False, got {v!r} ({type(v).__name__})")
    return bool(v)


def as_dtype(v: Any, what: str = "dtype") -> dtypes.DType:
    """A graphc dtype from a name, numpy dtype or DType; None is not a dtype (numpy would
    read it as float64)."""
    if v is None or isinstance(v, (bool, int, float, np.bool_)):
        raise _fail(f"{what} must be one of {', '.join(dtypes.BY_NAME)}, got {v!r}")
    try:
        return dtypes.dtype(v)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())
    except (TypeError, ValueError):
        raise _fail(f"{what} must be one of {', '.join(dtypes.BY_NAME)}, got {v!r}") from None


def as_array(v: Any, what: str) -> np.ndarray:
    """numpy's reading of a value (ragged lists and the like are refused), numeric or bool."""
    try:
        arr = np.asarray(v)
    except (TypeError, ValueError, OverflowError) as e:
        raise _fail(f"{what} cannot be read as an array ({type(v).__name__}: {e})") from None
    if arr.dtype.kind not in "fiub":
        raise _fail(f"{what} has dtype {arr.dtype} ({type(v).__name__}); graphc tensors are "
                    f"{', '.join(dtypes.BY_NAME)}")
    return arr
