"""Parameter initialisers: `gc.param("w", shape, init=gc.init.normal(0.05, seed=0))`.

They are descriptions, not arrays, so they print in the text IR and a dumped graph
re-creates the same initial values.
"""
from __future__ import annotations

from .ir.init import Fill, GlorotUniform, HeNormal, Init, Normal, Ones, Uniform, Zeros


def zeros() -> Init:
    return Zeros()


def ones() -> Init:
    return Ones()


def fill(value: float) -> Init:
    return Fill(float(value))


def normal(std: float = 1.0, *, mean: float = 0.0, seed: int = 0) -> Init:
    return Normal(float(mean), float(std), int(seed))


def uniform(low: float = 0.0, high: float = 1.0, *, seed: int = 0) -> Init:
    return Uniform(float(low), float(high), int(seed))


def he_normal(seed: int = 0) -> Init:
    return HeNormal(int(seed))


def glorot_uniform(seed: int = 0) -> Init:
    return GlorotUniform(int(seed))


__all__ = ["Init", "zeros", "ones", "fill", "normal", "uniform", "he_normal", "glorot_uniform"]
