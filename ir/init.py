"""Parameter initialisers that print in the text IR, so a graph's text is self-contained.

A parameter created with an explicit array keeps that array beside the graph
(`Graph.param_values`) and prints as `external`.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod, sqrt

import numpy as np

from .errors import GraphcError
from .types import TensorType


class Init:
    """Produces a parameter's initial value from its type, deterministically."""

    def materialize(self, t: TensorType) -> np.ndarray:
        raise NotImplementedError

    def to_text(self) -> str:
        raise NotImplementedError


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    if len(shape) == 2:  # (in, out) as used by x @ w
        return shape[0], shape[1]
    receptive = prod(shape[2:])  # conv weights (out, in/groups, kh, kw)
    return shape[1] * receptive, shape[0] * receptive


def _check_seed(init: Init) -> None:
    seed = init.seed  # type: ignore[attr-defined]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GraphcError(f"{init.to_text()}: the seed must be a non-negative int, got {seed!r}")


def _check_finite(init: Init, **values: float) -> None:
    for name, v in values.items():
        if not np.isfinite(v):
            raise GraphcError(f"{init.to_text()}: {name} must be finite, got {v!r}")


def _num(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class Zeros(Init):
    def materialize(self, t: TensorType) -> np.ndarray:
        return np.zeros(t.shape, t.dtype.np_dtype)

    def to_text(self) -> str:
        return "zeros()"


@dataclass(frozen=True)
class Ones(Init):
    def materialize(self, t: TensorType) -> np.ndarray:
        return np.ones(t.shape, t.dtype.np_dtype)

    def to_text(self) -> str:
        return "ones()"


@dataclass(frozen=True)
class Fill(Init):
    value: float

    def materialize(self, t: TensorType) -> np.ndarray:
        return np.full(t.shape, self.value, t.dtype.np_dtype)

    def to_text(self) -> str:
        return f"fill({_num(self.value)})"


@dataclass(frozen=True)
class Normal(Init):
    mean: float = 0.0
    std: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_finite(self, mean=self.mean, std=self.std)
        if self.std < 0:
            raise GraphcError(f"{self.to_text()}: std must be >= 0, got {self.std!r}")
        _check_seed(self)

    def materialize(self, t: TensorType) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.normal(self.mean, self.std, t.shape).astype(t.dtype.np_dtype)

    def to_text(self) -> str:
        return f"normal({_num(self.mean)}, {_num(self.std)}, seed={self.seed})"


@dataclass(frozen=True)
class Uniform(Init):
    low: float = 0.0
    high: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_finite(self, low=self.low, high=self.high, range=self.high - self.low)
        if self.low > self.high:
            raise GraphcError(f"{self.to_text()}: low must be <= high")
        _check_seed(self)

    def materialize(self, t: TensorType) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.uniform(self.low, self.high, t.shape).astype(t.dtype.np_dtype)

    def to_text(self) -> str:
        return f"uniform({_num(self.low)}, {_num(self.high)}, seed={self.seed})"


@dataclass(frozen=True)
class HeNormal(Init):
    """He et al. 2015: std = sqrt(2 / fan_in), for layers followed by ReLU."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_seed(self)

    def materialize(self, t: TensorType) -> np.ndarray:
        fan_in, _ = _fans(t.shape)
        return Normal(0.0, sqrt(2.0 / max(fan_in, 1)), self.seed).materialize(t)

    def to_text(self) -> str:
        return f"he_normal(seed={self.seed})"


@dataclass(frozen=True)
class GlorotUniform(Init):
    """Glorot & Bengio 2010: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_seed(self)

    def materialize(self, t: TensorType) -> np.ndarray:
        fan_in, fan_out = _fans(t.shape)
        a = sqrt(6.0 / max(fan_in + fan_out, 1))
        return Uniform(-a, a, self.seed).materialize(t)

    def to_text(self) -> str:
        return f"glorot_uniform(seed={self.seed})"


# Name used in the text IR -> (class, positional field names). The parser reads this.
BY_NAME: dict[str, type[Init]] = {
    "zeros": Zeros, "ones": Ones, "fill": Fill, "normal": Normal, "uniform": Uniform,
    "he_normal": HeNormal, "glorot_uniform": GlorotUniform,
}
