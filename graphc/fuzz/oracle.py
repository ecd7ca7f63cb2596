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

from typing import Mapping, Sequence

import numpy as np

from ..ir import dtypes
from ..ir.errors import GraphcError
from ..ir.graph import Graph, Value
from ..ir.registry import get_op
from ..ir.types import TensorType

WIDE = {"f16": dtypes.f64, "f32": dtypes.f64}


def _wide_type(t: TensorType) -> TensorType:
    return TensorType(t.shape, WIDE.get(t.dtype.name, t.dtype))


def _wide_attr(v):
    if isinstance(v, dtypes.DType):
        return WIDE.get(v.name, v)
    return v


def widened(graph: Graph) -> Graph | None:
    """The same computation with every f16/f32 value in f64 (None when some op refuses
    f64: then the float32 reference is the only oracle)."""
    g = Graph(graph.name)
    m: dict[Value, Value] = {}
    try:
        for v in graph.inputs:
            m[v] = g.add_input(v.name, _wide_type(v.type))
        for v in graph.params:
            m[v] = g.add_param(v.name, _wide_type(v.type), init=v.init, trainable=v.trainable)
        for name, arr in graph.param_values.items():
            g.param_values[name] = arr.astype(WIDE.get(graph.param(name).dtype.name,
                                                       graph.param(name).dtype).np_dtype)
        for v in graph.constants:
            t = _wide_type(v.type)
            m[v] = g.add_constant(np.asarray(v.data).astype(t.dtype.np_dtype), t.dtype, name=v.name)
        for n in graph.nodes:
            attrs = {k: _wide_attr(a) for k, a in n.attrs.items()}
            new = g.add_node(n.op, [m[v] for v in n.inputs], attrs, n.loc)
            m.update(zip(n.outputs, new.outputs))
    except GraphcError:
        return None
    g.outputs = [m[v] for v in graph.outputs]
    g.updates = {k: m[v] for k, v in graph.updates.items()}
    return g


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


def tolerance(truth: np.ndarray, ref: np.ndarray, t: TensorType, budget: float,
              scale: float = 0.0) -> np.ndarray:
    tr = np.asarray(truth, np.float64)
    finite = np.isfinite(tr)
    own = np.abs(np.asarray(ref, np.float64) - tr)
    own_max = float(own[np.isfinite(own)].max()) if np.isfinite(own).any() else 0.0
    return _eps(t) * (8.0 + budget) * (np.abs(np.where(finite, tr, 0.0)) + max(rms(tr), scale)) \
        + 4.0 * own_max


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


def perturbed(arrays: Mapping[str, np.ndarray], seed: int, scale: float = 16.0
              ) -> dict[str, np.ndarray]:
    """The same float arrays moved by about `scale` eps of their dtype, relative."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind == "f":
            eps = float(np.finfo(a.dtype).eps) * scale
            a = (a * (1 + eps * rng.standard_normal(a.shape))).astype(a.dtype)
        out[k] = a
    return out


def stable(truth: np.ndarray, moved: np.ndarray, t: TensorType, budget: float,
           ref: np.ndarray, scale: float = 0.0) -> bool:
    """Whether the truth stays within tolerance when its inputs move by rounding noise."""
    if not t.dtype.is_float:
        return np.array_equal(truth, moved)
    tol = tolerance(truth, ref, t, budget, scale)
    a, b = np.asarray(truth, np.float64), np.asarray(moved, np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    return bool(np.all(np.where(both, np.abs(a - b) <= tol, (np.isnan(a) & np.isnan(b)) | (a == b))))


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


__all__ = ["widened", "rounding_budget", "magnitudes", "compare", "tolerance", "perturbed",
           "stable", "as_list"]


def wide_feeds(feeds: Mapping[str, np.ndarray], graph: Graph) -> dict[str, np.ndarray]:
    types = {v.name: v.type for v in list(graph.inputs) + list(graph.params)}
    return {k: np.asarray(a).astype(_wide_type(types[k]).dtype.np_dtype) if k in types else a
            for k, a in feeds.items()}

