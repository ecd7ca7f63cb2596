"""Reverse-mode autodiff: appends the backward graph built from each op's registry VJP.

Only nodes that lie on a path from a requested input to the output are differentiated, so
backward work for frozen parameters, data inputs, integer values and stop_gradient branches
is never built (the first half of dead-backward elimination). Backward nodes carry the
source line of the forward node they differentiate, so errors in backward point at the
user's forward code.
"""
from __future__ import annotations

from typing import Sequence

from ..ir.emitter import Emitter
from ..ir.errors import DifferentiationError
from ..ir.graph import Graph, Node, Value
from ..ir.loc import Loc
from ..ir.registry import get_op


def _depends_on(graph: Graph, xs: Sequence[Value]) -> set[Value]:
    """Float values computed from any of xs (integer and bool values carry no gradient)."""
    live = {x for x in xs}
    for n in graph.nodes:
        if any(v in live for v in n.inputs):
            live.update(o for o in n.outputs if o.dtype.is_float)
    return live


def _needed_by(graph: Graph, y: Value) -> set[Node]:
    needed: set[Node] = set()
    frontier = [y]
    seen: set[Value] = set()
    while frontier:
        v = frontier.pop()
        if v in seen or v.producer is None:
            continue
        seen.add(v)
        needed.add(v.producer)
        frontier.extend(v.producer.inputs)
    return needed


def grad(graph: Graph, y: Value, xs: Sequence[Value], seed: Value | None = None,
         loc: Loc | None = None) -> list[Value]:
    """Append nodes computing d(sum(seed * y))/dx for each x; return those gradient values.

    Without a seed, y must be a scalar. A gradient of an x that y does not depend on is
    zeros of x's shape.
    """
    b = Emitter(graph, loc)
    if not y.dtype.is_float:
        raise DifferentiationError(f"cannot differentiate {y.ref()}: {y.type} is not floating point",
                                   loc=loc)
    for x in xs:
        if not x.dtype.is_float:
            raise DifferentiationError(f"cannot differentiate with respect to {x.ref()}: {x.type} "
                                       "is not floating point", loc=loc)
    if seed is None:
        if y.type.rank != 0:
            raise DifferentiationError(f"grad needs a scalar output, got {y.type}; reduce it "
                                       "(e.g. sum or mean) or pass a seed of the same shape",
                                       loc=loc)
        seed = b.scalar(1.0, y)
    elif seed.type != y.type:
        raise DifferentiationError(f"seed {seed.type} does not match output {y.type}", loc=loc)

    live = _depends_on(graph, xs)
    on_path = _needed_by(graph, y)
    cot: dict[Value, Value] = {y: seed}

    def accumulate(v: Value, g: Value) -> None:
        cot[v] = b.add(cot[v], g) if v in cot else g

    for node in reversed([n for n in graph.nodes if n in on_path]):
        gs = [cot.get(o) for o in node.outputs]
        if all(g is None for g in gs):
            continue
        wanted = [v in live for v in node.inputs]
        if not any(wanted):
            continue
        opdef = get_op(node.op)
        b.loc = node.loc
        if opdef.vjp is None:
            raise DifferentiationError(f"op {node.op} has no gradient, but a requested gradient "
                                       "flows through it; wrap its input in stop_gradient if "
                                       "that is intended", node=node)
        if len(node.outputs) == 1:
            in_grads = opdef.vjp(b, node, gs[0])
        else:
            in_grads = opdef.vjp(b, node, gs)
        if len(in_grads) != len(node.inputs):
            raise AssertionError(f"VJP of {node.op} returned {len(in_grads)} gradients for "
                                 f"{len(node.inputs)} inputs")
        for v, g, want in zip(node.inputs, in_grads, wanted):
            if g is None or not want:
                continue
            if g.type != v.type:
                raise AssertionError(f"VJP of {node.op} gave {g.type} for input {v.type}")
            accumulate(v, g)
    b.loc = loc
    return [cot[x] if x in cot else b.broadcast(b.scalar(0.0, x), x.shape) for x in xs]
