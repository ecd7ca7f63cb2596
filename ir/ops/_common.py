"""Shape and dtype rules shared by op definitions."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..dtypes import DType
from ..errors import DTypeError, ShapeError
from ..types import TensorType, format_shape


def broadcast_shapes(op: str, *shapes: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        shown = " and ".join(format_shape(s) for s in shapes)
        raise ShapeError(f"{op}: shapes {shown} do not broadcast (numpy rules: trailing "
                         "dimensions must be equal or 1)") from None


def same_dtype(op: str, types: Sequence[TensorType]) -> DType:
    first = types[0].dtype
    for t in types[1:]:
        if t.dtype != first:
            shown = ", ".join(str(t) for t in types)
            raise DTypeError(f"{op}: operands have different dtypes ({shown}); graphc does not "
                             "promote implicitly, insert a cast")
    return first


def require_float(op: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise DTypeError(f"{op} needs a floating-point operand, got {t}")


def require_numeric(op: str, t: TensorType) -> None:
    if t.dtype.is_bool:
        raise DTypeError(f"{op} needs a numeric operand, got {t}")


def require_int(op: str, t: TensorType, what: str = "operand") -> None:
    if not t.dtype.is_int:
        raise DTypeError(f"{op} needs an integer {what}, got {t}")


def normalize_axis(op: str, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for rank {rank}")
    return axis % rank


def check_axes(op: str, axes: Sequence[int], rank: int) -> tuple[int, ...]:
    """Axes must be canonical (non-negative, sorted, unique): the builder normalises them."""
    for a in axes:
        if not 0 <= a < rank:
            raise ShapeError(f"{op}: axis {a} is out of range for rank {rank}")
    if list(axes) != sorted(set(axes)):
        raise ShapeError(f"{op}: axes {tuple(axes)} must be sorted and unique")
    return tuple(axes)


def reduced_shape(shape: tuple[int, ...], axes: Sequence[int], keepdims: bool) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)
