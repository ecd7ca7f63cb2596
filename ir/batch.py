"""Batch-wise ops: which nodes compute each index of axis 0 from that index alone, so that
a graph can run as `parts` copies over slices of its batch (passes/batch_split.py).

A rule is `rule(node, batched, rows) -> attrs | None`: `batched[i]` says whether input i
carries the batch on axis 0 (it depends on a graph input) rather than being batch-free (a
weight, a constant, anything computed from those only); `rows` is the batch of one part.
It returns the node's attributes for a part (the same, or a reshape's target with the new
batch) or None when the node mixes batch entries (a reduction over axis 0, a reshape that
moves the batch, an op nobody has reasoned about). An op's own rule is its registry entry's
`batch_split`; elementwise ops and reductions get one from their fusion class here.
"""
from __future__ import annotations

from typing import Any, Callable

from .graph import Node
from .registry import Fusion

Rule = Callable[[Node, list, int], "dict[str, Any] | None"]


def elementwise(node: Node, batched: list, rows: int) -> dict | None:
    """Broadcasting elementwise ops: the batched operands span the result's axis 0;
    batch-free ones broadcast along it (lower rank, or size 1 there)."""
    out = node.outputs[0]
    for v, b in zip(node.inputs, batched):
        if b and v.type.rank != out.type.rank:
            return None
        if not b and v.type.rank == out.type.rank and v.shape[0] != 1:
            return None
    return dict(node.attrs) if any(batched) else None


def reduction(node: Node, batched: list, rows: int) -> dict | None:
    """One-operand reductions over `axes` keep the batch when axis 0 is not among them
    (layer_norm, with its scale and shift, and the rest answer None: not reasoned about)."""
    if len(node.inputs) != 1 or "axes" not in node.attrs:
        return None
    rank = node.inputs[0].type.rank
    return dict(node.attrs) if batched[0] and all(a % rank != 0 for a in node.attrs["axes"]) else None


def first_input(node: Node, batched: list, rows: int) -> dict | None:
    """Ops that treat axis 0 of their first input as the batch (convolutions, pooling):
    batch-wise when only that input carries it."""
    return dict(node.attrs) if batched[0] and not any(batched[1:]) else None


def reshape(node: Node, batched: list, rows: int) -> dict | None:
    """A reshape that keeps axis 0 (and so every batch entry's elements together)."""
    (x,) = node.inputs
    shape = tuple(node.attrs["shape"])
    if not batched[0] or not shape or shape[0] != x.shape[0]:
        return None
    return {**node.attrs, "shape": (rows,) + shape[1:]}


def matmul(node: Node, batched: list, rows: int) -> dict | None:
    """x @ w with the batch on x's rows (rank 2, not transposed) or on x's leading batch
    axis (rank > 2), w batch-free; or both batched, with axis 0 a batch axis of both."""
    x, w = node.inputs
    if batched[0] and not batched[1]:
        ok = x.type.rank > 2 or (x.type.rank == 2 and not node.attrs["transpose_a"])
        if x.type.rank > 2 and w.type.rank > 2 and w.shape[0] != 1:
            ok = False  # w's own batch axes would pair entry by entry with x's
        return dict(node.attrs) if ok else None
    if batched[0] and batched[1] and x.type.rank == w.type.rank > 2:
        return dict(node.attrs)
    return None


def rule_for(opdef) -> Rule | None:
    """The op's own rule, else its fusion class's (elementwise, reductions), else None."""
    if opdef.batch_split is not None:
        return opdef.batch_split
    if opdef.fusion == Fusion.ELEMENTWISE:
        return elementwise
    if opdef.fusion == Fusion.REDUCTION:
        return reduction
    return None
