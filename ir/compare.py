"""Structural graph equality: `same_graph(a, b)` describes the first difference, or None.

Values are matched by position of definition (input i, parameter i, constant i, output k
of node j), not by name, so two graphs built the same way compare equal whatever their
anonymous values are called. Input and parameter names do matter (they are the graph's
interface), and so do: the graph name, types, constant data (dtype, shape and bytes),
parameter initialisers (by their text) and trainability, ops, attributes (strictly: 1 and
1.0 differ, so do 0.0 and -0.0; NaN equals NaN), operand wiring, output types, source
locations, graph outputs and parameter updates.
"""
from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from .graph import Graph, Node, Value
from .text import attrs_equal, format_node, print_graph, value_names

__all__ = ["same_graph", "assert_same_graph"]


def _positions(g: Graph) -> dict[Value, tuple]:
    pos: dict[Value, tuple] = {}
    for i, v in enumerate(g.inputs):
        pos.setdefault(v, ("input", i))
    for i, v in enumerate(g.params):
        pos.setdefault(v, ("param", i))
    for i, v in enumerate(g.constants):
        pos.setdefault(v, ("const", i))
    for j, n in enumerate(g.nodes):
        for k, v in enumerate(n.outputs):
            pos.setdefault(v, ("node", j, k))
    return pos


def _show_pos(p: tuple | None) -> str:
    if p is None:
        return "a value not defined in the graph"
    if p[0] == "node":
        return f"output {p[2]} of node {p[1]}"
    return {"input": "input", "param": "parameter", "const": "constant"}[p[0]] + f" {p[1]}"


def _init_text(v: Value) -> str | None:
    return None if v.init is None else v.init.to_text()


def _data_bytes(v: Value) -> bytes | None:
    if v.data is None:
        return None
    return np.ascontiguousarray(v.data, dtype=v.type.dtype.np_dtype).tobytes()


def same_graph(a: Graph, b: Graph, *, check_names: bool = False,
               check_param_values: bool = False) -> str | None:
    """None when a and b are structurally identical, else the first difference in words.

    `check_names`: also compare the names of constants and node outputs (inputs' and
    parameters' names are always compared). `check_param_values`: also compare the
    explicit parameter values held beside the graph (`Graph.param_values`).
    """
    if a.name != b.name:
        return f"graph names differ: {a.name!r} vs {b.name!r}"
    for what, la, lb in (("inputs", a.inputs, b.inputs), ("parameters", a.params, b.params),
                         ("constants", a.constants, b.constants), ("nodes", a.nodes, b.nodes)):
        if len(la) != len(lb):
            return f"number of {what} differs: {len(la)} vs {len(lb)}"
    for i, (x, y) in enumerate(zip(a.inputs, b.inputs)):
        if x.name != y.name:
            return f"input {i}: names differ: {x.name!r} vs {y.name!r}"
        if x.type != y.type:
            return f"input {i} (%{x.name}): types differ: {x.type} vs {y.type}"
    for i, (x, y) in enumerate(zip(a.params, b.params)):
        if x.name != y.name:
            return f"parameter {i}: names differ: {x.name!r} vs {y.name!r}"
        if x.type != y.type:
            return f"parameter {i} (%{x.name}): types differ: {x.type} vs {y.type}"
        if _init_text(x) != _init_text(y):
            return (f"parameter {i} (%{x.name}): initialisers differ: "
                    f"{_init_text(x) or 'external'} vs {_init_text(y) or 'external'}")
        if bool(x.trainable) != bool(y.trainable):
            return f"parameter {i} (%{x.name}): trainable differs: {x.trainable} vs {y.trainable}"
    if check_param_values:
        if sorted(a.param_values) != sorted(b.param_values):
            return (f"explicit parameter values differ: {sorted(a.param_values)} vs "
                    f"{sorted(b.param_values)}")
        for k in a.param_values:
            xa, xb = np.asarray(a.param_values[k]), np.asarray(b.param_values[k])
            if xa.dtype != xb.dtype or xa.shape != xb.shape or xa.tobytes() != xb.tobytes():
                return f"explicit value of parameter {k!r} differs"
    for i, (x, y) in enumerate(zip(a.constants, b.constants)):
        if x.type != y.type:
            return f"constant {i}: types differ: {x.type} vs {y.type}"
        if _data_bytes(x) != _data_bytes(y):
            return f"constant {i} ({x.type}): data differs: {_short(x.data)} vs {_short(y.data)}"
        if check_names and (x.name or None) != (y.name or None):
            return f"constant {i}: names differ: {x.name!r} vs {y.name!r}"
    pa, pb = _positions(a), _positions(b)
    na = nb = None
    for j, (x, y) in enumerate(zip(a.nodes, b.nodes)):
        diff = _node_diff(x, y, pa, pb, check_names)
        if diff:
            na = na or value_names(a)
            nb = nb or value_names(b)
            return (f"node {j} differs: {diff}\n  left:  {format_node(x, na)}\n"
                    f"  right: {format_node(y, nb)}")
    if len(a.outputs) != len(b.outputs):
        return f"number of graph outputs differs: {len(a.outputs)} vs {len(b.outputs)}"
    for k, (x, y) in enumerate(zip(a.outputs, b.outputs)):
        if pa.get(x) != pb.get(y):
            return f"graph output {k} differs: {_show_pos(pa.get(x))} vs {_show_pos(pb.get(y))}"
    if set(a.updates) != set(b.updates):
        return f"updated parameters differ: {sorted(a.updates)} vs {sorted(b.updates)}"
    for k in a.updates:
        x, y = a.updates[k], b.updates[k]
        if pa.get(x) != pb.get(y):
            return (f"update of {k!r} differs: {_show_pos(pa.get(x))} vs "
                    f"{_show_pos(pb.get(y))}")
    return None


def _short(d: Any) -> str:
    if d is None:
        return "no data"
    arr = np.asarray(d)
    return np.array2string(arr.reshape(-1)[:8], precision=9) + (" ..." if arr.size > 8 else "")


def _node_diff(x: Node, y: Node, pa: dict, pb: dict, check_names: bool) -> str | None:
    if x.op != y.op:
        return f"ops differ: {x.op} vs {y.op}"
    if len(x.inputs) != len(y.inputs):
        return f"number of operands differs: {len(x.inputs)} vs {len(y.inputs)}"
    for k, (u, v) in enumerate(zip(x.inputs, y.inputs)):
        if pa.get(u) != pb.get(v):
            return f"operand {k} differs: {_show_pos(pa.get(u))} vs {_show_pos(pb.get(v))}"
    if set(x.attrs) != set(y.attrs):
        return f"attribute names differ: {sorted(x.attrs)} vs {sorted(y.attrs)}"
    for k in x.attrs:
        if not attrs_equal(x.attrs[k], y.attrs[k]):
            return f"attribute {k} differs: {x.attrs[k]!r} vs {y.attrs[k]!r}"
    if len(x.outputs) != len(y.outputs):
        return f"number of outputs differs: {len(x.outputs)} vs {len(y.outputs)}"
    for k, (u, v) in enumerate(zip(x.outputs, y.outputs)):
        if u.type != v.type:
            return f"output {k}: types differ: {u.type} vs {v.type}"
        if check_names and (u.name or None) != (v.name or None):
            return f"output {k}: names differ: {u.name!r} vs {v.name!r}"
    if x.loc != y.loc:
        return f"source locations differ: {x.loc} vs {y.loc}"
    if x.group != y.group:
        return f"fusion groups differ: {x.group} vs {y.group}"
    return None


def assert_same_graph(a: Graph, b: Graph, **kwargs: Any) -> None:
    """AssertionError with the first difference (and a diff of the texts) unless the same."""
    diff = same_graph(a, b, **kwargs)
    if diff is None:
        return
    try:
        ta, tb = print_graph(a).splitlines(), print_graph(b).splitlines()
        text = "\n".join(difflib.unified_diff(ta, tb, "left", "right", lineterm="", n=2))
    except Exception:  # noqa: BLE001 - a graph too broken to print
        text = ""
    raise AssertionError(f"graphs differ: {diff}" + (f"\n{text}" if text else ""))
