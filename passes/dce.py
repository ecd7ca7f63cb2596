"""Dead-code elimination: drop nodes and constants that no output or update needs."""
from __future__ import annotations

from ..ir.graph import Graph, Value


def live_values(graph: Graph) -> set[Value]:
    """Every value some output or parameter update depends on."""
    live: set[Value] = set(graph.outputs) | set(graph.updates.values())
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs):
            live.update(n.inputs)
    return live


def prune_signature(graph: Graph, live: set[Value]) -> None:
    """Keep the inputs and parameters in `live` (and every updated parameter: it is state).

    gc.compile decides the signature from the graph as the user built it, before any
    optimisation, so an executable asks for the same inputs whatever the passes removed.
    """
    graph.inputs = [v for v in graph.inputs if v in live]
    graph.params = [p for p in graph.params if p in live or p.name in graph.updates]
    graph.param_values = {k: v for k, v in graph.param_values.items()
                          if any(p.name == k for p in graph.params)}


def eliminate_dead_code(graph: Graph, prune_signature_too: bool = False) -> int:
    """Prune nodes and constants in place; returns the number of nodes removed."""
    live = live_values(graph)
    before = len(graph.nodes)
    graph.nodes = [n for n in graph.nodes if any(o in live for o in n.outputs)]
    graph.constants = [c for c in graph.constants if c in live]
    if prune_signature_too:
        prune_signature(graph, live)
    return before - len(graph.nodes)
