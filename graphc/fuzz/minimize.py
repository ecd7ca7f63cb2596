"""Shrink a failing case to a short reproduction, then write it as a Python script.

Greedy delta debugging over the graph: drop outputs and parameter updates, then cut
nodes (a node's results become fresh inputs, so everything above it falls away), then
bypass nodes (a reader takes one of the node's operands of the same type instead), each
kept only when the same path still fails the same way. Every candidate is a graph the
verifier accepts, so the reproduction is one a user could have built.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..ir.errors import GraphcError
from ..ir.graph import Graph, Value
from ..passes.dce import eliminate_dead_code
from .cases import Case, random_array
from .check import Failure, check_case


def _rebuild(case: Case, edit: Callable[[Graph], None] | None,
             outputs: list[int] | None = None, updates: list[str] | None = None) -> Case | None:
    """A copy of the case with outputs/updates kept by index/name and `edit` applied to
    the copy; None when the result is not a valid graph."""
    g = case.graph.copy()
    if outputs is not None:
        g.outputs = [g.outputs[i] for i in outputs]
    if updates is not None:
        g.updates = {k: g.updates[k] for k in updates}
    if not g.outputs and not g.updates:
        return None
    inputs = dict(case.inputs)
    try:
        if edit is not None:
            edit(g)
        eliminate_dead_code(g, prune_signature_too=True)
        g.verify()
    except GraphcError:
        return None
    rng = np.random.default_rng(case.seed)
    for v in g.inputs:  # the inputs a cut added
        if v.name not in inputs:
            inputs[v.name] = random_array(v.type, rng)
    params = {p.name: case.params[p.name] for p in g.params}
    return Case(case.seed, case.kind, g, {v.name: inputs[v.name] for v in g.inputs}, params,
                case.steps)


def _cut(index: int) -> Callable[[Graph], None]:
    def edit(g: Graph) -> None:
        node = g.nodes[index]
        taken = {v.name for v in g.all_values() if v.name}
        repl = {}
        for k, out in enumerate(node.outputs):
            name = f"cut{index}_{k}"
            while name in taken:
                name += "_"
            repl[out] = g.add_input(name, out.type)
        _replace(g, repl)
    return edit


def _bypass(index: int) -> Callable[[Graph], None]:
    def edit(g: Graph) -> None:
        node = g.nodes[index]
        out = node.outputs[0]
        same = [v for v in node.inputs if v.type == out.type]
        if len(node.outputs) != 1 or not same:
            raise GraphcError("nothing to bypass with")
        _replace(g, {out: same[0]})
    return edit


def _replace(g: Graph, repl: dict[Value, Value]) -> None:
    for n in g.nodes:
        n.inputs = [repl.get(v, v) for v in n.inputs]
    g.outputs = [repl.get(v, v) for v in g.outputs]
    g.updates = {k: repl.get(v, v) for k, v in g.updates.items()}


def minimize(case: Case, failure: Failure, *, seconds: float = 60.0) -> Case:
    """The smallest case found within `seconds` on which failure's path fails the same way."""
    deadline = time.monotonic() + seconds

    def still_fails(c: Case | None) -> bool:
        if c is None or time.monotonic() > deadline:
            return False
        out = check_case(c, [failure.path])
        return any(f.key() == failure.key() for f in out.failures)

    best = case
    for i in range(len(best.graph.outputs)):  # one output is usually enough
        c = _rebuild(best, None, outputs=[i], updates=[])
        if still_fails(c):
            best = c
            break
    for k in list(best.graph.updates):
        c = _rebuild(best, None, updates=[u for u in best.graph.updates if u != k])
        if still_fails(c):
            best = c
    changed = True
    while changed and time.monotonic() < deadline:
        changed = False
        for i in reversed(range(len(best.graph.nodes))):
            if i >= len(best.graph.nodes):
                continue
            for edit in (_cut(i), _bypass(i)):
                c = _rebuild(best, edit)
                if c is not None and len(c.graph.nodes) < len(best.graph.nodes) and still_fails(c):
                    best, changed = c, True
                    break
    return best


def _array_literal(a: np.ndarray) -> str:
    a = np.asarray(a)
    return f"np.array({a.tolist()!r}, dtype=np.{a.dtype.name})"


def reproduction(case: Case, failure: Failure) -> str:
    """A self-contained Python script that shows the failure (text IR + exact arrays)."""
    from ..ir.text import print_graph
    backend, _, level = failure.path.partition("-O")
    text = print_graph(case.graph)
    inputs = ",\n    ".join(f"{k!r}: {_array_literal(v)}" for k, v in case.inputs.items())
    params = ",\n    ".join(f"{k!r}: {_array_literal(v)}" for k, v in case.params.items())
    if backend in ("llvm", "reference") and level:
        run = (f'got = gc.compile(g, backend="{backend}", opt_level={level}, params=params)'
               "(**inputs)")
    else:
        run = f"# path {failure.path!r}: see graphc/fuzz/paths.py for how it runs the graph\n" \
              'got = gc.compile(g, backend="llvm", params=params)(**inputs)'
    return f'''"""graphc fuzz reproduction: seed {case.seed} ({case.kind}), path {failure.path}: {failure.what}.
{failure.message.splitlines()[0] if failure.message else ""}
Rerun the case: python -m graphc.fuzz --seed {case.seed} --cases 1
"""
import numpy as np
import graphc as gc

g = gc.parse("""
{text}""")
inputs = {{
    {inputs}
}}
params = {{
    {params}
}}
want = gc.compile(g, backend="reference", opt_level=0, params=params)(**inputs)
{run}
for w, o in zip(want, got):
    print("reference:", w)
    print("{failure.path}:", o)
'''
