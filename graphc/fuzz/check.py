"""Run one case through the oracle and the candidate paths; say what disagreed."""
from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from ..ir.errors import GraphcError
from ..ir.tolerance import compare, magnitudes, rounding_budget, rounding_noise_runs, unstable_elements
from ..ir.validate import TranslationValidationError, evaluate_all
from ..ir.widen import wide_feeds, widened
from .cases import Case
from .paths import PATHS, Steps, run_steps


@dataclass
class Failure:
    seed: int
    kind: str
    path: str
    what: str  # "mismatch", "crash" (an exception that is not a GraphcError) or "refused"
    message: str

    def key(self) -> tuple[str, str]:
        return (self.path, self.what)

    def __str__(self) -> str:
        return f"seed {self.seed} ({self.kind}) {self.path}: {self.what}: {self.message}"


@dataclass
class Outcome:
    failures: list[Failure] = field(default_factory=list)
    skipped: str = ""  # why the case tested nothing (the reference refused the graph)
    unstable: int = 0  # values whose truth moves under rounding noise (not compared)
    paths_run: int = 0


class Oracle:
    """The truth (f64 reference) and the float32 reference's run of one case."""

    def __init__(self, case: Case) -> None:
        from ..compile import compile as gc_compile
        self.case = case
        self.ref = run_steps(gc_compile(case.graph, backend="reference", opt_level=0,
                                        params=case.params), case)
        self.wide = widened(case.graph)
        self.truth: Steps | None = None
        if self.wide is not None:
            self.truth = self._wide_run(case.inputs, case.params)
        self.scale = self._scales()
        budget = rounding_budget(case.graph)
        self.out_budget = [budget.get(v, 0.0) for v in case.graph.outputs]
        self.param_budget = {k: budget.get(v, 0.0) for k, v in case.graph.updates.items()}
        self._moved: list[Steps] | None = None

    def _scales(self) -> dict:
        """magnitudes() of the case's values, from the truth's first step."""
        g = self.wide or self.case.graph
        mags = magnitudes(g, evaluate_all(g, wide_feeds({**self.case.inputs, **self.case.params}, g)))
        return {v: mags.get(w, 0.0) for v, w in zip(self.case.graph.all_values(), g.all_values())}

    def _wide_run(self, inputs, params) -> Steps:
        from ..compile import compile as gc_compile
        exe = gc_compile(self.wide, backend="reference", opt_level=0,
                         params=wide_feeds(params, self.wide))
        return run_steps(exe, self.case, wide_feeds(inputs, self.wide))

    def moved(self) -> list[Steps]:
        """The truth re-run with rounding noise on every computed value, a few draws
        (ir/tolerance.py: rounding_noise_runs; computed once, when a comparison fails)."""
        if self._moved is None:
            self._moved = list(rounding_noise_runs(
                self.case.graph, {**self.case.inputs, **self.case.params}, self.case.seed,
                steps=self.case.steps))
        return self._moved

    def judge(self, got: Steps) -> tuple[str | None, int]:
        """(the first disagreement or None, how many unstable values were let pass)."""
        g = self.case.graph
        unstable = 0
        for step, (outs, params) in enumerate(got):
            ref_outs, ref_params = self.ref[step]
            truth_outs, truth_params = self.truth[step] if self.truth else (None, None)
            items = [(f"output {i} ({g.outputs[i].type})", outs[i] if i < len(outs) else None,
                      truth_outs[i] if truth_outs else None, ref_outs[i], g.outputs[i].type,
                      self.out_budget[i], ("out", i), self.scale.get(g.outputs[i], 0.0))
                     for i in range(len(ref_outs))]
            if params:
                items += [(f"parameter {k!r} after the update", params.get(k),
                           truth_params[k] if truth_params else None, ref_params[k],
                           g.param(k).type, self.param_budget.get(k, 0.0), ("param", k),
                           self.scale.get(g.updates[k], 0.0))
                          for k in self.case.graph.updates]
            if len(outs) != len(ref_outs):
                return f"step {step}: {len(outs)} outputs, expected {len(ref_outs)}", unstable
            for label, value, truth, ref, t, budget, where, scale in items:
                if value is None:
                    return f"step {step}: {label} missing", unstable
                why = compare(value, truth, ref, t, budget, scale)
                if why is None:
                    continue
                ms = [run[step][0][where[1]] if where[0] == "out" else run[step][1][where[1]]
                      for run in self.moved()]
                skip = unstable_elements(ref if truth is None else truth, ms, t, budget, ref, scale)
                if skip.any() and compare(value, truth, ref, t, budget, scale, skip) is None:
                    unstable += 1  # only elements rounding can flip disagreed
                    continue
                return f"step {step}: {label}: {why}", unstable
        return None, unstable


def check_case(case: Case, paths: list[str]) -> Outcome:
    out = Outcome()
    try:
        oracle = Oracle(case)
    except GraphcError as e:  # a graph the reference refuses (an input it cannot run)
        out.skipped = f"reference refused: {type(e).__name__}: {str(e).splitlines()[0]}"
        return out
    except Exception:  # noqa: BLE001 - the reference itself crashed: a bug
        out.failures.append(Failure(case.seed, case.kind, "reference", "crash",
                                    traceback.format_exc(limit=6)))
        return out
    for name in paths:
        path = PATHS[name]
        if case.kind not in path.kinds:
            continue
        out.paths_run += 1
        try:
            got = path.run(case)
        except GraphcError as e:  # a translation-validation error is a wrong answer
            what = "mismatch" if isinstance(e, TranslationValidationError) else "refused"
            out.failures.append(Failure(case.seed, case.kind, name, what, f"{type(e).__name__}: {e}"))
            continue
        except Exception:  # noqa: BLE001 - exactly what the fuzzer is looking for
            out.failures.append(Failure(case.seed, case.kind, name, "crash",
                                        traceback.format_exc(limit=8)))
            continue
        why, unstable = oracle.judge(got)
        out.unstable += unstable
        if why is not None:
            out.failures.append(Failure(case.seed, case.kind, name, "mismatch", why))
    return out

