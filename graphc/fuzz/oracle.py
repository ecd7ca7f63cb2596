"""What a right answer is: the reference interpreter in float64 as the truth, and
tolerances derived from the graph and from the reference's own rounding.

A float32 result can differ from numpy's float32 result for good reasons (another
summation order, fused multiply-adds, vector transcendental functions), so comparing two
float32 programs with one fixed tolerance either misses real bugs or drowns in false
alarms. Instead every candidate is compared with the *truth* (the same graph widened to
float64 and run by the reference interpreter), and it may be as far from the truth as

    eps(dtype) * (8 + budget(v)) * (|truth_i| + max(rms(truth), scale(v)))   +   4 * max|ref32 - truth|

where rms(truth) is at least the scale of the values v is computed from
(`magnitudes`: a difference of nearly equal terms keeps their rounding error, not its
own size), `budget(v)` is the rounding error the ops on v's path may add, in units of eps,
summed over its producers (see `rounding_budget`), and the last term is the float32
reference's own distance from the truth: a program may be as ill-conditioned for the
candidate as it visibly is for numpy. Integer and bool results must be equal to the
float32 reference's; where that reference itself differs from the truth (a comparison or
argmax whose operands are within rounding of a tie) the value is ill-conditioned and not
compared. A mismatch is only reported when the truth is stable: re-run on inputs
perturbed by a few eps, the truth must move less than the tolerance, otherwise a rounding
difference can legitimately flip a discrete choice (relu at 0, max-pool routing, a
comparison), and the value is counted as unstable instead.
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
