"""GRAPHC_VERIFY=2: every graph pass and the lowering are checked by running the program
before and after on random inputs (ir/validate.py); a wrong rewrite names itself."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir.validate import TranslationValidationError, check_rewrite
from graphc.passes.manager import Pass, Pipeline
from tests.ir.random_graphs import build_random_graph


def _mlp():
    g = gc.Graph("mlp")
    with g:
        x = gc.placeholder("x", (4, 3))
        w = gc.param("w", (3, 5), init=gc.init.normal(0.5, seed=1))
        y = gc.tanh(x @ w) * 2.0
        g.set_outputs([gc.sum(y * y)])
    return g


def _mul_becomes_add(g):
    for n in g.nodes:
        if n.op == "mul":
            n.op = "add"
            return {"planted": 1}
    return {}


def test_a_wrong_pass_is_named(monkeypatch):
    monkeypatch.setenv("GRAPHC_VERIFY", "2")
    g = _mlp()
    bad = Pass("bad_algebra", "a planted bug: mul -> add", _mul_becomes_add)
    with pytest.raises(TranslationValidationError, match="pass 'bad_algebra' changed"):
        Pipeline(["simplify", bad]).run(g)


def test_level_one_does_not_run_it(monkeypatch):
    monkeypatch.setenv("GRAPHC_VERIFY", "1")
    g = _mlp()
    Pipeline([Pass("bad_algebra", "", _mul_becomes_add)]).run(g)  # structural checks only


@pytest.mark.parametrize("seed", range(40))
def test_every_standard_pass_keeps_meaning_on_random_graphs(seed, monkeypatch):
    monkeypatch.setenv("GRAPHC_VERIFY", "2")
    from graphc.compile import optimize_graph
    g = build_random_graph(seed, max_nodes=10, max_rank=4)
    for level in (0, 1, 2, 3):
        optimize_graph(g, backend="llvm", opt_level=level)  # raises on any wrong pass


def test_check_rewrite_accepts_rounding_and_rejects_a_sign():
    g = _mlp()
    same = g.copy()
    check_rewrite(g, same, "copy")
    flipped = g.copy()
    out = flipped.outputs[0]
    flipped.outputs = [flipped.add_node("neg", [out]).outputs[0]]
    with pytest.raises(TranslationValidationError, match="output 0"):
        check_rewrite(g, flipped, "negate")
