"""Graph rewriting: replace nodes by subgraphs built with an Emitter, in schedule order.

Three tools, for every pass that replaces nodes (legalisation, fusion, simplification):

- ``replace_uses(graph, mapping)`` rewires every use of a value (node operands, graph
  outputs, parameter updates) to its replacement.
- ``rebuild_at(graph, node, build)`` replaces one node: ``build(b)`` emits the replacement
  through an Emitter ``b`` (whose loc is the node's, so errors and dumps still point at the
  user's line) and returns values of the node's output types; the new nodes take the node's
  place in the schedule, uses are rewired, and the node is removed.
- ``rewrite(graph, rule)`` does the same for a whole graph in one sweep: ``rule(b, node)``
  returns replacement values or None to keep the node. New nodes are offered to the rule in
  turn, so rules that build other rewritable ops reach a fixpoint in that one sweep.

The Emitter appends to ``graph.nodes``; both rebuilders move what it appended into place.
Constants a builder creates join ``graph.constants`` (an unordered set as far as the schedule
is concerned). Replaced nodes' outputs must not be used afterwards by the caller.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from .emitter import Emitter
from .errors import GraphcError
from .graph import Graph, Node, Value

__all__ = ["replace_uses", "rebuild_at", "rewrite"]

Build = Callable[[Emitter], Sequence[Value]]
Rule = Callable[[Emitter, Node], "Sequence[Value] | None"]


def replace_uses(graph: Graph, mapping: Mapping[Value, Value]) -> int:
    """Replace every use of each key by its value, in node operands, graph outputs and
    parameter updates; returns the number of uses rewired. Not transitive: a replacement
    that is itself a key is not replaced again. Types must match."""
    for old, new in mapping.items():
        if old.type != new.type:
            raise GraphcError(f"cannot replace {old!r} by {new!r}: the types differ",
                              node=old.producer)
    count = 0

    def sub(v: Value) -> Value:
        nonlocal count
        if v in mapping:
            count += 1
            return mapping[v]
        return v

    for n in graph.nodes:
        n.inputs = [sub(v) for v in n.inputs]
    graph.outputs = [sub(v) for v in graph.outputs]
    graph.updates = {k: sub(v) for k, v in graph.updates.items()}
    return count


def _replacement(node: Node, outs: Sequence[Value] | None) -> list[Value]:
    """Check that a builder returned one value of the right type per output of node."""
    outs = list(outs) if outs is not None else []
    if len(outs) != len(node.outputs):
        raise GraphcError(f"rewrite of {node.op}: the replacement has {len(outs)} values for "
                          f"the node's {len(node.outputs)} outputs", node=node)
    for i, (old, new) in enumerate(zip(node.outputs, outs)):
        if not isinstance(new, Value) or new.type != old.type:
            got = new.type if isinstance(new, Value) else type(new).__name__
            raise GraphcError(f"rewrite of {node.op}: replacement of output {i} is {got}, the "
                              f"node's output is {old.type}", node=node)
    return outs


def _build(graph: Graph, node: Node, build: Callable[[Emitter], "Sequence[Value] | None"]):
    """Run build with an Emitter at node's loc; return (its values, the nodes it appended),
    the appended nodes taken off the end of the schedule."""
    start = len(graph.nodes)
    try:
        outs = build(Emitter(graph, node.loc))
    except GraphcError as e:
        del graph.nodes[start:]
        raise e.attach(node)
    new = graph.nodes[start:]
    del graph.nodes[start:]
    return outs, new


def rebuild_at(graph: Graph, node: Node, build: Build) -> list[Value]:
    """Replace `node` by what `build(b)` emits, at node's place in the schedule.

    The new nodes carry node.loc; uses of node's outputs are rewired to the returned values
    (one per output, of equal types); node leaves the schedule. Returns the new values.
    O(len(graph.nodes)): for many nodes, use `rewrite`.
    """
    pos = graph.nodes.index(node)
    outs, new = _build(graph, node, build)
    outs = _replacement(node, outs)
    graph.nodes[pos:pos + 1] = new
    replace_uses(graph, dict(zip(node.outputs, outs)))
    return outs


def rewrite(graph: Graph, rule: Rule, *, max_depth: int = 32) -> int:
    """Apply `rule` to every node in schedule order, in place; returns the nodes replaced.

    ``rule(b, node)`` returns None to keep the node (it must then emit nothing), or the
    replacement values built with ``b`` (an Emitter at node.loc). Replacement nodes are
    spliced in where the node was and offered to the rule themselves, up to `max_depth`
    nested replacements (a rule that keeps rebuilding its own op is reported, not looped).
    """
    old, graph.nodes = graph.nodes, []
    old_inputs = [n.inputs for n in old]  # visit() rebinds inputs; restored on failure
    subst: dict[Value, Value] = {}
    replaced = 0

    def visit(node: Node, depth: int) -> None:
        nonlocal replaced
        node.inputs = [subst.get(v, v) for v in node.inputs]
        outs, new = _build(graph, node, lambda b: rule(b, node))
        if outs is None:
            if new:
                raise GraphcError(f"rewrite rule kept {node.op} but emitted {len(new)} nodes",
                                  node=node)
            graph.nodes.append(node)
            return
        outs = _replacement(node, outs)
        if depth >= max_depth:
            raise GraphcError(f"rewriting {node.op} does not terminate: {max_depth} nested "
                              "replacements", node=node)
        for m in new:
            visit(m, depth + 1)
        for o, r in zip(node.outputs, outs):
            subst[o] = subst.get(r, r)
        replaced += 1

    try:
        for n in old:
            visit(n, 0)
    except BaseException:
        graph.nodes = old  # leave the graph as it was (constants built so far stay, unused)
        for n, ins in zip(old, old_inputs):
            n.inputs = ins
        raise
    graph.outputs = [subst.get(v, v) for v in graph.outputs]
    graph.updates = {k: subst.get(v, v) for k, v in graph.updates.items()}
    return replaced
