"""TensorType: a static shape and a dtype."""
from __future__ import annotations

from dataclasses import dataclass
from math import prod

from .dtypes import DType, dtype as to_dtype
from .errors import ShapeError


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        for d in shape:
            if not isinstance(d, int) or isinstance(d, bool) or d < 0:
                raise ShapeError(f"shape {shape} has a dimension that is not a non-negative int")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "dtype", to_dtype(self.dtype))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dt: "DType | str") -> "TensorType":
        return TensorType(self.shape, to_dtype(dt))

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def format_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"
