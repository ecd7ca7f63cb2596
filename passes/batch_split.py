"""Batch split: the graph one of `parts` threads runs on its slice of the batch.

An inference graph whose every node computes each index of axis 0 from that index alone
(ir/batch.py's rules, registry `batch_split`) can run as `parts` independent copies, each
over rows [t*n/parts, (t+1)*n/parts) of every input and output: one fork per call and no
synchronisation between kernels, where splitting each kernel's loops forks (and on a
loaded machine, waits for a sleeping worker) once per kernel. `split_batch` builds the
graph of one part, or says why the graph does not split.
"""
from __future__ import annotations

from ..ir.batch import rule_for
from ..ir.graph import Graph, Value
from ..ir.registry import get_op


def split_batch(graph: Graph, parts: int) -> tuple[Graph | None, str]:
    """(the graph for one of `parts` equal slices of the batch, "") or (None, reason).
    Inputs and outputs must all lead with the same batch n (a multiple of parts); no
    parameters or updates (inference graphs); every node batch-wise or batch-free."""
    if parts < 2:
        return None, "one part"
    if graph.params or graph.updates:
        return None, "the graph has parameters or updates"
    if not graph.inputs or not graph.outputs:
        return None, "no inputs or outputs"
    ends = list(graph.inputs) + list(graph.outputs)
    if any(v.type.rank == 0 for v in ends):
        return None, "a scalar input or output"
    n = graph.inputs[0].shape[0]
    if any(v.shape[0] != n for v in ends) or n % parts:
        return None, f"inputs and outputs do not all lead with a batch divisible by {parts}"
    rows = n // parts
    g = Graph(graph.name)
    mapping: dict[Value, Value] = {}
    batched: set[Value] = set()
    for v in graph.inputs:
        mapping[v] = g.add_input(v.name, v.type.with_shape((rows,) + v.shape[1:]))
        batched.add(v)
    for c in graph.constants:
        mapping[c] = Value(c.type, "const", c.name, data=c.data)
        g.constants.append(mapping[c])
    for node in graph.nodes:
        flags = [v in batched for v in node.inputs]
        attrs = dict(node.attrs)
        if any(flags):
            rule = rule_for(get_op(node.op))
            attrs = rule(node, flags, rows) if rule is not None else None
            if attrs is None:
                return None, f"{node.op} is not batch-wise here ({node.describe()})"
        new = g.add_node(node.op, [mapping[v] for v in node.inputs], attrs, node.loc)
        for old, out in zip(node.outputs, new.outputs):
            if any(flags) and out.shape != (rows,) + old.shape[1:]:
                return None, f"{node.op} does not keep the batch on axis 0 ({node.describe()})"
            mapping[old] = out
            if any(flags):
                batched.add(old)
    if not all(v in batched for v in graph.outputs):
        return None, "an output does not depend on the batch"
    g.outputs = [mapping[v] for v in graph.outputs]
    return g, ""
