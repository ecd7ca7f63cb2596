"""Element types. A small closed set, each tied to its numpy dtype."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import DTypeError


@dataclass(frozen=True)
class DType:
    name: str
    np_dtype: np.dtype
    is_float: bool
    is_int: bool

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize

    @property
    def dtype(self) -> np.dtype:
        """numpy reads a `.dtype` attribute, so numpy code traced by gc.jit can write
        `np.ones(n, t.dtype)` with a Tensor's dtype."""
        return self.np_dtype

    @property
    def is_bool(self) -> bool:
        return self.name == "bool"

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"DType({self.name})"


f16 = DType("f16", np.dtype(np.float16), True, False)
f32 = DType("f32", np.dtype(np.float32), True, False)
f64 = DType("f64", np.dtype(np.float64), True, False)
i32 = DType("i32", np.dtype(np.int32), False, True)
i64 = DType("i64", np.dtype(np.int64), False, True)
bool_ = DType("bool", np.dtype(np.bool_), False, False)

ALL: tuple[DType, ...] = (f16, f32, f64, i32, i64, bool_)
BY_NAME: dict[str, DType] = {d.name: d for d in ALL}
_BY_NP: dict[np.dtype, DType] = {d.np_dtype: d for d in ALL}
_ALIASES = {"float16": f16, "float32": f32, "float64": f64, "int32": i32, "int64": i64,
            "half": f16, "float": f32, "double": f64, "bool_": bool_}


def dtype(x: "DType | str | np.dtype | type") -> DType:
    """Coerce a name ('f32', 'float32'), numpy dtype or DType to a DType."""
    if isinstance(x, DType):
        return x
    if isinstance(x, str):
        if x in BY_NAME:
            return BY_NAME[x]
        if x in _ALIASES:
            return _ALIASES[x]
    try:
        npd = np.dtype(x)
    except TypeError:
        npd = None
    if npd is not None and npd in _BY_NP:
        return _BY_NP[npd]
    raise DTypeError(f"unsupported dtype {x!r}; graphc supports {', '.join(BY_NAME)}")


def from_numpy(d: np.dtype) -> DType:
    return dtype(d)


def float_to_int(x: np.ndarray, to: DType) -> np.ndarray:
    """graphc's float -> integer conversion: truncation toward zero, saturating at the
    integer range, NaN to 0 (as CUDA's cvt.rzi, LLVM's fptosi.sat and WebAssembly's
    trunc_sat define it; numpy leaves it to the CPU, INT_MIN on x86)."""
    info = np.iinfo(to.np_dtype)
    x = np.asarray(x)
    hi = float(2 ** (info.bits - 1))
    with np.errstate(invalid="ignore"):
        out = np.trunc(np.where(np.isfinite(x), x, 0)).astype(np.float64)
        out = np.clip(out, -hi, hi - 1).astype(to.np_dtype)  # within range: exact
    out = np.where(x >= hi, info.max, out)
    out = np.where(x < -hi, info.min, out)
    return np.where(np.isnan(x), 0, out).astype(to.np_dtype)

