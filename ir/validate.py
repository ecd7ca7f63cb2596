"""Translation validation: a rewrite is checked by running the program before and after it
on the same random inputs, so a wrong pass or lowering names itself instead of showing up
as a wrong final answer three stages later.

`check_rewrite(before, after, stage)` compares two graphs with the numpy reference
(ir/reference.py); `check_lowering(graph, program, run_program)` compares a graph with its
kernel-IR program run by the kernel-IR interpreter. Both judge with ir/tolerance.py, the
rule the differential fuzzer uses. The pass manager runs the first after every graph pass
and the backends the second after lowering when GRAPHC_VERIFY=2 (the fuzzer's setting).
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .errors import GraphcError
from .graph import Graph, Value
from .reference import run_node
from .tolerance import compare, magnitudes, rounding_budget
from .types import TensorType


class TranslationValidationError(GraphcError):
    """A pass or lowering changed what the program computes."""


def verify_level() -> int:
    """GRAPHC_VERIFY: 0 off, 1 the structural verifier after every pass, 2 also translation
    validation of every pass and lowering (slow: for tests and the fuzzer)."""
    raw = os.environ.get("GRAPHC_VERIFY", "")
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 1


def random_array(t: TensorType, rng: np.random.Generator) -> np.ndarray:
    dt = t.dtype
    if dt.is_bool:
        return rng.random(t.shape) < 0.5
    if dt.is_int:
        return rng.integers(-5, 6, t.shape).astype(dt.np_dtype)
    return rng.standard_normal(t.shape).astype(dt.np_dtype)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs at random; parameters at their initial values (random where they have none)."""
    rng = np.random.default_rng(seed)
    out = {v.name: random_array(v.type, rng) for v in graph.inputs}
    for p in graph.params:
        try:
            out[p.name] = np.asarray(graph.initial_param_value(p), p.dtype.np_dtype)
        except GraphcError:
            out[p.name] = random_array(p.type, rng)
    return out


def evaluate_all(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[Value, np.ndarray]:
    """Every value of the graph, by the registry's numpy references."""
    env: dict[Value, np.ndarray] = {v: feeds[v.name] for v in list(graph.inputs) + list(graph.params)}
    env.update({c: c.data for c in graph.constants})
    with np.errstate(all="ignore"):
        for n in graph.nodes:
            env.update(zip(n.outputs, run_node(n, [env[v] for v in n.inputs])))
    return env


def _results(graph: Graph, env: Mapping[Value, np.ndarray]) -> list[tuple[str, Value, np.ndarray]]:
    return ([(f"output {i}", v, env[v]) for i, v in enumerate(graph.outputs)]
            + [(f"update of {k!r}", v, env[v]) for k, v in graph.updates.items()])


def _judge(stage: str, before: Graph, env: Mapping[Value, np.ndarray],
           got: list[np.ndarray], seed: int) -> None:
    budget, scale = rounding_budget(before), magnitudes(before, env)
    for (label, v, want), value in zip(_results(before, env), got):
        why = compare(value, want, want, v.type, 2 * budget.get(v, 0.0), scale.get(v, 0.0))
        if why is not None:
            raise TranslationValidationError(
                f"{stage} changed what graph {before.name!r} computes: {label} ({v.type}): {why} "
                f"(random inputs, seed {seed}; GRAPHC_VERIFY=2)", node=v.producer)


def check_rewrite(before: Graph, after: Graph, stage: str, seed: int = 0) -> None:
    """`after` computes what `before` does (same inputs, outputs and updates by position)."""
    if len(before.outputs) != len(after.outputs) or set(before.updates) != set(after.updates):
        raise TranslationValidationError(f"{stage} changed the signature of graph {before.name!r}")
    feeds = random_feeds(before, seed)
    missing = [v.name for v in list(after.inputs) + list(after.params) if v.name not in feeds]
    if missing:
        raise TranslationValidationError(f"{stage} added inputs or parameters {missing}")
    try:
        env = evaluate_all(before, feeds)
    except GraphcError:
        return  # the reference cannot run these inputs (an index out of range): no verdict
    after_env = evaluate_all(after, feeds)
    _judge(f"pass {stage!r}", before, env, [a for _, _, a in _results(after, after_env)], seed)


def check_lowering(graph: Graph, program, seed: int = 0) -> None:
    """The kernel-IR program computes what the graph does, run by the kernel-IR
    interpreter (ir/interpret.py; where it is not installed, there is nothing to check)."""
    try:
        from .interpret import run_program
    except ImportError:
        return
    feeds = random_feeds(graph, seed)
    try:
        env = evaluate_all(graph, feeds)
    except GraphcError:
        return
    params = {p.name: np.array(feeds[p.name], copy=True) for p in graph.params}
    outs, updates = run_program(program, {v.name: feeds[v.name] for v in graph.inputs}, params)
    _judge("lowering to kernel IR", graph, env, list(outs) + [updates[k] for k in graph.updates],
           seed)
