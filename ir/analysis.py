"""Graph analyses on a networkx view of the dataflow, and Graphviz DOT rendering.

`to_networkx(g)` gives a `MultiDiGraph` with one nx node per graph `Node` (keyed by the
Node object itself) plus one source per input, parameter and constant (keyed by the
`Value`). Each operand is one edge from the value's producer (or source) to the consumer,
keyed by the operand position, with data `value`, `type` and `index` (output index in the
producer). So the edge count equals the total number of node operands.
"""
from __future__ import annotations

import os
from typing import Iterable

import networkx as nx

from .errors import VerificationError
from .graph import Graph, Node, Value
from .text import format_node, format_type, value_names

__all__ = ["to_networkx", "to_dot", "dataflow_graph", "find_cycle", "topological_order",
           "ancestors"]


def _source_kind(v: Value) -> str:
    return v.kind if v.kind in ("input", "param", "const") else "undefined"


def to_networkx(g: Graph) -> nx.MultiDiGraph:
    """The dataflow of `g` as a MultiDiGraph (see the module doc).

    nx node attributes: `kind` ("node", "input", "param", "const", or "undefined" for an
    operand defined nowhere in `g`), `label` (the value's or statement's text), `op` and
    `position` (schedule index) for nodes. Graph attributes: `name`, `outputs`, `updates`.
    """
    names = value_names(g)
    G = nx.MultiDiGraph(name=g.name, outputs=list(g.outputs), updates=dict(g.updates))
    for v in (*g.inputs, *g.params, *g.constants):
        G.add_node(v, kind=_source_kind(v), label=f"{names.get(v, '?')}: {format_type(v.type)}",
                   type=v.type)
    for i, n in enumerate(g.nodes):
        G.add_node(n, kind="node", op=n.op, position=i, label=format_node(n, names))
    producers = {v: n for n in g.nodes for v in n.outputs}
    for n in g.nodes:
        for k, v in enumerate(n.inputs):
            src = producers.get(v)
            if src is None:
                src = v
                if src not in G:
                    G.add_node(v, kind="undefined", label=f"undefined value {v!r}",
                               type=getattr(v, "type", None))
            G.add_edge(src, n, key=k, value=v, type=getattr(v, "type", None),
                       index=getattr(v, "index", 0))
    return G


def dataflow_graph(g: Graph) -> nx.DiGraph:
    """Nodes only: an edge a -> b when b reads an output of a (for orders and cycles)."""
    D = nx.DiGraph()
    D.add_nodes_from(g.nodes)
    producers = {v: n for n in g.nodes for v in n.outputs}
    for n in g.nodes:
        for v in n.inputs:
            p = producers.get(v)
            if p is not None:
                D.add_edge(p, n)
    return D


def find_cycle(g: Graph) -> list[Node] | None:
    """A dependency cycle among g's nodes, as the list of nodes around it, or None."""
    D = dataflow_graph(g)
    try:
        edges = nx.find_cycle(D)
    except nx.NetworkXNoCycle:
        return None
    return [e[0] for e in edges]


def topological_order(g: Graph) -> list[Node]:
    """g's nodes in a dependency order, breaking ties by schedule position (so a valid
    schedule comes back unchanged). Raises VerificationError on a cycle."""
    D = dataflow_graph(g)
    pos = {n: i for i, n in enumerate(g.nodes)}
    try:
        return list(nx.lexicographical_topological_sort(D, key=lambda n: pos[n]))
    except nx.NetworkXUnfeasible:
        cycle = find_cycle(g) or []
        names = value_names(g)
        path = " -> ".join(format_node(n, names, loc=False) for n in cycle)
        raise VerificationError(f"graph has a dependency cycle: {path}",
                                node=cycle[0] if cycle else None) from None


def ancestors(g: Graph, values: Iterable[Value]) -> set[Node]:
    """The nodes needed to compute `values` (the nodes producing them included)."""
    producers = {v: n for n in g.nodes for v in n.outputs}
    out: set[Node] = set()
    stack = [producers[v] for v in values if v in producers]
    while stack:
        n = stack.pop()
        if n in out:
            continue
        out.add(n)
        stack.extend(producers[v] for v in n.inputs if v in producers)
    return out


# --- DOT ---------------------------------------------------------------------------------

def _dot_str(s: str) -> str:
    """A DOT double-quoted string; '\\n' in `s` becomes a centred line break."""
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\r", "").replace("\n", "\\n")
    return f'"{s}"'


_SOURCE_STYLE = {
    "input": 'shape=invhouse, style=filled, fillcolor="#d8ecff"',
    "param": 'shape=cylinder, style=filled, fillcolor="#ffe9c7"',
    "const": 'shape=note, style=filled, fillcolor="#eeeeee"',
    "undefined": 'shape=octagon, style=filled, fillcolor="#ff9999"',
}


def to_dot(g: Graph) -> str:
    """Graphviz DOT text of `g`.

    Ops are boxes labelled with the op, output type(s) and `file:line` (file basename);
    inputs are inverted houses, parameters cylinders, constants notes; graph outputs are
    `out0, out1...` sinks (double octagons) and parameter updates dashed edges back into
    the parameter. Edges carry the operand's type. Every node gets an id (`in0`, `p0`,
    `c0`, `n0`...), so the text is deterministic. Nodes of one fusion group (one kernel,
    passes/fusion.py) sit in a cluster `subgraph cluster_group<N>` labelled with the group
    and its ops, in the order of their first member.
    """
    names = value_names(g)
    ids: dict[object, str] = {}
    lines = [f"digraph {_dot_str(str(g.name))} {{",
             "  rankdir=TB;",
             '  node [fontname="monospace", fontsize=10];',
             '  edge [fontname="monospace", fontsize=9];']
    for prefix, kind, vals in (("in", "input", g.inputs), ("p", "param", g.params),
                               ("c", "const", g.constants)):
        for i, v in enumerate(vals):
            ids[v] = f"{prefix}{i}"
            label = f"{names.get(v, '?')}\n{format_type(v.type)}"
            if kind == "param" and not v.trainable:
                label += "\nfrozen"
            lines.append(f"  {ids[v]} [label={_dot_str(label)}, {_SOURCE_STYLE[kind]}];")
    producers: dict[Value, tuple[Node, int]] = {}
    groups: dict[int, list[int]] = {}
    node_lines: list[str] = []
    for i, n in enumerate(g.nodes):
        ids[n] = f"n{i}"
        for k, v in enumerate(n.outputs):
            producers[v] = (n, k)
        outs = ", ".join(format_type(v.type) for v in n.outputs)
        label = f"{', '.join(names.get(v, '?') for v in n.outputs)} = {n.op}\n{outs}"
        if n.loc is not None:
            label += f"\n{os.path.basename(str(n.loc.file))}:{n.loc.line}"
        node_lines.append(f'n{i} [label={_dot_str(label)}, shape=box, style="rounded"];')
        if n.group is not None:
            groups.setdefault(n.group, []).append(i)
    clustered = {i for members in groups.values() for i in members}
    lines.extend(f"  {line}" for i, line in enumerate(node_lines) if i not in clustered)
    for gid, members in groups.items():
        ops = ", ".join(g.nodes[i].op for i in members)
        lines.append(f"  subgraph cluster_group{gid} {{")
        lines.append(f"    label={_dot_str(f'fusion group {gid}: {ops}')}; style=dashed; "
                     'color="#5577aa"; fontname="monospace"; fontsize=9;')
        lines.extend(f"    {node_lines[i]}" for i in members)
        lines.append("  }")
    undefined = 0

    def src(v: Value) -> str:
        nonlocal undefined
        if v in producers:
            return ids[producers[v][0]]
        if v not in ids:
            ids[v] = f"u{undefined}"
            undefined += 1
            lines.append(f"  {ids[v]} [label={_dot_str('undefined ' + repr(v))}, "
                         f"{_SOURCE_STYLE['undefined']}];")
        return ids[v]

    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            s = src(v)
            lines.append(f"  {s} -> n{i} [label={_dot_str(format_type(v.type))}];")
    for k, v in enumerate(g.outputs):
        lines.append(f"  out{k} [label={_dot_str(f'output {k}')}, shape=doubleoctagon];")
        lines.append(f"  {src(v)} -> out{k};")
    by_name = {p.name: p for p in g.params}
    for name, v in g.updates.items():
        p = by_name.get(name)
        if p is not None:
            lines.append(f"  {src(v)} -> {ids[p]} [style=dashed, label={_dot_str('update')}, "
                         "constraint=false];")
    lines.append("}")
    return "\n".join(lines) + "\n"
