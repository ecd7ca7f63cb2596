"""Legalisation: decompose composite ops into primitives a backend lowers directly.

Every registry op with a ``decompose`` hook (convolutions, pools, softmax, cross-entropy,
normalisations...) can be rebuilt from other registry ops. ``legalize(graph, keep)``
replaces, in place, each node whose op has such a hook and that ``keep`` rejects, and
repeats on what the replacements build until no such node is left. A backend that has its
own kernel for some composites keeps them, e.g.

    legalize(g, keep=lambda op: op.decompose is None or op.name in MY_KERNELS)

The default decomposes everything decomposable. Replacement nodes carry the composite
node's source line. The pass does not check that what remains is runnable: a node with no
decompose hook and no kernel is the backend's to report.
"""
from __future__ import annotations

from typing import Callable

from ..ir.graph import Graph
from ..ir.registry import OpDef, get_op
from ..ir.rewrite import rewrite


def _decompose_all(op: OpDef) -> bool:
    return op.decompose is None


def has_kernel(op: OpDef) -> bool:
    """Ops the kernel-IR lowering handles directly (the LLVM backend keeps these)."""
    return op.scalar is not None or op.lower is not None


def has_flat_kernel(op: OpDef) -> bool:
    """has_kernel, less ops whose kernels call GEMM inside a loop nest (for the CUDA backend,
    which launches each GEMM alone)."""
    return has_kernel(op) and not op.lower_nests_gemm


def legalize(graph: Graph, keep: Callable[[OpDef], bool] = _decompose_all, *,
             verify: bool = True) -> int:
    """Decompose every node whose op has a decompose hook and is not kept; returns the number
    of nodes decomposed (nested decompositions included). With `verify`, the graph is
    verified afterwards."""

    def rule(b, node):
        op = get_op(node.op, node.loc)
        if op.decompose is None or keep(op):
            return None
        return op.decompose(b, node)

    count = rewrite(graph, rule)
    if verify:
        graph.verify()
    return count
