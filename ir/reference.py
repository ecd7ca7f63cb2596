"""Evaluating one node with its registry reference, checked against the node's type.

The reference interpreter runs graphs with it, and constant folding uses it, so folded
constants are exactly what the oracle would compute.
"""
from __future__ import annotations

import numpy as np

from .errors import GraphcError
from .graph import Node
from .registry import get_op


class InterpreterError(GraphcError):
    """A node failed while being evaluated (bad index data, or an internal inconsistency)."""


def run_node(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    opdef = get_op(node.op)
    try:
        with np.errstate(all="ignore"):  # IEEE semantics, as compiled code has
            result = opdef.reference(*args, **node.attrs)
    except GraphcError as e:
        raise e.attach(node)
    except Exception as e:  # a numpy failure on this node's data
        raise InterpreterError(f"{node.op} failed: {type(e).__name__}: {e}", node=node) from e
    results = list(result) if isinstance(result, tuple) else [result]
    outs = []
    for value, arr in zip(node.outputs, results, strict=True):
        arr = np.asarray(arr)
        if arr.shape != value.shape or arr.dtype != value.dtype.np_dtype:
            raise InterpreterError(
                f"internal: reference of {node.op} returned {arr.dtype}{list(arr.shape)} but its "
                f"shape rule says {value.type}", node=node)
        outs.append(arr)
    return outs
