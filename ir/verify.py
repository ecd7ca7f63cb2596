"""The verifier: checks every IR invariant of a Graph and reports all violations at once.

It runs after every pass (in tests and debug mode), so it is linear in the graph size;
networkx is consulted only to explain a use-before-definition (cycle or misordering).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .analysis import find_cycle
from .errors import GraphcError, VerificationError
from .graph import Graph, Node, Value, provide_view
from .loc import Loc
from .registry import get_op
from .text import attrs_equal, format_node, value_names
from .types import TensorType

__all__ = ["verify", "problems"]


class _Problem:
    __slots__ = ("message", "node")

    def __init__(self, message: str, node: Node | None = None) -> None:
        self.message = message
        self.node = node

    def render(self, names: dict | None = None, positions: dict | None = None) -> str:
        if self.node is None:
            return self.message
        n = self.node
        where = f" at {n.loc}" if getattr(n, "loc", None) is not None else ""
        try:
            desc = f"`{format_node(n, names or {}, loc=False)}`"
        except Exception:  # noqa: BLE001 - a node broken enough that printing fails
            try:
                desc = n.describe()
            except Exception:  # noqa: BLE001
                desc = f"{getattr(n, 'op', '?')}"
        pos = (positions or {}).get(n)
        label = f"node {pos} " if pos is not None else "node "
        return f"{label}{desc}{where}: {self.message}"


def _safe_repr(v: Any) -> str:
    try:
        return repr(v)
    except Exception:  # noqa: BLE001
        return f"<{type(v).__name__}>"


def problems(g: Graph) -> list[_Problem]:
    """Every invariant violation in g (empty when g is well formed)."""
    out: list[_Problem] = []
    add = lambda msg, node=None: out.append(_Problem(msg, node))  # noqa: E731

    # -- sources ----------------------------------------------------------------------
    defined: dict[Value, str] = {}  # value -> where it is defined (for "defined twice")
    names: dict[str, str] = {}
    for what, kind, vals in (("input", "input", g.inputs), ("parameter", "param", g.params),
                             ("constant", "const", g.constants)):
        for i, v in enumerate(vals):
            here = f"{what} {i}"
            if not isinstance(v, Value):
                add(f"{here} is a {type(v).__name__}, not a Value")
                continue
            if v in defined:
                add(f"value {_safe_repr(v)} is defined twice: as {defined[v]} and as {here}")
                continue
            defined[v] = here
            if v.kind != kind:
                add(f"{here} {_safe_repr(v)} has kind {v.kind!r}, expected {kind!r}")
            if v.producer is not None:
                add(f"{here} {_safe_repr(v)} has a producer node ({v.producer.op})")
            if not isinstance(v.type, TensorType):
                add(f"{here} {_safe_repr(v)} has type {_safe_repr(v.type)}, not a TensorType")
            if v.name:
                if v.name in names:
                    add(f"duplicate name {v.name!r}: {names[v.name]} and {here}")
                else:
                    names[v.name] = here
            elif kind != "const":
                add(f"{here} has no name")
            if kind == "const":
                d = v.data
                if not isinstance(d, np.ndarray):
                    add(f"constant {i} {_safe_repr(v)} has no data array")
                elif isinstance(v.type, TensorType) and (
                        d.shape != v.type.shape or d.dtype != v.type.dtype.np_dtype):
                    add(f"constant {i} {_safe_repr(v)}: data is {d.dtype}{list(d.shape)}, "
                        f"type says {v.type}")

    # -- nodes ------------------------------------------------------------------------
    node_pos: dict[Node, int] = {}
    out_pos: dict[Value, int] = {}  # node output -> schedule index of its producer
    for i, n in enumerate(g.nodes):
        if not isinstance(n, Node):
            add(f"schedule entry {i} is a {type(n).__name__}, not a Node")
            continue
        if n in node_pos:
            add(f"node is listed twice in the schedule (positions {node_pos[n]} and {i})", n)
            continue
        node_pos[n] = i
        for k, v in enumerate(n.outputs):
            if not isinstance(v, Value):
                add(f"output {k} is a {type(v).__name__}, not a Value", n)
                continue
            if v in defined:
                add(f"output {k} {_safe_repr(v)} is already defined as {defined[v]}", n)
                continue
            defined[v] = f"output {k} of node {i}"
            out_pos[v] = i
            if v.kind != "node":
                add(f"output {k} has kind {v.kind!r}, expected 'node'", n)
            if v.producer is not n:
                other = "no producer" if v.producer is None else f"producer {v.producer.op}"
                add(f"output {k} {_safe_repr(v)} names {other} instead of this node", n)
            if v.index != k:
                add(f"output {k} {_safe_repr(v)} has index {v.index}", n)

    # use before definition, checked in schedule order
    available: set[Value] = {v for v in (*g.inputs, *g.params, *g.constants)
                             if isinstance(v, Value)}
    late: list[tuple[Node, int, Value]] = []
    for n in g.nodes:
        if not isinstance(n, Node) or node_pos.get(n) is None:
            continue
        for k, v in enumerate(n.inputs):
            if not isinstance(v, Value):
                add(f"operand {k} is a {type(v).__name__}, not a Value", n)
            elif v not in available:
                if v in out_pos:
                    late.append((n, k, v))
                else:
                    prod = v.producer
                    if prod is not None and prod in node_pos:
                        origin = (f"its producer, node {node_pos[prod]} ({prod.op}), does not "
                                  "list it as an output")
                    elif prod is not None:
                        origin = f"an output of a node ({prod.op}) not in this graph"
                    else:
                        origin = f"{'an' if v.kind == 'input' else 'a'} {v.kind} not in this graph"
                    add(f"operand {k} {_safe_repr(v)} is not defined in this graph ({origin})", n)
        for v in n.outputs:
            if isinstance(v, Value):
                available.add(v)
    if late:
        cycle = find_cycle(g)
        if cycle:
            vnames = value_names(g)
            path = " -> ".join(format_node(c, vnames, loc=False) for c in cycle)
            path += " -> " + format_node(cycle[0], vnames, loc=False)
            add(f"cycle: {path}", cycle[0])
        for n, k, v in late:
            if cycle and n in cycle:
                continue
            add(f"operand {k} {_safe_repr(v)} is used before its definition (it is produced "
                f"by node {out_pos[v]}, scheduled after this node {node_pos[n]})", n)

    # ops, attributes, types
    for n in g.nodes:
        if not isinstance(n, Node) or node_pos.get(n) is None:
            continue
        try:
            opdef = get_op(n.op)
        except GraphcError as e:
            add(e.message, n)
            continue
        if not isinstance(n.attrs, dict):
            add(f"attrs is a {type(n.attrs).__name__}, not a dict", n)
            continue
        try:
            canon = opdef.check_attrs(n.attrs)
        except GraphcError as e:
            add(f"bad attributes: {e.message}", n)
            continue
        except Exception as e:  # noqa: BLE001
            add(f"bad attributes: {type(e).__name__}: {e}", n)
            continue
        for k in canon:
            if k not in n.attrs:
                add(f"attribute {k} is missing (canonical attrs list every attribute, "
                    f"defaults included)", n)
            elif not attrs_equal(canon[k], n.attrs[k]):
                add(f"attribute {k}={n.attrs[k]!r} is not canonical (expected {canon[k]!r})", n)
        if n.loc is not None and not isinstance(n.loc, Loc):
            add(f"loc is a {type(n.loc).__name__}, not a Loc", n)
        if not all(isinstance(v, Value) and isinstance(v.type, TensorType) for v in n.inputs):
            continue
        try:
            want = opdef.infer_types([v.type for v in n.inputs], canon)
        except GraphcError as e:
            add(f"operands no longer fit the op: {e.message}", n)
            continue
        except Exception as e:  # noqa: BLE001 - an infer function crashing is still reported
            add(f"type inference failed: {type(e).__name__}: {e}", n)
            continue
        have = [getattr(v, "type", None) for v in n.outputs]
        if have != want:
            shown = lambda ts: ", ".join(str(t) for t in ts) or "nothing"  # noqa: E731
            add(f"output types ({shown(have)}) differ from inferred ({shown(want)})", n)

    # -- outputs and updates ----------------------------------------------------------
    for k, v in enumerate(g.outputs):
        if not isinstance(v, Value) or v not in defined:
            add(f"graph output {k} {_safe_repr(v)} is not defined in this graph")
    params = {p.name: p for p in g.params if isinstance(p, Value)}
    if not isinstance(g.updates, dict):
        add(f"updates is a {type(g.updates).__name__}, not a dict")
    else:
        for name, v in g.updates.items():
            p = params.get(name)
            if p is None:
                add(f"update of {name!r}, which is not a parameter (parameters: "
                    f"{', '.join(map(str, params)) or 'none'})")
            if not isinstance(v, Value) or v not in defined:
                add(f"update of {name!r}: value {_safe_repr(v)} is not defined in this graph")
            elif p is not None and v.type != p.type:
                add(f"update of parameter {name!r}: new value is {v.type}, parameter is {p.type}")
    return out


def verify(g: Graph) -> None:
    """Raise VerificationError listing every broken invariant of g; return None if none."""
    found = problems(g)
    if not found:
        return
    try:
        names = value_names(g)
    except Exception:  # noqa: BLE001 - printing names is best effort on a broken graph
        names = {}
    positions = {}
    for i, n in enumerate(g.nodes):
        positions.setdefault(n, i)
    rendered = [p.render(names, positions) for p in found]
    if len(found) == 1:
        msg = f"graph @{g.name} is malformed: {rendered[0]}"
    else:
        msg = f"graph @{g.name} is malformed ({len(found)} problems):\n" + \
            "\n".join(f"  - {r}" for r in rendered)
    err = VerificationError(msg)
    first = next((p.node for p in found if p.node is not None), None)
    err.node = first  # for programmatic use; the message already names every node
    err.loc = getattr(first, "loc", None)
    err.problems = rendered  # type: ignore[attr-defined]
    raise err


provide_view("verify", verify)  # g.verify()
