"""Operator fusion: elementwise chains become one kernel, and a row reduction absorbs the
elementwise chain that produces its input (softmax's exp(x - max) feeding its sum,
a squared error feeding a mean).

The pass only assigns `Node.group` numbers, so the grouping shows in the text dump; the
lowering turns each group into a single loop nest in the kernel IR that every backend reads.
A group's kernel runs where its last member is scheduled, so a node joins a group only if no
node outside the group, scheduled between the group's first member and it, reads a value
the group produces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.graph import Graph, Node
from ..ir.registry import Fusion, get_op

ROW_REDUCTIONS = {"sum", "mean", "max", "min"}


@dataclass
class _Group:
    members: list[Node]
    domain: tuple[int, ...]
    closed: bool = False  # a reduction ended it: nothing may follow inside the loop nest


@dataclass
class FusionStats:
    groups: int = 0
    nodes_fused: int = 0
    kernels_saved: int = 0
    sizes: list[int] = field(default_factory=list)


def is_elementwise(node: Node) -> bool:
    """Computable per element of its output from operand elements at broadcast positions."""
    opdef = get_op(node.op)
    return len(node.outputs) == 1 and (opdef.scalar is not None or opdef.fusion is Fusion.BROADCAST)


def is_row_reduction(node: Node) -> bool:
    """A reduction whose innermost loop runs over the last axis (a register accumulator)."""
    if node.op not in ROW_REDUCTIONS:
        return False
    axes = node.attrs["axes"]
    rank = node.inputs[0].type.rank
    return bool(axes) and axes[-1] == rank - 1


def fuse(graph: Graph) -> FusionStats:
    """Assign fusion groups in place; returns what was fused."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    readers: dict = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers.setdefault(v, []).append(n)
    group_of: dict[Node, _Group] = {}

    def can_join(g: _Group, node: Node) -> bool:
        first = position[g.members[0]]
        for m in g.members:
            for v in m.outputs:
                for r in readers.get(v, ()):
                    if r is not node and r not in g.members and first < position[r] < position[node]:
                        return False
        return True

    for node in graph.nodes:
        node.group = None
        if is_elementwise(node):
            domain = node.outputs[0].shape
            joinable: list[_Group] = []
            for v in node.inputs:
                g = group_of.get(v.producer) if v.producer is not None else None
                if g is not None and not g.closed and g.domain == domain and g not in joinable \
                        and can_join(g, node):
                    joinable.append(g)
            if not joinable:
                group_of[node] = _Group([node], domain)
                continue
            target = joinable[0]
            for other in joinable[1:]:  # several producer groups: merge them into one kernel
                target.members = sorted(target.members + other.members, key=position.__getitem__)
                for m in other.members:
                    group_of[m] = target
            target.members.append(node)
            group_of[node] = target
        elif is_row_reduction(node):
            x = node.inputs[0]
            g = group_of.get(x.producer) if x.producer is not None else None
            if g is not None and not g.closed and g.domain == x.shape and can_join(g, node):
                g.members.append(node)
                g.closed = True
                group_of[node] = g

    stats = FusionStats()
    seen: set[int] = set()
    for g in group_of.values():
        if id(g) in seen:
            continue
        seen.add(id(g))
        if len(g.members) < 2:
            continue
        for m in g.members:
            m.group = stats.groups
        stats.groups += 1
        stats.nodes_fused += len(g.members)
        stats.kernels_saved += len(g.members) - 1
        stats.sizes.append(len(g.members))
    return stats
