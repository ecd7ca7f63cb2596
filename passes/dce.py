"""Dead-code elimination: drop nodes and constants that no output or update needs."""
from __future__ import annotations

from ..ir.graph import Graph, Value


def eliminate_dead_code(graph: Graph, prune_signature: bool = False) -> int:
    """Prune in place; returns the number of nodes removed.

    With prune_signature, inputs and parameters that nothing needs are dropped too (as
    gc.compile does: an executable asks only for the inputs its outputs depend on).
    Parameters that are updated are state and always kept.
    """
    live: set[Value] = set(graph.outputs) | set(graph.updates.values())
    kept = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs):
            kept.append(n)
            live.update(n.inputs)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    graph.constants = [c for c in graph.constants if c in live]
    if prune_signature:
        graph.inputs = [v for v in graph.inputs if v in live]
        graph.params = [p for p in graph.params if p in live or p.name in graph.updates]
        graph.param_values = {k: v for k, v in graph.param_values.items()
                              if any(p.name == k for p in graph.params)}
    return removed
