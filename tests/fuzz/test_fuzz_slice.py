"""A budgeted slice of the differential fuzzer, every run (README: Fuzzing).

The slice starts at a fixed seed, so a CI run is reproducible and a failure is a change in
graphc, not a luckier draw; finding new bugs is the campaigns' job (`python -m graphc.fuzz`).
GRAPHC_FUZZ_SECONDS sets the budget (default 100 s); GRAPHC_FUZZ_SEED another first seed, or
`fresh` for one drawn at random. Any mismatch, crash or refusal fails the run and prints the
minimised reproduction."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

from graphc.backends import available_backends
from graphc.fuzz.cases import make_case
from graphc.fuzz.check import check_case
from graphc.fuzz.driver import fuzz
from graphc.ir.widen import widened
from graphc.ir.tolerance import compare, rounding_budget
from graphc.ir.types import TensorType

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")


SLICE_SEED = 9_000_000  # seeds from here on pass (checked when the slice last moved)


def test_fuzz_slice():
    seconds = float(os.environ.get("GRAPHC_FUZZ_SECONDS", "100"))
    seed = os.environ.get("GRAPHC_FUZZ_SEED", str(SLICE_SEED))
    log = io.StringIO()
    report = fuzz(seconds=seconds, seed=None if seed == "fresh" else int(seed), stream=log,
                  minimize_seconds=30)
    print(report.summary())
    assert report.cases > 0 and sum(report.path_runs.values()) > report.cases
    assert not report.failures, log.getvalue()[-20000:]


def test_every_kind_is_drawn():
    """The generator reaches gradients and train steps, not only inference."""
    cases = [c for c in map(make_case, range(40)) if c is not None]
    assert {c.kind for c in cases} == {"inference", "grad", "train"}


def test_oracle_rejects_a_wrong_answer_and_accepts_rounding():
    t = TensorType((64,), "f32")
    truth = np.random.default_rng(0).standard_normal(64)
    ref = truth.astype(np.float32)
    assert compare(ref, truth, ref, t, 4.0) is None
    nudged = (ref * (1 + 4e-7)).astype(np.float32)  # a few ulp
    assert compare(nudged, truth, ref, t, 4.0) is None
    wrong = ref.copy()
    wrong[5] += 1e-3
    assert "element (5,)" in compare(wrong, truth, ref, t, 4.0)
    assert compare(np.full(64, np.nan, np.float32), truth, ref, t, 4.0) is not None


def test_widened_graph_computes_the_same_in_f64():
    """The f64 truth agrees with the f32 reference within the derived tolerance, and
    holds no f32 value (so it is not the same run twice)."""
    from graphc.ir.validate import evaluate_all, random_feeds
    from graphc.ir.widen import wide_feeds
    checked = 0
    for c in map(make_case, range(60)):
        if c is None or c.kind != "grad":
            continue
        wide = widened(c.graph)
        assert wide is not None and all(v.dtype.name != "f32" for v in wide.all_values())
        feeds = random_feeds(c.graph, 1)
        narrow_env, wide_env = evaluate_all(c.graph, feeds), evaluate_all(wide, wide_feeds(feeds, wide))
        budget = rounding_budget(c.graph)
        for v, w in zip(c.graph.outputs, wide.outputs):
            ref = narrow_env[v]
            assert compare(ref, wide_env[w], ref, v.type, budget.get(v, 0.0)) is None
        checked += 1
    assert checked >= 5


def test_check_case_reports_a_planted_wrong_answer(monkeypatch):
    """A path that returns a wrong value is reported as a mismatch, not let through."""
    from graphc.fuzz import paths

    def wrong(case):
        steps = paths.run_steps(__import__("graphc").compile(case.graph, backend="reference",
                                                             params=case.params), case)
        outs, params = steps[0]
        outs = [o + np.ones_like(o) if o.dtype.kind == "f" else o for o in outs]
        return [(outs, params)] + steps[1:]
    monkeypatch.setitem(paths.PATHS, "planted", paths.Path("planted", wrong))
    case = next(c for c in map(make_case, range(50))
                if c is not None and any(o.dtype.is_float for o in c.graph.outputs))
    out = check_case(case, ["planted"])
    assert [f.what for f in out.failures] == ["mismatch"], out
