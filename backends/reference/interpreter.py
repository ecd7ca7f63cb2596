"""Runs a graph node by node with the registry's numpy implementations.

Deliberately simple: no rewriting, no buffer reuse beyond dropping dead arrays. Every result
is checked against its node's inferred type, so a registry entry whose shape rule and
reference disagree is caught here rather than trusted.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from ...ir.graph import Graph, Node, Value
from ...ir.reference import InterpreterError, run_node
from ..executable import Executable
from ..numerics import check_node
from ..profile import build_profile


def evaluate(graph: Graph, feeds: Mapping[Value, np.ndarray],
             wanted: list[Value] | None = None, check_numerics: bool = False,
             timings: dict[Node, float] | None = None) -> dict[Value, np.ndarray]:
    """Evaluate the schedule; `feeds` binds inputs and params. Returns the wanted values.
    check_numerics: raise NumericsError at the first node with a NaN or inf result.
    timings: add each node's seconds to it (exe.profile)."""
    wanted = list(graph.outputs if wanted is None else wanted)
    env: dict[Value, np.ndarray] = dict(feeds)
    for c in graph.constants:
        env[c] = c.data
    needed: set[Value] = set(wanted)  # run only what the wanted values depend on
    schedule = []
    for n in reversed(graph.nodes):
        if any(o in needed for o in n.outputs):
            schedule.append(n)
            needed.update(n.inputs)
    schedule.reverse()
    last_use: dict[Value, int] = {}
    for i, n in enumerate(schedule):
        for v in n.inputs:
            last_use[v] = i
    keep = set(wanted)
    for i, n in enumerate(schedule):
        try:
            args = [env[v] for v in n.inputs]
        except KeyError:
            missing = next(v for v in n.inputs if v not in env)
            raise InterpreterError(f"value {missing.ref()} is not bound (missing input or "
                                   "parameter, or a node scheduled before its producer)", node=n)
        if timings is None:
            outs = run_node(n, args)
        else:
            t0 = time.perf_counter()
            outs = run_node(n, args)
            timings[n] = timings.get(n, 0.0) + time.perf_counter() - t0
        if check_numerics:
            check_node(graph, n, args, outs)
        for v, arr in zip(n.outputs, outs):
            env[v] = arr
        for v in n.inputs:
            if last_use.get(v) == i and v not in keep and v.kind == "node":
                env.pop(v, None)
    return {v: env[v] for v in wanted}


def run_graph(graph: Graph, inputs: Mapping[str, np.ndarray],
              params: Mapping[str, np.ndarray], check_numerics: bool = False,
              timings: dict[Node, float] | None = None) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Evaluate outputs and parameter updates from arrays keyed by name."""
    feeds: dict[Value, np.ndarray] = {}
    for v in graph.inputs:
        feeds[v] = inputs[v.name]
    for p in graph.params:
        feeds[p] = params[p.name]
    upd_names = list(graph.updates)
    wanted = list(graph.outputs) + [graph.updates[k] for k in upd_names]
    env = evaluate(graph, feeds, wanted, check_numerics, timings)
    outs = [env[v] for v in graph.outputs]
    return outs, {k: env[graph.updates[k]] for k in upd_names}


class ReferenceExecutable(Executable):
    backend_name = "reference"

    def __init__(self, graph: Graph, params: Mapping[str, np.ndarray] | None = None,
                 single_output: bool = False, check_numerics: bool = False) -> None:
        super().__init__(graph, params=params, single_output=single_output)
        self.check_numerics = check_numerics

    def _execute(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]):
        return run_graph(self.graph, inputs, params, self.check_numerics)

    def _profile(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray], repeat: int):
        """Each node timed around its numpy implementation (perf_counter)."""
        run_graph(self.graph, inputs, params)  # warm-up
        timings: dict[Node, float] = {}
        t0 = time.perf_counter()
        for _ in range(repeat):
            run_graph(self.graph, inputs, params, timings=timings)
        call = (time.perf_counter() - t0) / repeat
        rows = [((f"{n.op}:{n.outputs[0].ref() if n.outputs else '?'}",), (n,), timings[n] / repeat, 0)
                for n in self.graph.nodes if n in timings]
        return build_profile(self.graph, self.backend_name, rows, call, repeat, "perf_counter per node")
