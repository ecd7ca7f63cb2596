"""Parameter initialisers: `gc.param("w", shape, init=gc.init.normal(0.05, seed=0))`.

They are descriptions, not arrays, so they print in the text IR and a dumped graph
re-creates the same initial values.
"""
from __future__ import annotations

from typing import Callable

from .args import as_float, as_int
from .ir.errors import GraphcError
from .ir.loc import capture_loc
from .ir.init import Fill, GlorotUniform, HeNormal, Init, Normal, Ones, Uniform, Zeros


def _made(make: Callable[[], Init]) -> Init:
    """An initialiser, or its refusal of its arguments at the caller's line."""
    try:
        return make()
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def zeros() -> Init:
    """All zeros (biases, optimiser state)."""
    return Zeros()


def ones() -> Init:
    """All ones (norm scales)."""
    return Ones()


def fill(value: float) -> Init:
    """Every element set to `value`."""
    return _made(lambda: Fill(as_float(value, "fill value")))


def normal(std: float = 1.0, *, mean: float = 0.0, seed: int = 0) -> Init:
    """Normally distributed values with the given mean and std, drawn from `seed`."""
    return _made(lambda: Normal(as_float(mean, "mean"), as_float(std, "std"), as_int(seed, "seed")))


def uniform(low: float = 0.0, high: float = 1.0, *, seed: int = 0) -> Init:
    """Uniformly distributed values in [low, high), drawn from `seed`."""
    return _made(lambda: Uniform(as_float(low, "low"), as_float(high, "high"), as_int(seed, "seed")))


def he_normal(seed: int = 0) -> Init:
    """He (Kaiming) normal: std sqrt(2 / fan_in), for layers followed by relu; from `seed`."""
    return _made(lambda: HeNormal(as_int(seed, "seed")))


def glorot_uniform(seed: int = 0) -> Init:
    """Glorot (Xavier) uniform: limit sqrt(6 / (fan_in + fan_out)); drawn from `seed`."""
    return _made(lambda: GlorotUniform(as_int(seed, "seed")))


__all__ = ["Init", "zeros", "ones", "fill", "normal", "uniform", "he_normal", "glorot_uniform"]
