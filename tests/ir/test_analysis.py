"""networkx view, DOT rendering and order helpers."""
from __future__ import annotations

import re

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from graphc.ir import Graph, Loc, TensorType, VerificationError, to_dot, to_networkx, topological_order
from graphc.ir.analysis import ancestors, dataflow_graph, find_cycle
from tests.ir.random_graphs import build_random_graph, random_graphs

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def t(shape, dt="f32") -> TensorType:
    return TensorType(tuple(shape), dt)


def sample() -> Graph:
    g = Graph('we"ird name')
    x = g.add_input("x", t((2, 3)))
    w = g.add_param("w", t((2, 3)), trainable=False)
    c = g.add_constant(np.float32(2.0))
    a = g.add_node("neg", [x], {}, Loc('/path/with "quotes"\\and\\slashes/model.py', 10)).output
    b = g.add_node("add", [a, a], {}, Loc("model.py", 11)).output
    m = g.add_node("mul", [b, c], {}).output
    g.add_node("exp", [w])  # dead: no output needs it
    s = g.add_node("sum", [m], {"axes": (0, 1)}).output
    g.set_outputs([s, b])
    g.updates = {"w": b}
    return g


# --- a small DOT reader: enough to check the text is well formed -------------------------------

_DOT_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z_][A-Za-z0-9_]*|-?[0-9.]+)'
                        r'|(?P<arrow>->)|(?P<punct>[{}\[\];,=]))')


def read_dot(text: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict[str, str]]]]:
    """(nodes with attributes, edges) of a digraph; raises on malformed text."""
    pos, toks = 0, []
    text = text.strip()
    while pos < len(text):
        m = _DOT_TOKEN.match(text, pos)
        assert m and m.end() > pos, f"bad DOT at {text[pos:pos + 30]!r}"
        kind = m.lastgroup
        toks.append((kind, m.group(kind)))
        pos = m.end()
    assert toks[0] == ("id", "digraph") and toks[1][0] == "str" and toks[2] == ("punct", "{")
    assert toks[-1] == ("punct", "}")
    body = toks[3:-1]
    nodes: dict[str, dict[str, str]] = {}
    edges = []
    i = 0

    def attrs(i):
        out = {}
        if i < len(body) and body[i] == ("punct", "["):
            i += 1
            while body[i] != ("punct", "]"):
                k = body[i][1]
                assert body[i + 1] == ("punct", "=")
                out[k] = body[i + 2][1]
                i += 3
                if body[i] == ("punct", ","):
                    i += 1
            i += 1
        return out, i

    while i < len(body):
        kind, val = body[i]
        assert kind in ("id", "str"), body[i]
        if i + 1 < len(body) and body[i + 1][0] == "arrow":
            dst = body[i + 2][1]
            a, i = attrs(i + 3)
            edges.append((val, dst, a))
        else:
            a, i = attrs(i + 1)
            if val not in ("node", "edge") and not a.get("__global__"):
                nodes[val] = a
            if i < len(body) and body[i] == ("punct", "="):  # rankdir=TB
                nodes.pop(val, None)
                i += 2
        assert body[i] == ("punct", ";"), body[i:i + 3]
        i += 1
    for s, d, _ in edges:
        assert s in nodes and d in nodes, (s, d)
    return nodes, edges


def _unquote(s: str) -> str:
    assert s.startswith('"') and s.endswith('"')
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), s[1:-1])


# --- networkx ------------------------------------------------------------------------------

def check_networkx(g: Graph) -> None:
    G = to_networkx(g)
    assert isinstance(G, nx.MultiDiGraph)
    n_sources = len(g.inputs) + len(g.params) + len(g.constants)
    assert G.number_of_nodes() == len(g.nodes) + n_sources
    assert G.number_of_edges() == sum(len(n.inputs) for n in g.nodes)
    for n in g.nodes:
        assert G.nodes[n]["kind"] == "node" and G.nodes[n]["op"] == n.op
        incoming = sorted(G.in_edges(n, keys=True, data=True), key=lambda e: e[2])
        assert [e[3]["value"] for e in incoming] == n.inputs
        for src, _, k, data in incoming:
            v = n.inputs[k]
            assert data["type"] == v.type
            assert src is (v.producer if v.kind == "node" else v)
    for v in g.inputs:
        assert G.nodes[v]["kind"] == "input"
    for v in g.params:
        assert G.nodes[v]["kind"] == "param"
    for v in g.constants:
        assert G.nodes[v]["kind"] == "const"
    assert nx.is_directed_acyclic_graph(G)


def test_networkx_sample():
    g = sample()
    check_networkx(g)
    G = to_networkx(g)
    add = g.nodes[1]
    assert G.number_of_edges(g.nodes[0], add) == 2  # add(%0, %0): one edge per operand
    assert G.graph["outputs"] == g.outputs and G.graph["updates"] == g.updates


@SETTINGS
@given(random_graphs(max_nodes=12, updates=True))
def test_networkx_random(g):
    check_networkx(g)


# --- orders and cycles -------------------------------------------------------------------------

def test_topological_order_keeps_a_valid_schedule():
    g = sample()
    assert topological_order(g) == g.nodes


def _valid_order(g: Graph, order) -> bool:
    seen = set(g.inputs) | set(g.params) | set(g.constants)
    for n in order:
        if any(v not in seen for v in n.inputs):
            return False
        seen.update(n.outputs)
    return True


@SETTINGS
@given(random_graphs(max_nodes=12))
def test_topological_order_repairs_a_shuffled_schedule(g):
    assert topological_order(g) == g.nodes
    g.nodes.reverse()
    order = topological_order(g)
    assert sorted(map(id, order)) == sorted(map(id, g.nodes))
    assert _valid_order(g, order)


def test_cycle_detection():
    g = sample()
    assert find_cycle(g) is None
    g.nodes[0].inputs[0] = g.nodes[2].output  # neg reads mul, which needs add, which needs neg
    cycle = find_cycle(g)
    assert cycle is not None and {n.op for n in cycle} == {"neg", "add", "mul"}
    with pytest.raises(VerificationError, match=r"dependency cycle: %0 = neg\(%2\)"):
        topological_order(g)


def test_ancestors_and_dataflow():
    g = sample()
    needed = ancestors(g, g.outputs)
    assert {n.op for n in needed} == {"neg", "add", "mul", "sum"}  # not the dead exp
    D = dataflow_graph(g)
    assert D.number_of_nodes() == len(g.nodes)
    assert D.has_edge(g.nodes[0], g.nodes[1]) and not D.has_edge(g.nodes[1], g.nodes[0])


def test_networkx_with_dangling_operand():
    g = sample()
    stray = Graph("other").add_input("q", t((2, 3)))
    g.nodes[0].inputs[0] = stray
    G = to_networkx(g)
    assert G.nodes[stray]["kind"] == "undefined"
    assert G.number_of_edges() == sum(len(n.inputs) for n in g.nodes)


# --- DOT -----------------------------------------------------------------------------------

def check_dot(g: Graph) -> None:
    text = to_dot(g)
    nodes, edges = read_dot(text)
    expected_ids = ([f"in{i}" for i in range(len(g.inputs))] + [f"p{i}" for i in range(len(g.params))]
                    + [f"c{i}" for i in range(len(g.constants))] + [f"n{i}" for i in range(len(g.nodes))]
                    + [f"out{i}" for i in range(len(g.outputs))])
    assert sorted(nodes) == sorted(expected_ids)
    n_operands = sum(len(n.inputs) for n in g.nodes)
    data_edges = [e for e in edges if e[1].startswith("n")]
    assert len(data_edges) == n_operands
    assert len(edges) == n_operands + len(g.outputs) + len(g.updates)
    assert sum(1 for e in edges if e[2].get("style") == "dashed") == len(g.updates)
    for i, n in enumerate(g.nodes):
        label = _unquote(nodes[f"n{i}"]["label"])
        assert f"= {n.op}" in label
        for v in n.outputs:
            assert f"{v.dtype}[{','.join(map(str, v.shape))}]" in label
        if n.loc is not None:
            assert label.endswith(f"{n.loc.file.replace(chr(92), '/').split('/')[-1]}:{n.loc.line}") \
                or label.endswith(f":{n.loc.line}")
        assert nodes[f"n{i}"]["shape"] == "box"
    shapes = {nodes[k]["shape"] for k in nodes if k.startswith("in")}
    assert shapes <= {"invhouse"}
    assert {nodes[k]["shape"] for k in nodes if k.startswith("p")} <= {"cylinder"}
    assert {nodes[k]["shape"] for k in nodes if re.fullmatch(r"c\d+", k)} <= {"note"}


def test_dot_sample():
    g = sample()
    check_dot(g)
    text = to_dot(g)
    assert text.startswith('digraph "we\\"ird name" {')
    nodes, _ = read_dot(text)
    assert _unquote(nodes["n0"]["label"]) == "%0 = neg\nf32[2,3]\nmodel.py:10"
    assert _unquote(nodes["p0"]["label"]) == "%w\nf32[2,3]\nfrozen"


@SETTINGS
@given(random_graphs(max_nodes=10, updates=True, fancy_names=True))
def test_dot_random(g):
    check_dot(g)


def test_dot_seeded_graphs():
    for seed in range(20):
        check_dot(build_random_graph(seed, max_nodes=10, fancy_names=True, updates=True))
