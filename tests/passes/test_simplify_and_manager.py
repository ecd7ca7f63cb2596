"""Simplification rules, the pass manager (verification, dumps, ledger) and -O levels."""
from __future__ import annotations

import io

import numpy as np
import pytest

import graphc as gc
from graphc.backends.reference import evaluate
from graphc.compile import prepare
from graphc.passes.manager import PASSES, Pass, Pipeline, standard_passes
from graphc.passes.simplify import simplify

RNG = np.random.default_rng(5)


def check_same_results(build, shapes):
    """Simplifying the graph built by `build` keeps every output's value."""
    g = gc.Graph("s")
    with g:
        xs = [gc.placeholder(f"x{i}", s, "f64") for i, s in enumerate(shapes)]
        outs = build(*xs)
    work, _ = prepare(g, list(outs))
    feeds = {v: RNG.standard_normal(v.shape) for v in work.inputs}
    before = evaluate(work, feeds)
    stats = simplify(work)
    work.verify()
    after = evaluate(work, {v: feeds[v] for v in feeds if v in work.inputs})
    for a, b in zip(before.values(), after.values()):
        np.testing.assert_array_equal(a, b)
    return work, stats


def test_identities_are_removed():
    work, stats = check_same_results(
        lambda x: [((x * 1.0) / 1.0 - 0.0).T.T.reshape(6, 2).reshape(3, 4).astype("f64")], [(3, 4)])
    assert [n.op for n in work.nodes] == [] and stats.algebra >= 5


def test_plus_zero_is_kept_because_it_changes_negative_zero():
    work, _ = check_same_results(lambda x: [x + 0.0], [(3,)])
    assert [n.op for n in work.nodes] == ["add"]


def test_chains_collapse():
    work, _ = check_same_results(lambda x: [gc.transpose(gc.transpose(x, (1, 2, 0)), (2, 0, 1)) * 2.0,
                                            gc.broadcast_to(gc.broadcast_to(x[0], (3, 4, 5)), (2, 3, 4, 5))],
                                 [(2, 4, 5)])
    ops = [n.op for n in work.nodes]
    assert ops.count("transpose") == 0 and ops.count("broadcast_to") == 1


def test_cse_and_constant_folding():
    def build(x):
        c = gc.constant(np.arange(4.0)) * 2.0 + 1.0     # folds to one constant
        return [gc.exp(x) * c + gc.exp(x) * c]           # exp(x) * c computed once
    work, stats = check_same_results(build, [(4,)])
    assert [n.op for n in work.nodes].count("exp") == 1
    assert [n.op for n in work.nodes].count("mul") == 1
    assert stats.folded >= 2 and stats.cse >= 2


def test_folding_is_bounded_in_size():
    def build(x):
        big = gc.broadcast_to(gc.constant(np.float64(2.0)), (100, 100))  # 10k elements: not folded
        return [x + big]
    work, stats = check_same_results(build, [(100, 100)])
    assert "broadcast_to" in [n.op for n in work.nodes]


def test_pipeline_ledger_dumps_and_print_after(tmp_path):
    g = gc.Graph("p")
    with g:
        x = gc.placeholder("x", (8, 16))
        y = gc.softmax(gc.tanh(x * 1.0) * 2.0, axis=1)
    work, _ = prepare(g, y)
    out = io.StringIO()
    ledger = Pipeline(["simplify", "legalize", "fusion"], verify=True, print_after=["fusion"],
                      dump_dir=str(tmp_path), stream=out).run(work)
    assert [e.name for e in ledger] == ["simplify", "legalize", "fusion"]
    assert ledger[0].details["algebraic identities"] == 1 and ledger[0].nodes_after == ledger[0].nodes_before - 1
    assert ledger[1].nodes_after > ledger[1].nodes_before  # softmax decomposed
    assert ledger[2].details["groups"] >= 1
    printed = out.getvalue()
    assert printed.startswith("// IR after fusion") and "group(" in printed
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["00-input.gcir", "01-simplify.gcir", "02-legalize.gcir", "03-fusion.gcir",
                     "index.txt"]
    text = (tmp_path / "03-fusion.gcir").read_text()
    assert gc.parse(text).to_text() == text
    assert "fusion" in str(ledger)


def test_verifier_after_each_pass_names_the_broken_pass():
    def corrupt(g):
        g.nodes.reverse()  # uses before definitions
    g = gc.Graph("p")
    with g:
        x = gc.placeholder("x", (3,))
        y = gc.exp(gc.exp(x))
    work, _ = prepare(g, y)
    with pytest.raises(gc.GraphcError, match="invalid after pass 'oops'"):
        Pipeline([Pass("oops", "breaks the graph", corrupt)], verify=True).run(work)


def test_opt_levels_and_custom_passes():
    assert [p.name for p in standard_passes(0, ("legalize", "fusion"))] == ["dce", "legalize"]
    assert [p.name for p in standard_passes(2, ("legalize", "fusion"))] == ["simplify", "legalize", "fusion"]
    with pytest.raises(gc.GraphcError, match="opt_level"):
        standard_passes(7)
    with pytest.raises(gc.GraphcError, match="unknown pass 'nope'"):
        Pipeline(["nope"])
    assert set(PASSES) >= {"dce", "simplify", "legalize", "fusion"}


def test_compile_report_lists_passes():
    g = gc.Graph("r")
    with g:
        x = gc.placeholder("x", (4,))
        y = gc.exp(x) * 1.0
    exe = gc.compile(g, y, passes=["simplify"], backend="reference")
    report = exe.report()
    assert "simplify" in report and "algebraic identities 1" in report
    np.testing.assert_allclose(exe(np.ones(4, np.float32)), np.exp(np.ones(4)), rtol=1e-6)
