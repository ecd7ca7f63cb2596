"""A JSON description of a graph for tools (`graphc dump --format json`).

Values are referred to by the names the text printer gives them, so the JSON and the text
dump of one graph agree. Constant data is summarised (dtype, shape), not embedded.
"""
from __future__ import annotations

from typing import Any

from .graph import Graph, Value
from .text import value_names


def _attr(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_attr(x) for x in v]
    if isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def graph_to_json(g: Graph) -> dict[str, Any]:
    names = value_names(g)

    def ref(v: Value) -> str:
        return names[v]

    def tensor(v: Value) -> dict[str, Any]:
        return {"name": ref(v), "dtype": v.dtype.name, "shape": list(v.shape)}

    return {
        "name": g.name,
        "inputs": [tensor(v) for v in g.inputs],
        "params": [dict(tensor(v), trainable=v.trainable,
                        init=v.init.to_text() if v.init is not None else "external")
                   for v in g.params],
        "constants": [tensor(v) for v in g.constants],
        "nodes": [{
            "op": n.op,
            "inputs": [ref(v) for v in n.inputs],
            "attrs": {k: _attr(v) for k, v in n.attrs.items()},
            "outputs": [tensor(v) for v in n.outputs],
            "loc": None if n.loc is None else {"file": n.loc.file, "line": n.loc.line},
        } for n in g.nodes],
        "outputs": [ref(v) for v in g.outputs],
        "updates": {k: ref(v) for k, v in g.updates.items()},
    }
