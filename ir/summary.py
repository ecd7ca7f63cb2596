"""A short, readable account of a graph: sizes, op mix and estimated cost from the registry."""
from __future__ import annotations

from collections import Counter

from .graph import Graph
from .registry import get_op


def graph_cost(g: Graph) -> tuple[int, int]:
    """Estimated (FLOPs, bytes moved) of one execution, summed over the registry's costs."""
    flops = moved = 0
    for n in g.nodes:
        c = get_op(n.op).estimate_cost([v.type for v in n.inputs], [v.type for v in n.outputs],
                                       n.attrs)
        flops += c.flops
        moved += c.bytes
    return flops, moved


def summarize(g: Graph) -> str:
    ops = Counter(n.op for n in g.nodes)
    classes = Counter(get_op(n.op).fusion.value for n in g.nodes)
    flops, moved = graph_cost(g)
    n_params = sum(p.type.size for p in g.params)
    lines = [
        f"graph @{g.name}: {len(g.inputs)} inputs, {len(g.params)} parameters "
        f"({n_params:,} values, {sum(p.type.nbytes for p in g.params):,} bytes), "
        f"{len(g.constants)} constants, {len(g.nodes)} nodes, {len(g.outputs)} outputs, "
        f"{len(g.updates)} updates",
        f"  estimated cost per call: {flops / 1e6:,.2f} MFLOP, {moved / 1e6:,.2f} MB moved",
        "  by class: " + ", ".join(f"{k} {v}" for k, v in classes.most_common()),
        "  by op:    " + ", ".join(f"{k} {v}" for k, v in ops.most_common()),
    ]
    return "\n".join(lines)
