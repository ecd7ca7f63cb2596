"""How far a computed value may be from the true one (the graph run in float64):

    eps(dtype) * (8 + budget(v)) * (|truth_i| + max(rms(truth), scale(v)))  +  4 * max|ref32 - truth|

`budget(v)` sums, along v's worst path, the rounding each producer may add in eps units
(elementwise ops a few ulp; reductions, contractions and windows one per term, estimated
from the registry: `rounding_budget`); `scale(v)` is the largest magnitude v is computed
from (`magnitudes`: x - mean(x) is near 0, its rounding error is not); the last term is the
float32 reference's own distance from the truth (a program may be as ill-conditioned for a
candidate as it visibly is for numpy). Integer and bool results must equal the float32
reference's. Used by the differential fuzzer (graphc/fuzz) and by translation validation
(ir/validate.py), so both judge a result the same way."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .graph import Graph, Value
from .registry import get_op
from .types import TensorType


def _node_rounding(node) -> float:
    """eps-units of error one node may add: elementwise ops a few ulp (vector
    transcendental functions included), other ops one per term they combine (sums,
    products, windows), estimated from how many input elements feed each output."""
    opdef = get_op(node.op)
    out = node.outputs[0].type.size if node.outputs else 1
    if opdef.scalar is not None or opdef.view:
        return 4.0
    terms = sum(v.type.size for v in node.inputs) / max(out, 1)
    return 4.0 + 2.0 * max(terms, 1.0)


def rounding_budget(graph: Graph) -> dict[Value, float]:
    """Per value, the eps-units its producers may add along the worst path."""
    budget: dict[Value, float] = {}
    for n in graph.nodes:
        upstream = max((budget.get(v, 0.0) for v in n.inputs), default=0.0)
        own = _node_rounding(n)
        for o in n.outputs:
            budget[o] = upstream + own
    return budget


def _eps(t: TensorType) -> float:
    return float(np.finfo(t.dtype.np_dtype).eps) if t.dtype.is_float else 0.0


def rms(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64) if np.asarray(a).dtype.kind in "fiub" else np.zeros(0)
    finite = a[np.isfinite(a)]
    return float(np.sqrt(np.mean(finite ** 2))) if finite.size else 0.0


def magnitudes(graph: Graph, env: Mapping[Value, np.ndarray]) -> dict[Value, float]:
    """Per value, the largest rms of it and of every value it is computed from: the scale
    of the terms whose rounding errors it carries (x - mean(x) is near 0, its error is not)."""
    out: dict[Value, float] = {}
    for v in list(graph.inputs) + list(graph.params) + list(graph.constants):
        out[v] = rms(env[v]) if v in env else 0.0
    for n in graph.nodes:
        upstream = max((out.get(u, 0.0) for u in n.inputs), default=0.0)
        for o in n.outputs:
            out[o] = max(upstream, rms(env[o]) if o in env else 0.0)
    return out


@np.errstate(invalid="ignore", over="ignore")
def tolerance(truth: np.ndarray, ref: np.ndarray, t: TensorType, budget: float,
              scale: float = 0.0) -> np.ndarray:
    tr = np.asarray(truth, np.float64)
    finite = np.isfinite(tr)
    own = np.abs(np.asarray(ref, np.float64) - tr)
    own_max = float(own[np.isfinite(own)].max()) if np.isfinite(own).any() else 0.0
    return _eps(t) * (8.0 + budget) * (np.abs(np.where(finite, tr, 0.0)) + max(rms(tr), scale)) \
        + 4.0 * own_max


@np.errstate(invalid="ignore", over="ignore")
def compare(got: np.ndarray, truth: np.ndarray | None, ref: np.ndarray, t: TensorType,
            budget: float, scale: float = 0.0) -> str | None:
    """None when `got` is a right answer for a value of type t, else why not."""
    got = np.asarray(got)
    if got.shape != t.shape:
        return f"shape {got.shape}, expected {t.shape}"
    if got.dtype != t.dtype.np_dtype:
        return f"dtype {got.dtype}, expected {t.dtype.np_dtype}"
    if not t.dtype.is_float:
        if truth is not None and not np.array_equal(np.asarray(truth).astype(ref.dtype), ref):
            return None  # ill-conditioned: numpy's float32 run already differs from the truth
        bad = got != ref
        if bad.any():
            i = np.argwhere(bad)[0]
            return f"element {tuple(int(k) for k in i)}: {got[tuple(i)]!r}, expected {ref[tuple(i)]!r}"
        return None
    truth = np.asarray(ref, np.float64) if truth is None else np.asarray(truth, np.float64)
    g = got.astype(np.float64)
    r = np.asarray(ref, np.float64)
    # Non-finite results: where the float32 reference is non-finite too, the candidate must
    # match its class (NaN, +inf, -inf); where only the truth is finite, the float32 range
    # was exceeded and either answer near the truth or the reference's class passes.
    nonfinite = ~np.isfinite(g) | ~np.isfinite(r)
    same_class = (np.isnan(g) & np.isnan(r)) | (g == r)
    tol = tolerance(truth, r, t, budget, scale)
    close = np.abs(g - truth) <= tol
    good = np.where(nonfinite, same_class | (np.isfinite(g) & np.isfinite(truth) & close), close)
    if good.all():
        return None
    i = tuple(int(k) for k in np.argwhere(~good)[0])
    return (f"element {i}: got {g[i]!r}, truth {truth[i]!r}, float32 reference {r[i]!r}, "
            f"tolerance {tol[i]:.3g} ({int(np.sum(~good))} of {g.size} elements off)")


def stable(truth: np.ndarray, moved: np.ndarray, t: TensorType, budget: float,
           ref: np.ndarray, scale: float = 0.0) -> bool:
    """Whether the truth stays within tolerance when its inputs move by rounding noise."""
    if not t.dtype.is_float:
        return np.array_equal(truth, moved)
    tol = tolerance(truth, ref, t, budget, scale)
    a, b = np.asarray(truth, np.float64), np.asarray(moved, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return bool(np.all(np.where(both, np.abs(a - b) <= tol, (np.isnan(a) & np.isnan(b)) | (a == b))))
