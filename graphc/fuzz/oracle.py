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


def as_list(result) -> list[np.ndarray]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


__all__ = ["widened", "wide_feeds", "perturbed", "as_list"]


def wide_feeds(feeds: Mapping[str, np.ndarray], graph: Graph) -> dict[str, np.ndarray]:
    types = {v.name: v.type for v in list(graph.inputs) + list(graph.params)}
    return {k: np.asarray(a).astype(_wide_type(types[k]).dtype.np_dtype) if k in types else a
            for k, a in feeds.items()}

