"""Simplification: constant folding, common-subexpression elimination, algebraic
identities and dead-code elimination, repeated until nothing changes.

Each rewrite keeps the value's type, so the optimised graph computes what the original
does: folding evaluates with the reference interpreter itself, and the algebraic rules only
drop operations that are exact identities in IEEE arithmetic (x*1, x+0 with a -0.0 caveat
handled below, double transposes, reshape chains, no-op casts and broadcasts).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op
from ..ir.rewrite import replace_uses
from .dce import eliminate_dead_code

FOLD_LIMIT = 1 << 12  # elements: bigger results stay computed at run time (bounded size)


@dataclass
class SimplifyStats:
    folded: int = 0
    cse: int = 0
    algebra: int = 0
    dce: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"constants folded": self.folded, "common subexpressions": self.cse,
                "algebraic identities": self.algebra, "dead nodes removed": self.dce}


def _const_value(v: Value) -> np.ndarray | None:
    return v.data if v.kind == "const" else None


def _is_scalar_const(v: Value, x: float) -> bool:
    """v is a constant whose every element equals x (a zero must be +0.0)."""
    d = _const_value(v)
    if d is None or d.size == 0 or not np.all(d == x):
        return False
    return not (x == 0 and d.dtype.kind == "f" and np.signbit(d).any())


def _attr_key(v: Any) -> Any:
    return (type(v).__name__, repr(v))


def _fold(g: Graph, stats: SimplifyStats) -> bool:
    from ..ir.reference import run_node
    changed = False
    for n in list(g.nodes):
        opdef = get_op(n.op)
        if not n.inputs or any(v.kind != "const" for v in n.inputs) or opdef.reference is None:
            continue
        if sum(o.type.size for o in n.outputs) > FOLD_LIMIT:
            continue
        try:
            results = run_node(n, [v.data for v in n.inputs])
        except Exception:  # a bad constant index: leave it for run time to report
            continue
        mapping = {o: g.add_constant(r, o.dtype) for o, r in zip(n.outputs, results)}
        replace_uses(g, mapping)
        g.nodes.remove(n)
        stats.folded += 1
        changed = True
    return changed


def _dedupe_constants(g: Graph, stats: SimplifyStats) -> bool:
    seen: dict[tuple, Value] = {}
    mapping: dict[Value, Value] = {}
    for c in g.constants:
        if c.name:
            continue
        key = (c.dtype.name, c.shape, c.data.tobytes())
        if key in seen:
            mapping[c] = seen[key]
        else:
            seen[key] = c
    if mapping:
        replace_uses(g, mapping)
        g.constants = [c for c in g.constants if c not in mapping]
        stats.cse += len(mapping)
    return bool(mapping)


def _cse(g: Graph, stats: SimplifyStats) -> bool:
    seen: dict[tuple, Node] = {}
    changed = False
    for n in list(g.nodes):
        key = (n.op, tuple(id(v) for v in n.inputs),
               tuple(sorted((k, _attr_key(v)) for k, v in n.attrs.items())))
        first = seen.get(key)
        if first is None:
            seen[key] = n
            continue
        replace_uses(g, dict(zip(n.outputs, first.outputs)))
        g.nodes.remove(n)
        stats.cse += 1
        changed = True
    return changed


def _identity_of(n: Node) -> Value | None:
    """The input a node merely passes through, if it is an exact identity."""
    x = n.inputs[0] if n.inputs else None
    out = n.outputs[0] if len(n.outputs) == 1 else None
    if out is None or x is None:
        return None
    if n.op in ("reshape", "broadcast_to") and x.type == out.type:
        return x
    if n.op == "transpose" and list(n.attrs["perm"]) == sorted(n.attrs["perm"]):
        return x
    if n.op == "cast" and x.dtype == out.dtype:
        return x
    if n.op in ("squeeze", "expand_dims") and not n.attrs["axes"]:
        return x
    if n.op in ("mul", "div") and _is_scalar_const(n.inputs[1], 1.0) and x.type == out.type:
        return x
    if n.op == "mul" and _is_scalar_const(x, 1.0) and n.inputs[1].type == out.type:
        return n.inputs[1]
    # x + 0 is not an identity for x = -0.0 (gives +0.0); x - 0 and x + (-0.0) are.
    if n.op == "sub" and _is_scalar_const(n.inputs[1], 0.0) and x.type == out.type:
        return x
    if n.op == "add" and out.dtype.is_float:
        d = _const_value(n.inputs[1])
        if d is not None and np.all(d == 0) and np.all(np.signbit(d)) and x.type == out.type:
            return x
    if n.op == "add" and not out.dtype.is_float:
        for a, b in ((x, n.inputs[1]), (n.inputs[1], x)):
            if _is_scalar_const(b, 0) and a.type == out.type:
                return a
    return None


def _algebra(g: Graph, stats: SimplifyStats) -> bool:
    changed = False
    for n in list(g.nodes):
        same = _identity_of(n)
        if same is not None:
            replace_uses(g, {n.outputs[0]: same})
            g.nodes.remove(n)
            stats.algebra += 1
            changed = True
            continue
        x = n.inputs[0] if n.inputs else None
        p = x.producer if x is not None else None
        if p is None or p.op != n.op:
            continue
        # chains collapse into one op reading the chain's source
        if n.op == "transpose":
            perm = tuple(p.attrs["perm"][i] for i in n.attrs["perm"])
            n.inputs[0] = p.inputs[0]
            n.attrs = dict(n.attrs, perm=perm)
        elif n.op in ("reshape", "broadcast_to"):
            n.inputs[0] = p.inputs[0]
        else:
            continue
        stats.algebra += 1
        changed = True
    return changed


def simplify(g: Graph, max_rounds: int = 8) -> SimplifyStats:
    """Simplify in place until a fixpoint (or max_rounds)."""
    stats = SimplifyStats()
    for _ in range(max_rounds):
        changed = _dedupe_constants(g, stats)
        changed |= _fold(g, stats)
        changed |= _algebra(g, stats)
        changed |= _cse(g, stats)
        removed = eliminate_dead_code(g)
        stats.dce += removed
        if not (changed or removed):
            break
    return stats
