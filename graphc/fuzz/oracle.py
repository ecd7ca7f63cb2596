"""Rounding noise for the fuzzer's stability check.

A result is judged against the truth with ir/tolerance.py's rule. Before a disagreement is
reported, the truth is re-run on inputs, parameters and constants moved by a few eps (exact
zeros included): if the truth itself moves by more than the tolerance, a rounding
difference can legitimately flip a discrete choice (relu at 0, max-pool routing, a
comparison, the sign of a zero sum) and the value is counted unstable, not wrong.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..ir.graph import Graph


def perturbed(arrays: Mapping[str, np.ndarray], seed: int, scale: float = 16.0
              ) -> dict[str, np.ndarray]:
    """The same float arrays moved by about `scale` eps of their dtype, relative; exact
    zeros move too (by as much as the array's other values would), so a result that
    hangs on the sign of an exact zero (rsqrt of a sum of zeros) shows as unstable."""
    rng = np.random.default_rng(seed)
    return {k: _moved(np.asarray(a), rng, scale) for k, a in arrays.items()}


def _moved(a: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    if a.dtype.kind != "f" or not a.size:
        return a
    eps = float(np.finfo(a.dtype).eps) * scale
    finite = a[np.isfinite(a)]
    floor = max(float(np.sqrt(np.mean(finite.astype(np.float64) ** 2))) if finite.size else 0.0,
                float(np.finfo(a.dtype).tiny))
    noise = rng.standard_normal(a.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(a == 0, eps * floor * noise, a * (1 + eps * noise)).astype(a.dtype)


def perturbed_constants(graph: Graph, seed: int, scale: float = 16.0) -> Graph:
    """A copy of graph whose float constants are moved as `perturbed` moves arrays."""
    g = graph.copy()
    rng = np.random.default_rng(seed)
    for c in g.constants:
        data = _moved(np.asarray(c.data), rng, scale)
        data.setflags(write=False)
        c.data = data
    return g


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


__all__ = ["perturbed", "perturbed_constants", "as_list"]
