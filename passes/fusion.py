"""Operator fusion: elementwise chains become one kernel; reductions over the rows of a
tensor fuse with their elementwise producers, their consumers, further reductions over
the same rows and sibling ops reading the same operand (horizontal fusion), so softmax,
log-softmax with cross-entropy and the layer and batch normalisations (forward and
backward) each run as passes over cached rows in one kernel; and bias, activation and
residual consumers of a matmul become its GEMM's epilogue.

The pass only assigns `Node.group` numbers, so the grouping shows in the text dump; the
lowering (ir/fused.py) turns each group into a single loop nest in the kernel IR that every
backend reads. A group is elementwise (one output shape, its domain), a row group (a
domain and reduced axes; see ir/fused.py for its members and how it runs), or a
contraction (matmul, and so the convolutions lowered to it) with the chain of elementwise
consumers (bias, activation, residual add) that its GEMM applies to each finished element.
An epilogue stores only its last value, so an op joins it only if every value the chain
has produced so far is read by the chain alone. A parameter update never joins one: as an
elementwise kernel it can write the parameter in place (passes/donate.py), while a GEMM
writes partial sums into its output before the epilogue reads the old value.

A group's kernel runs where its last member is scheduled, so a node joins a group only if
no node outside the group, scheduled between the group's first member and it, reads a value
the group produces (which also keeps groups acyclic).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.fused import RowSpace, combine_kind, gemm_epilogue_member, is_elementwise
from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op

__all__ = ["FusionStats", "fuse", "is_elementwise", "is_row_reduction"]


@dataclass
class _Group:
    members: list[Node]
    domain: tuple[int, ...]
    axes: tuple[int, ...] | None = None  # reduced axes, once a reduction is a member
    gemm: bool = False  # a contraction and its epilogue (elementwise consumers)

    @property
    def space(self) -> RowSpace | None:
        return RowSpace(self.domain, self.axes) if self.axes is not None else None

    def role(self, shape: tuple[int, ...]) -> str | None:
        """How a node with this output shape sits in the group: over the domain, one value
        per row, or not at all."""
        if shape == self.domain:
            return "domain"
        if self.axes is not None and self.space.holds_rows(shape):
            return "row"
        return None


@dataclass
class FusionStats:
    groups: int = 0
    nodes_fused: int = 0
    kernels_saved: int = 0
    sizes: list[int] = field(default_factory=list)
    row_kernels: int = 0       # groups with reductions over rows
    gemm_epilogues: int = 0    # contractions with elementwise consumers in their GEMM


def is_row_reduction(node: Node) -> bool:
    """A reduction a row kernel runs: its innermost loop is over the last axis."""
    if combine_kind(node) is None:
        return False
    return RowSpace.fits(node.inputs[0].shape, tuple(node.attrs["axes"]))


def fuse(graph: Graph, *, epilogues: bool = True) -> FusionStats:
    """Assign fusion groups in place; returns what was fused. epilogues=False keeps
    contractions in kernels of their own (for comparisons)."""
    position = {n: i for i, n in enumerate(graph.nodes)}
    readers: dict[Value, list[Node]] = {}
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

    def producer_group(v: Value) -> _Group | None:
        g = group_of.get(v.producer) if v.producer is not None else None
        return g if g is not None and not g.gemm else None

    results = set(graph.outputs) | set(graph.updates.values())

    update_values = set(graph.updates.values())

    def epilogue_to_extend(node: Node) -> _Group | None:
        if any(o in update_values for o in node.outputs):
            return None  # a state update stays elementwise: it can then overwrite the state
        for v in node.inputs:
            g = group_of.get(v.producer) if v.producer is not None else None
            if g is None or not g.gemm or v is not g.members[-1].outputs[0]:
                continue
            # Worth it when the other operands are in memory anyway (bias, residual): one
            # computed by an elementwise op is better fused with that op instead.
            if any(u is not v and u.producer is not None and is_elementwise(u.producer)
                   for u in node.inputs):
                continue
            inside = set(g.members) | {node}
            private = all(u not in results and all(r in inside for r in readers.get(u, ()))
                          for m in g.members for u in m.outputs)
            if private and gemm_epilogue_member(g.members[0], v, node) and can_join(g, node):
                return g
        return None

    def fits(g: _Group, node: Node) -> bool:
        """node reads g's values the way a member of g can."""
        role = g.role(node.outputs[0].shape)
        if role is None:
            return False
        for v in node.inputs:
            if producer_group(v) is not g:
                continue  # read from memory
            if role == "row" and g.role(v.shape) != "row":
                return False
            if role == "domain" and v.shape != g.domain and \
                    (g.axes is None or not g.space.broadcasts_rows(v.shape)):
                return False
        return True

    def merge(target: _Group, other: _Group) -> None:
        if other.domain != target.domain or None not in (target.axes, other.axes) \
                and target.axes != other.axes:
            return
        target.members = sorted(target.members + other.members, key=position.__getitem__)
        target.axes = target.axes if target.axes is not None else other.axes
        for m in other.members:
            group_of[m] = target

    def sibling(node: Node, domain: tuple[int, ...], axes: tuple[int, ...] | None) -> _Group | None:
        """Horizontal fusion: a group over the same domain (and rows) that reads one of
        node's operands from memory too, so the kernel reads it once (sum(x) beside
        sum(x * x), a softmax's forward and backward over the same logits)."""
        for v in node.inputs:
            if v.shape != domain:
                continue
            for r in readers.get(v, ()):
                h = group_of.get(r)
                if h is None or h.gemm or h.domain != domain or \
                        (axes is not None and h.axes not in (None, axes)):
                    continue
                if can_join(h, node):
                    return h
        return None

    for node in graph.nodes:
        node.group = None
        gemm = epilogue_to_extend(node)
        if gemm is not None:
            gemm.members.append(node)
            group_of[node] = gemm
        elif epilogues and get_op(node.op).lower_epilogue is not None:
            group_of[node] = _Group([node], node.outputs[0].shape, gemm=True)
        elif get_op(node.op).view:
            # a per-row value under another per-row shape (a norm's statistics reshaped
            # for its backward) is the same value: it stays in the row kernel
            g = producer_group(node.inputs[0])
            if g is not None and g.role(node.inputs[0].shape) == "row" \
                    and g.role(node.outputs[0].shape) == "row" and can_join(g, node):
                g.members.append(node)
                group_of[node] = g
        elif is_elementwise(node):
            joinable: list[_Group] = []
            for v in node.inputs:
                g = producer_group(v)
                if g is not None and g not in joinable and fits(g, node) and can_join(g, node):
                    joinable.append(g)
            if not joinable:
                g = sibling(node, node.outputs[0].shape, None)
                if g is not None:
                    g.members.append(node)
                    group_of[node] = g
                else:
                    group_of[node] = _Group([node], node.outputs[0].shape)
                continue
            target = joinable[0]
            for other in joinable[1:]:  # several producer groups: one kernel where they agree
                merge(target, other)
            target.members.append(node)
            group_of[node] = target
        elif is_row_reduction(node):
            x = node.inputs[0]
            axes = tuple(node.attrs["axes"])
            g = producer_group(x)
            if g is None or g.role(x.shape) != "domain" or g.axes not in (None, axes) \
                    or not can_join(g, node):
                g = sibling(node, x.shape, axes)
            if g is not None:
                g.axes = axes
                g.members.append(node)
                group_of[node] = g
            else:  # a reduction of a value from memory starts a row group of its own
                group_of[node] = _Group([node], x.shape, axes)

    stats = FusionStats()
    seen: set[int] = set()
    for g in group_of.values():
        if id(g) in seen:
            continue
        seen.add(id(g))
        while g.gemm and get_op(g.members[-1].op).view:
            g.members.pop()  # a view with no epilogue after it stays a view
        if len(g.members) < 2:
            continue
        for m in g.members:
            m.group = stats.groups
        stats.groups += 1
        stats.nodes_fused += len(g.members)
        stats.kernels_saved += len(g.members) - 1
        stats.sizes.append(len(g.members))
        stats.row_kernels += g.axes is not None and not g.gemm
        stats.gemm_epilogues += g.gemm
    return stats
