"""ONNX's backend node suite run the way a user calls graphc (`python -m tests.onnx.node_suite
--as-user`): every one of the cases, `_expanded` included, each as

    g = gc.onnx.load(model); exe = gc.compile(g, backend="llvm"); exe(**{name: array})

with the model's own input names and no `input_shapes=` / `constant_inputs=`. A refusal at
import, a compile error or a call error counts as a failure like a wrong answer. This is the
number issue 17 quotes (487 of 1,884 before the issue's work).

For speed, cases whose imported graph takes exactly the model's inputs under the model's
names are merged into batches and compiled together (node_suite.merge: independent
subgraphs, the same result as one by one); any other case runs alone, exactly as above, so
whatever the executable does with the model's names is what a user would see.
"""
from __future__ import annotations

import collections
import re
from typing import Any

import numpy as np

import graphc as gc
from graphc.ir.graph import Graph

from . import node_suite
from .node_suite import Outcome

# The 70 most-used ONNX ops: those that dominate exported vision and language models (the
# ONNX model zoo's CNNs, detection and segmentation nets, torch.onnx exports of
# transformers). Our own list (the issue does not name its 70), so its totals differ a
# little from the "637 cases".
TOP_OPS = """Conv Relu Add Mul MatMul Reshape Transpose Concat BatchNormalization MaxPool
AveragePool GlobalAveragePool Gemm Softmax Sigmoid Tanh Sub Div Unsqueeze Squeeze Gather Shape
Slice Constant Cast ReduceMean Pow Sqrt Erf LayerNormalization Flatten Dropout Clip LeakyRelu
Pad Resize ConvTranspose Split Expand Where Equal Less Greater Not ConstantOfShape Range Exp Log
Neg Abs Min Max ReduceSum ReduceMax ArgMax TopK Tile Identity LRN PRelu InstanceNormalization
Sum Gelu Einsum HardSigmoid HardSwish ScatterND CumSum LSTM Softplus""".split()
assert len(TOP_OPS) == 70 and len(set(TOP_OPS)) == 70

_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")


def primary_ops(cases: list[Any]) -> dict[str, str]:
    """Each case's op: the single op type of its model, and for an `_expanded` case the op
    of the case it expands (every non-expanded node case has one op type)."""
    own = {c.name: c.model.graph.node[-1].op_type for c in cases if not _EXPANDED.search(c.name)}
    return {c.name: own.get(_EXPANDED.sub("", c.name), c.model.graph.node[-1].op_type)
            for c in cases}


def _feeds(case: Any, inputs: list[Any]) -> dict[str, np.ndarray]:
    g = case.model.graph
    init = {t.name for t in g.initializer}
    names = [vi.name for vi in g.input if vi.name not in init]
    return dict(zip(names, (node_suite._array(a) for a in inputs)))


def _first_line(e: BaseException) -> str:
    """The message's first line; for an import refusal, every refused node's line."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].endswith("imported"):
        return "; ".join(lines[1:])
    return lines[0] if lines else type(e).__name__


def _user_call(oc: Outcome, graph: Any, feeds: dict[str, np.ndarray], expected: Any,
               case: Any, backend: str) -> None:
    """One case exactly as a user runs it."""
    try:
        exe = gc.compile(graph, backend=backend)
    except gc.GraphcError as e:
        oc.status, oc.detail = "compile", _first_line(e)
        return
    try:
        res = exe(**feeds)
    except gc.GraphcError as e:
        oc.status, oc.detail = "call", _first_line(e)
        return
    got = list(res) if isinstance(res, tuple) else [res]
    why = node_suite._compare(case, got, list(expected))
    if why and oc.status == "pass":
        oc.status, oc.detail = "mismatch", why


def run_as_user(cases: list[Any] | None = None, backend: str = "llvm") -> list[Outcome]:
    """One Outcome per case (all of them); `ops` holds the case's primary op."""
    cases = node_suite.collect() if cases is None else cases
    prim = primary_ops(cases)
    outcomes, batchable = [], []
    for case in cases:
        oc = Outcome(case.name, (prim[case.name],))
        outcomes.append(oc)
        try:
            graph = gc.onnx.load(case.model)
        except gc.GraphcError as e:
            oc.status, oc.detail = "import", _first_line(e)
            continue
        except Exception as e:  # noqa: BLE001  (a crash is a finding; keep measuring)
            oc.status, oc.detail = "crash", f"{type(e).__name__}: {_first_line(e)}"
            continue
        for inputs, expected in case.data_sets:
            feeds = _feeds(case, inputs)
            if isinstance(graph, Graph) and sorted(v.name for v in graph.inputs) == sorted(feeds):
                batchable.append((oc, (graph, feeds, expected, case)))
            else:
                try:
                    _user_call(oc, graph, feeds, expected, case, backend)
                except Exception as e:  # noqa: BLE001
                    oc.status, oc.detail = "crash", f"{type(e).__name__}: {_first_line(e)}"
    for start in range(0, len(batchable), node_suite.BATCH):
        try:
            node_suite._run_batch(batchable[start:start + node_suite.BATCH], backend)
        except Exception as e:  # noqa: BLE001
            for oc, _ in batchable[start:start + node_suite.BATCH]:
                oc.status, oc.detail = "crash", f"{type(e).__name__}: {_first_line(e)}"
    return outcomes


def _cause(oc: Outcome) -> str:
    d = oc.detail
    m = re.search(r"op type (\w+)( \(domain [^)]*\))? is not supported", d)
    if m:
        return "missing op" if not m.group(2) else "other domain"
    if "element type" in d or "dtype" in d:
        return "element type"
    if "must be a constant" in d:
        return "shape-like input not constant"
    if "opset" in d:
        return "opset"
    return f"{oc.status}: other"


def report(outcomes: list[Outcome]) -> str:
    total = len(outcomes)
    passed = sum(oc.status == "pass" for oc in outcomes)
    wrong = [oc for oc in outcomes if oc.status == "mismatch"]
    per: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for oc in outcomes:
        per[oc.ops[0]]["cases"] += 1
        per[oc.ops[0]]["pass"] += oc.status == "pass"
    top_cases = sum(per[op]["cases"] for op in TOP_OPS)
    top_pass = sum(per[op]["pass"] for op in TOP_OPS)
    lines = [f"as a user calls graphc: {passed}/{total} cases pass ({100 * passed / total:.1f} %), "
             f"{len(wrong)} wrong outputs",
             f"the 70 most-used ops: {top_pass}/{top_cases} cases pass "
             f"({100 * top_pass / max(top_cases, 1):.1f} %)", "",
             "| op | pass/cases |", "|---|---|"]
    lines += [f"| {op} | {per[op]['pass']}/{per[op]['cases']} |" for op in TOP_OPS]
    causes = collections.Counter(_cause(oc) for oc in outcomes if oc.status != "pass")
    lines += ["", "failures by cause:"] + [f"  {n:5d}  {c}" for c, n in causes.most_common()]
    missing = collections.Counter()
    for oc in outcomes:
        for m in re.finditer(r"op type (\w+) is not supported", oc.detail):
            missing[m.group(1)] += 1
    lines += ["", "missing ops (cases): " + ", ".join(f"{o} {n}" for o, n in missing.most_common())]
    lines += ["", "wrong outputs:"] + [f"- {oc.case}: {oc.detail}" for oc in wrong]
    return "\n".join(lines)


def failures(outcomes: list[Outcome]) -> str:
    return "\n".join(f"- {oc.case} [{oc.ops[0]}] ({oc.status}): {oc.detail}"
                     for oc in outcomes if oc.status != "pass")
