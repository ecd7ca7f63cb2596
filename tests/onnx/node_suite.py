"""Running ONNX's own backend node tests through graphc (`python -m tests.onnx.node_suite`
prints the per-op table).

`onnx.backend.test.case.node.collect_testcases()` builds every case in memory: a one-op (or
small expanded) model and its expected outputs. A case is *claimed* when graphc says it
handles it: every op type is in `graphc.onnx.supported_ops(opset)` (a converter for the
model's opset), and every tensor it declares (inputs, outputs,
initialisers, Cast targets) has a dtype graphc has. Every claimed case runs; a failure to
import it (an attribute value graphc refuses) counts as a failure like a wrong answer.

Speed: compiling each case alone through LLVM costs about 0.2 s of fixed overhead, so
claimed cases are imported one by one, merged into a few graphs of BATCH cases each (the
cases stay independent subgraphs with their own inputs and outputs) and each merged graph
compiles once. When a merged graph fails to compile, its cases compile one by one so the
failure lands on the case that causes it.
"""
from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import graphc as gc
from graphc.ir.graph import Graph, Value

BATCH = 40


@dataclass
class Outcome:
    case: str
    ops: tuple[str, ...]
    status: str = "pass"  # "pass" | "import" | "compile" | "mismatch"
    detail: str = ""
    runs: list[Any] = field(default_factory=list)  # (graph, feeds, expected) per data set


def collect() -> list[Any]:
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_testcases()


def _tensor_types(model: Any) -> list[int]:
    g = model.graph
    types = [vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output)
             if vi.type.HasField("tensor_type")]
    types += [t.data_type for t in g.initializer]
    for n in g.node:
        types += [a.i for a in n.attribute if a.name == "to"]
    return types


def claim(case: Any) -> str | None:
    """None when graphc claims the case, else why not."""
    from graphc.onnx import supported_ops
    from graphc.onnx.context import ONNX_DTYPES
    g = case.model.graph
    ops = {n.op_type for n in g.node}
    opset = next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), 0)
    missing = ops - set(supported_ops(opset))  # each op's converter for the model's opset
    if missing:
        return "ops " + ", ".join(sorted(missing)) + (f" at opset {opset}" if opset < 13 else "")
    if any(not vi.type.HasField("tensor_type") for vi in list(g.input) + list(g.output)):
        return "non-tensor values"
    bad = {t for t in _tensor_types(case.model) if t not in ONNX_DTYPES}
    if bad:
        return "dtypes " + ", ".join(map(str, sorted(bad)))
    return None


def _array(x: Any) -> np.ndarray:
    from onnx import numpy_helper
    return numpy_helper.to_array(x) if hasattr(x, "data_type") else np.asarray(x)


def import_case(case: Any, inputs: list[Any]) -> tuple[Graph, dict[str, np.ndarray]]:
    """The case's graph and feeds. Where the model feeds shapes, axes, pads or Range bounds
    as graph inputs, gc.onnx.load gives a DynamicModel; its graph for these inputs' values
    (what gc.compile(model) compiles on a call) is the case's graph."""
    g = case.model.graph
    init = {t.name for t in g.initializer}
    names = [vi.name for vi in g.input if vi.name not in init]
    arrays = dict(zip(names, (_array(a) for a in inputs)))
    graph = gc.onnx.load(case.model)
    if isinstance(graph, gc.onnx.DynamicModel):  # shape inputs: specialised on their values
        graph = graph.specialize(arrays)
    # The importer keeps names that are identifiers, as every node-test input name is.
    return graph, {v.name: arrays[v.name] for v in graph.inputs}


def merge(graphs: list[Graph]) -> tuple[Graph, list[list[Value]]]:
    """One graph holding every graph as an independent subgraph; inputs are renamed
    'g<i>_<name>'. Returns it and each part's outputs in the merged graph."""
    out = Graph("merged")
    parts = []
    for i, g in enumerate(graphs):
        m: dict[Value, Value] = {}
        for v in g.inputs:
            m[v] = out.add_input(f"g{i}_{v.name}", v.type)
        for v in g.constants:
            m[v] = out.add_constant(v.data, v.dtype)
        for n in g.nodes:
            node = out.add_node(n.op, [m[v] for v in n.inputs], dict(n.attrs), n.loc)
            m.update(zip(n.outputs, node.outputs))
        parts.append([m[v] for v in g.outputs])
    out.set_outputs([v for p in parts for v in p])
    return out, parts


def _compare(case: Any, got: list[np.ndarray], want: list[np.ndarray]) -> str:
    if len(got) != len(want):
        return f"{len(got)} outputs, expected {len(want)}"
    for k, (o, w) in enumerate(zip(got, want)):
        w = _array(w)
        if o.shape != w.shape or o.dtype != w.dtype:
            return f"output {k}: {o.dtype}{list(o.shape)}, expected {w.dtype}{list(w.shape)}"
        try:
            if w.dtype.kind == "f":
                np.testing.assert_allclose(o, w, rtol=case.rtol, atol=case.atol, equal_nan=True)
            else:
                np.testing.assert_array_equal(o, w)
        except AssertionError as e:
            lines = [ln for ln in str(e).splitlines() if "Max abs" in ln or "Mismatched" in ln]
            return f"output {k}: " + "; ".join(ln.strip() for ln in lines)
    return ""


def _run_compiled(exe: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    res = exe(**{k: feeds[k] for k in exe.input_names})
    return list(res) if isinstance(res, tuple) else [res]


def run_suite(cases: list[Any] | None = None, backend: str = "llvm") -> list[Outcome]:
    """Run every claimed case; returns one Outcome per claimed case."""
    cases = collect() if cases is None else cases
    outcomes: list[Outcome] = []
    for case in cases:
        if claim(case) is not None:
            continue
        oc = Outcome(case.name, tuple(sorted({n.op_type for n in case.model.graph.node})))
        outcomes.append(oc)
        try:
            for inputs, expected in case.data_sets:
                graph, feeds = import_case(case, inputs)
                oc.runs.append((graph, feeds, expected, case))
        except gc.GraphcError as e:
            oc.status, oc.detail = "import", str(e).splitlines()[-1].strip()
    pending = [(oc, run) for oc in outcomes if oc.status == "pass" for run in oc.runs]
    for start in range(0, len(pending), BATCH):
        _run_batch(pending[start:start + BATCH], backend)
    for oc in outcomes:
        oc.runs = []
    return outcomes


def _run_batch(batch: list[tuple[Outcome, Any]], backend: str) -> None:
    """Compile and run the batch as one merged graph; on an error, case by case."""
    if len(batch) == 1:
        _run_single(*batch[0], backend)
        return
    try:
        merged, parts = merge([run[0] for _, run in batch])
        exe = gc.compile(merged, backend=backend)
        feeds = {f"g{i}_{k}": v for i, (_, run) in enumerate(batch) for k, v in run[1].items()}
        flat = _run_compiled(exe, feeds)
    except gc.GraphcError:
        for item in batch:
            _run_single(*item, backend)
        return
    at = 0
    for (oc, run), outs in zip(batch, parts):
        _check_one(oc, run, flat[at:at + len(outs)])
        at += len(outs)


def _run_single(oc: Outcome, run: Any, backend: str) -> None:
    try:
        got = _run_compiled(gc.compile(run[0], backend=backend), run[1])
    except gc.GraphcError as e:
        oc.status, oc.detail = "compile", str(e).splitlines()[0]
        return
    _check_one(oc, run, got)


def _check_one(oc: Outcome, run: Any, got: list[np.ndarray]) -> None:
    graph, feeds, expected, case = run
    why = _compare(case, got, list(expected))
    if why and oc.status == "pass":
        oc.status, oc.detail = "mismatch", why


def table(outcomes: list[Outcome]) -> str:
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for oc in outcomes:
        for op in oc.ops:
            per[op]["cases"] += 1
            per[op]["pass"] += oc.status == "pass"
    rows = [f"| {op} | {c['pass']}/{c['cases']} |" for op, c in sorted(per.items())]
    total = sum(oc.status == "pass" for oc in outcomes)
    head = f"{total}/{len(outcomes)} claimed cases pass\n\n| op | pass/cases |\n|---|---|"
    fails = [f"- {oc.case} ({oc.status}): {oc.detail}" for oc in outcomes if oc.status != "pass"]
    return "\n".join([head, *rows, "", "Failures:", *fails])


if __name__ == "__main__":
    import sys
    import time
    t = time.perf_counter()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--as-user" in sys.argv:  # all cases, as a user calls graphc (node_suite_user.py)
        from tests.onnx import node_suite_user
        res = node_suite_user.run_as_user(backend=args[0] if args else "llvm")
        print(node_suite_user.report(res))
        if "--failures" in sys.argv:
            print("\nFailures:\n" + node_suite_user.failures(res))
    else:
        res = run_suite(backend=args[0] if args else "llvm")
        print(table(res))
    print(f"\n{time.perf_counter() - t:.1f} s")
