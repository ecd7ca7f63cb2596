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
from .tolerance import compare, magnitudes, rounding_budget, rounding_noise_runs, unstable_elements
from .types import TensorType
from .widen import wide_feeds, widened


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


def _truth(graph: Graph, feeds: Mapping[str, np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """(results in float64, every float32 value) of graph: the float64 run is the truth,
    so two rewrites that round differently (a composite op and its decomposition) are not
    told apart, while one that computes something else is."""
    env = evaluate_all(graph, feeds)
    wide = widened(graph)
    if wide is None:
        return [a for _, _, a in _results(graph, env)], env
    wide_env = evaluate_all(wide, wide_feeds(feeds, wide))
    return [a for _, _, a in _results(wide, wide_env)], env


def _judge(stage: str, graph: Graph, feeds: Mapping[str, np.ndarray], truth: list[np.ndarray],
           env: Mapping[Value, np.ndarray], got: list[np.ndarray], seed: int) -> None:
    budget, scale = rounding_budget(graph), magnitudes(graph, env)
    moved = None
    for k, ((label, v, ref), want, value) in enumerate(zip(_results(graph, env), truth, got)):
        b, s = budget.get(v, 0.0), scale.get(v, 0.0)
        why = compare(value, want, ref, v.type, b, s)
        if why is not None:  # unless only elements rounding can flip disagree (tolerance.py)
            if moved is None:
                moved = [run[0][0] + list(run[0][1].values())
                         for run in rounding_noise_runs(graph, feeds, seed)]
            skip = unstable_elements(want, [m[k] for m in moved], v.type, b, ref, s)
            if skip.any() and compare(value, want, ref, v.type, b, s, skip) is None:
                continue
            raise TranslationValidationError(
                f"{stage} changed what graph {graph.name!r} computes: {label} ({v.type}): {why} "
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
        truth, env = _truth(before, feeds)
    except GraphcError:
        return  # the reference cannot run these inputs (an index out of range): no verdict
    after_truth, _ = _truth(after, feeds)
    # in the graph's own dtypes, rounded once from float64
    got = [np.asarray(a).astype(v.dtype.np_dtype) for a, (_, v, _) in
           zip(after_truth, _results(before, env))]
    _judge(f"pass {stage!r}", before, feeds, truth, env, got, seed)


def check_lowering(graph: Graph, program, seed: int = 0) -> None:
    """The kernel-IR program computes what the graph does, run by the kernel-IR
    interpreter (ir/interpret.py)."""
    from .interpret import run_program  # interpret imports the op library: not at load time
    feeds = random_feeds(graph, seed)
    try:
        truth, env = _truth(graph, feeds)
    except GraphcError:
        return
    params = {p.name: np.array(feeds[p.name], copy=True) for p in graph.params}
    outs, updates = run_program(program, {v.name: feeds[v.name] for v in graph.inputs}, params)
    got = list(outs) + [updates[k] for k in graph.updates]  # flat buffers: give them shapes
    got = [np.asarray(a).reshape(v.shape) for a, (_, v, _) in zip(got, _results(graph, env))]
    _judge("lowering to kernel IR", graph, feeds, truth, env, got, seed)
