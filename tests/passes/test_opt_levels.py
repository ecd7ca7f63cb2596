"""Opt levels mean something: each adds passes to the one below (passes/manager.py
LEVEL_ADDS), -O0 fuses nothing, and every level computes what the reference does (the
fuzzer runs all four; here one model through each)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends, backend_graph_passes
from graphc.compile import optimize_graph
from graphc.passes.manager import standard_passes


@pytest.mark.parametrize("backend", ["llvm", "cuda", "reference"])
def test_each_level_adds_to_the_one_below(backend):
    names = [[p.name for p in standard_passes(l, backend_graph_passes(backend))] for l in range(4)]
    for lower, higher in zip(names, names[1:]):
        assert set(lower) - {"dce"} <= set(higher)
    if backend != "reference":
        assert names[1] != names[2] != names[3]


@pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")
def test_levels_differ_in_what_they_do_and_agree_in_what_they_compute():
    g = gc.Graph("mlp")
    with g:
        x = gc.placeholder("x", (8, 6))
        w = gc.param("w", (6, 4), init=gc.init.normal(0.3, seed=2))
        y = gc.relu(x @ w + 1.0) * 1.0
        g.set_outputs([y, gc.sum(y)])
    feeds = {"x": np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)}
    want = gc.compile(g, backend="reference", opt_level=0)(**feeds)
    groups = []
    for level in range(4):
        work, _, _ = optimize_graph(g, backend="llvm", opt_level=level)
        groups.append(sum(n.group is not None for n in work.nodes))
        got = gc.compile(g, backend="llvm", opt_level=level)(**feeds)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert groups[0] == groups[1] == 0 and groups[2] > 0
