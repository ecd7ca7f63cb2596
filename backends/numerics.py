"""The NaN/Inf locator: which node first produced a non-finite value, and from what.

With `check_numerics`, every backend checks each kernel's outputs (the reference: each
node's) for NaN and infinity. The compiled backends only learn *which kernel* went
non-finite first; a fused kernel holds several nodes, so the slow path here (run only on
failure) re-runs that kernel's nodes on the reference interpreter with the kernel's actual
input values and walks back from the flagged output to the first node whose output is
non-finite: the culprit. Its inputs tell whether it made the NaN (finite inputs) or passed
on one that was already there (a graph input, a parameter, a constant).

`check_plan(program)` says which buffers the generated code checks after each kernel:
the float values of the kernel's own nodes that it writes, each after the last kernel of
its node that writes it (a node lowered to several kernels is checked once complete).
Scratch buffers are never checked: they may hold -inf on purpose (max-pool padding).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from ..ir import kernel as K
from ..ir.errors import GraphcError, NumericsError
from ..ir.graph import Graph, Node, Value
from ..ir.reference import run_node
from ..ir.validate import evaluate_all

ENV_VAR = "GRAPHC_CHECK_NUMERICS"


def enabled(flag: bool | None) -> bool:
    """check_numerics as given, or (None) from GRAPHC_CHECK_NUMERICS (1/true/yes/on)."""
    if flag is None:
        return os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(flag, (bool, np.bool_)):
        raise GraphcError(f"check_numerics must be True, False or None, got {flag!r}")
    return bool(flag)


def nonfinite(arr: np.ndarray) -> bool:
    """Whether a float array holds NaN or +-inf (never true for integer or bool arrays)."""
    return arr.dtype.kind == "f" and arr.size > 0 and not bool(np.isfinite(arr).all())


def summary(arr: np.ndarray) -> str:
    """'3 nan, 1 -inf of 64 elements' (only the kinds present)."""
    nan = int(np.isnan(arr).sum())
    pos = int(np.isposinf(arr).sum())
    neg = int(np.isneginf(arr).sum())
    kinds = [f"{n} {what}" for n, what in ((nan, "nan"), (pos, "+inf"), (neg, "-inf")) if n]
    return f"{', '.join(kinds)} of {arr.size} elements"


# -- which buffers the generated code checks ---------------------------------------------------

def _storage(p: K.Program, name: str) -> tuple[str, int, int]:
    """(root buffer or '<arena>', first byte, end byte) of a buffer's bytes."""
    b = p.buffers[name]
    nbytes = b.size * b.dtype.itemsize
    off = 0
    while name in p.aliases:
        base, elems = p.aliases[name]
        off += int(elems) * p.buffers[base].dtype.itemsize
        name = base
    if p.buffers[name].kind == "temp":
        return "<arena>", p.arena.get(name, 0) + off, p.arena.get(name, 0) + off + nbytes
    return name, off, off + nbytes


def _overlap(a: tuple[str, int, int], b: tuple[str, int, int]) -> bool:
    return a[0] == b[0] and a[1] < b[2] and b[1] < a[2]


written = K.written_buffers  # (the profiler reads it too)


def check_plan(p: K.Program) -> list[tuple[str, ...]]:
    """For each kernel (in order), the float buffers to check right after it runs."""
    writes = [[_storage(p, b) for b in written(k) if b in p.buffers] for k in p.kernels]
    prov = p.provenance
    if prov is None:  # a hand-built program: every float buffer it writes
        return [tuple(b for b in written(k) if b in p.buffers and b != p.status
                      and p.buffers[b].dtype.is_float and p.buffers[b].size) for k in p.kernels]
    kernels_of: dict[int, list[int]] = {}  # a node group (its first node) -> its kernels
    for i, k in enumerate(p.kernels):
        nodes = prov.nodes_of(k.name)
        if nodes:
            kernels_of.setdefault(id(nodes[0]), []).append(i)
    plan: list[list[str]] = [[] for _ in p.kernels]
    seen: list[list[tuple[str, int, int]]] = [[] for _ in p.kernels]
    for i, k in enumerate(p.kernels):
        nodes = prov.nodes_of(k.name)
        if not nodes or kernels_of[id(nodes[0])][-1] != i:
            continue  # values are placed by the group's kernels; see below
        group = kernels_of[id(nodes[0])]
        for v in (o for n in nodes for o in n.outputs):
            name = prov.value_buffers.get(v)
            if name is None or name not in p.buffers or not v.dtype.is_float or not v.type.size:
                continue
            st = _storage(p, name)
            last = [j for j in group if any(_overlap(st, w) for w in writes[j])]
            if not last or st in seen[last[-1]]:  # two values in the same bytes (a view)
                continue
            plan[last[-1]].append(name)
            seen[last[-1]].append(st)
    return [tuple(names) for names in plan]


def plan_key(p: K.Program) -> str:
    """The check plan as text, for compile-cache keys (provenance is not program text)."""
    return repr(check_plan(p))


# -- what a node is part of ---------------------------------------------------------------------

def _ancestors(values: Iterable[Value]) -> set[Node]:
    seen: set[Node] = set()
    stack = [v.producer for v in values if v.producer is not None]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(v.producer for v in n.inputs if v.producer is not None)
    return seen


def role(graph: Graph, node: Node) -> tuple[str, str]:
    """('forward' | 'backward' | 'update', a sentence placing the node in the user's code).

    Forward: what the graph's outputs are computed from. Backward nodes carry the source
    line of the forward node they differentiate (passes/autodiff.py), so the forward ops
    built at that line are named; optimizer updates are nodes only the parameter updates
    need, built at the line that asked for them."""
    forward = _ancestors(graph.outputs)
    if node in forward or not (graph.updates or graph.outputs):
        return "forward", ""
    same = [n.op for n in graph.nodes if n is not node and n in forward and node.loc is not None
            and n.loc == node.loc]
    updates = sorted(name for name, v in graph.updates.items()
                     if v.producer is node or node in _ancestors([v]))
    if same:
        ops = ", ".join(dict.fromkeys(same))
        return "backward", (f"part of the backward pass: the gradient of the forward op(s) {ops} "
                            f"built at {node.loc}")
    if updates:
        names = ", ".join(repr(u) for u in updates[:4]) + (", ..." if len(updates) > 4 else "")
        return "update", f"part of the parameter update of {names} (optimizer)"
    return "backward", "computed after the forward pass (gradient or update)"


# -- the error ----------------------------------------------------------------------------------

def _describe_input(v: Value, arr: np.ndarray) -> str:
    what = {"input": f"graph input {v.name!r}", "param": f"parameter {v.name!r}",
            "const": "a constant"}.get(v.kind)
    if what is None and v.producer is not None:
        where = f" at {v.producer.loc}" if v.producer.loc else ""
        what = f"result of {v.producer.op}{where}"
    return f"{v.ref()}: {v.type} ({what}): {summary(arr)}"


def numerics_error(graph: Graph, node: Node, inputs: Sequence[np.ndarray],
                   outputs: Sequence[np.ndarray], backend: str, kernel: str | None = None,
                   members: Sequence[Node] = (), note: str = "") -> NumericsError:
    """The NumericsError for `node`, which computed `outputs` from `inputs`."""
    bad_out = [(v, a) for v, a in zip(node.outputs, outputs) if nonfinite(np.asarray(a))]
    bad_in = tuple(_describe_input(v, np.asarray(a)) for v, a in zip(node.inputs, inputs)
                   if nonfinite(np.asarray(a)))
    what = "; ".join(f"{v.ref()}: {v.type} has {summary(np.asarray(a))}" for v, a in bad_out)
    if bad_in:
        head = (f"non-finite values: {node.op} passed on non-finite input values ({what}); "
                f"its inputs were already non-finite")
    else:
        head = f"non-finite values: {node.op} produced NaN/inf from finite inputs ({what})"
    lines = [head]
    lines += [f"  input {d}" for d in bad_in]
    kind, where = role(graph, node)
    if where:
        lines.append(f"  {where}")
    if kernel is not None:
        ops = ", ".join(n.op for n in members) if members else node.op
        lines.append(f"  first flagged by {backend} kernel {kernel!r} (nodes: {ops})")
    if note:
        lines.append(f"  {note}")
    return NumericsError("\n".join(lines), node=node, op=node.op, inputs_finite=not bad_in,
                         nonfinite_inputs=bad_in, role=kind, kernel=kernel, backend=backend)


def check_node(graph: Graph, node: Node, inputs: Sequence[np.ndarray],
               outputs: Sequence[np.ndarray], backend: str = "reference") -> None:
    """Raise the NumericsError for node if one of its float outputs is non-finite."""
    if any(nonfinite(a) for a in outputs):
        raise numerics_error(graph, node, inputs, outputs, backend)


# -- the slow path of the compiled backends -------------------------------------------------------

def locate_in_kernel(p: K.Program, index: int, read: Callable[[str], np.ndarray | None],
                     feeds: Mapping[str, np.ndarray], backend: str, intact: bool = False
                     ) -> NumericsError:
    """The error for kernel `index` of `p`, which the generated code flagged.

    read(buffer) gives a buffer's current elements (flat), or None when they are not
    available; the caller guarantees that no kernel after `index` has run (LLVM: the call
    stopped there) or that only kernels before it have (CUDA re-runs them). A kernel input
    the flagged kernel itself may have overwritten (in-place activations) is recomputed
    from the graph inputs and parameters `feeds` (keyed by name) on the reference
    interpreter instead; with `intact` (the kernel has not run) every buffer is read."""
    k = p.kernels[index]
    prov = p.provenance
    members = list(prov.nodes_of(k.name)) if prov is not None else []
    if not members:
        return NumericsError(f"non-finite values in the results of {backend} kernel {k.name!r}"
                             + (f" (computes {k.source})" if k.source else ""),
                             op="", kernel=k.name, backend=backend)
    graph = prov.graph
    produced = {o for n in members for o in n.outputs}
    external = list(dict.fromkeys(v for n in members for v in n.inputs if v not in produced))
    clobbered = [] if intact else [_storage(p, b) for b in written(k) if b in p.buffers]
    env: dict[Value, np.ndarray] = {}
    missing: list[Value] = []
    for v in external:
        if v.kind == "const":
            env[v] = v.data
        elif v.kind in ("input", "param"):
            env[v] = np.asarray(feeds[v.name]).reshape(v.shape)
        else:
            name = prov.value_buffers.get(v)
            flat = None
            if name in p.buffers and not any(_overlap(_storage(p, name), w) for w in clobbered):
                flat = read(name)
            if flat is None:
                missing.append(v)
            else:
                env[v] = np.asarray(flat).reshape(v.shape)
    if missing:  # (every value, on the registry's references: this is the error path)
        values = evaluate_all(graph, {x.name: np.asarray(feeds[x.name]).reshape(x.shape)
                                      for x in list(graph.inputs) + list(graph.params)})
        env.update((v, values[v]) for v in missing)
    for n in members:
        for v, arr in zip(n.outputs, run_node(n, [env[u] for u in n.inputs])):
            env[v] = arr
    bad = {v for v in env if nonfinite(np.asarray(env[v]))}
    checked = set(check_plan(p)[index])
    starts = [o for n in members for o in n.outputs if o in bad
              and prov.value_buffers.get(o) in checked]
    culprit = _walk_back(starts or [o for n in members for o in n.outputs if o in bad], bad,
                         produced, members)
    if culprit is None:
        last = members[-1]
        return NumericsError(
            f"non-finite values in the results of {backend} kernel {k.name!r} (nodes: "
            f"{', '.join(n.op for n in members)}), but the reference interpreter computes finite "
            "values from the same inputs: the compiled code and the reference differ here",
            node=last, op=last.op, kernel=k.name, backend=backend)
    return numerics_error(graph, culprit, [env[u] for u in culprit.inputs],
                          [env[o] for o in culprit.outputs], backend, kernel=k.name, members=members)


def _walk_back(starts: list[Value], bad: set[Value], produced: set[Value],
               members: list[Node]) -> Node | None:
    """From non-finite values back through non-finite operands computed in the same kernel:
    the earliest node reached whose non-finite operands (if any) come from outside."""
    order = {n: i for i, n in enumerate(members)}
    best: Node | None = None
    for v in starts:
        n = v.producer
        while True:
            inner = [u for u in n.inputs if u in bad and u in produced]
            if not inner:
                break
            n = min((u.producer for u in inner), key=order.__getitem__)
        if best is None or order[n] < order[best]:
            best = n
    return best
