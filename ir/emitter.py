"""Emitter: builds registry ops into a graph. VJPs and passes use it to add nodes.

`b.mul(x, y)` appends a `mul` node and returns its output; every op in the registry is
reachable this way, so gradient rules are written in terms of other registry ops.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes
from .graph import Graph, Value
from .loc import Loc
from .registry import get_op


class Emitter:
    def __init__(self, graph: Graph, loc: Loc | None = None) -> None:
        self.graph = graph
        self.loc = loc

    def op(self, name: str, *inputs: Value, **attrs: Any) -> Any:
        node = self.graph.add_node(name, inputs, attrs, self.loc)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        get_op(name, self.loc)  # unknown names fail here with the registry's message

        def emit(*inputs: Value, **attrs: Any) -> Any:
            return self.op(name, *inputs, **attrs)
        return emit

    # -- constants ------------------------------------------------------------------
    def const(self, value: Any, dtype: "dtypes.DType | str") -> Value:
        return self.graph.add_constant(np.asarray(value), dtype)

    def scalar(self, value: float, like: Value) -> Value:
        """A rank-0 constant of `like`'s dtype; broadcasting does the rest."""
        return self.const(value, like.dtype)

    # -- helpers shared by gradient rules ---------------------------------------------
    def sum_to(self, g: Value, shape: tuple[int, ...]) -> Value:
        """Undo numpy broadcasting: sum g down to `shape` (the VJP of broadcast_to)."""
        shape = tuple(shape)
        if g.shape == shape:
            return g
        lead = g.type.rank - len(shape)
        axes = list(range(lead))
        for i, d in enumerate(shape):
            if d == 1 and g.shape[lead + i] != 1:
                axes.append(lead + i)
        out = self.op("sum", g, axes=tuple(axes), keepdims=True) if axes else g
        return self.op("reshape", out, shape=shape) if out.shape != shape else out

    def broadcast(self, x: Value, shape: tuple[int, ...]) -> Value:
        return x if x.shape == tuple(shape) else self.op("broadcast_to", x, shape=tuple(shape))

    def reshape(self, x: Value, shape: tuple[int, ...]) -> Value:
        return x if x.shape == tuple(shape) else self.op("reshape", x, shape=tuple(shape))
