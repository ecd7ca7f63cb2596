"""A graph's computation in float64: the truth its float32 runs are judged against (by the
differential fuzzer and by translation validation)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import dtypes
from .errors import GraphcError
from .graph import Graph, Value
from .types import TensorType

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


def wide_feeds(feeds: Mapping[str, np.ndarray], graph: Graph) -> dict[str, np.ndarray]:
    types = {v.name: v.type for v in list(graph.inputs) + list(graph.params)}
    return {k: np.asarray(a).astype(_wide_type(types[k]).dtype.np_dtype) if k in types else a
            for k, a in feeds.items()}
