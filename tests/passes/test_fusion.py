"""Operator fusion: groups in the IR, one kernel per group, unchanged results."""
from __future__ import annotations


import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.compile import prepare
from graphc.passes.fusion import fuse
from graphc.passes.legalize import legalize
from graphc.passes.lower import lower
from tests.examples import load

needs_llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")




def chain_graph(n=(64, 33)):
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", n)
        b = gc.placeholder("b", (n[-1],))
        y = gc.tanh(x * 1.5 + b) * gc.sigmoid(x) + x * x - 1.0
    return g, y


def test_elementwise_chain_becomes_one_kernel():
    g, y = chain_graph()
    work, _ = prepare(g, y)
    assert len(lower(work, fuse_ops=False).kernels) == 8
    prog = lower(work)
    assert len(prog.kernels) == 1
    # fused intermediates never reach memory: only the output is written
    assert prog.kernels[0].writes == ["out0"] and prog.arena_bytes == 0


def test_groups_show_in_the_text_dump_and_round_trip():
    g, y = chain_graph()
    work, _ = prepare(g, y)
    stats = fuse(work)
    assert stats.groups == 1 and stats.nodes_fused == len(work.nodes)
    text = work.to_text()
    assert text.count("group(0)") == len(work.nodes)
    assert gc.parse(text).to_text() == text


def test_row_reduction_absorbs_its_producers():
    g = gc.Graph("sm")
    with g:
        x = gc.placeholder("x", (8, 100))
        s = gc.softmax(x, axis=1)
        mse = ((x - 0.5) * (x - 0.5)).mean(axis=1)
    work, _ = prepare(g, [s, mse])
    legalize(work)
    unfused = len(lower(work, fuse_ops=False).kernels)
    fused = lower(work)
    assert len(fused.kernels) < unfused
    # the squared error and its mean are one kernel that writes only the mean
    mean_kernels = [k for k in fused.kernels if "mean" in k.name]
    assert len(mean_kernels) == 1 and mean_kernels[0].writes == ["out1"]


def test_no_fusion_across_an_outside_reader_scheduled_in_between():
    """b = exp(a); c = reduce(b) reads b outside the group before d = b * 2 joins: d may
    not join exp's group, or c would read b before the fused kernel computed it."""
    g = gc.Graph("order")
    with g:
        a = gc.placeholder("a", (4, 5))
        b = gc.exp(a)
        c = gc.sum(b, axis=0)       # a column reduction: never fused
        d = b * 2.0 + gc.sum(c)     # reads b (group) and c (scheduled after b)
    work, _ = prepare(g, [d])
    fuse(work)
    by_op = {n.op: n for n in work.nodes}
    assert by_op["exp"].group is None or by_op["exp"].group != by_op["mul"].group


@needs_llvm
def test_fused_and_unfused_programs_agree_with_the_reference():
    g, y = chain_graph((1000, 17))
    x = np.random.default_rng(0).standard_normal((1000, 17)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal(17).astype(np.float32)
    want = gc.compile(g, y)(x=x, b=b)
    for level in (0, 2):
        got = gc.compile(g, y, backend="llvm", opt_level=level)(x=x, b=b)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@needs_llvm
@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_train_step_kernel_counts_and_results(which):
    if which == "cnn":
        ex = load("examples/digits_cnn.py", "digits_cnn")
        g = ex.build_train_step()
        images, labels = gc.load_digits()
        feeds = {"x": images[:ex.BATCH, None], "t": labels[:ex.BATCH]}
        counts = (86, 40)
    else:
        mb = load("benchmarks/mlp_step.py", "mlp_step")
        g = mb.build()
        rng = np.random.default_rng(0)
        feeds = {"x": rng.standard_normal((mb.B, mb.D)).astype(np.float32),
                 "t": rng.integers(0, mb.C, mb.B).astype(np.int32)}
        counts = (52, 27)
    work, _ = prepare(g)
    assert (len(lower(work, fuse_ops=False).kernels), len(lower(work).kernels)) == counts
    o0 = gc.compile(g, backend="llvm", opt_level=0)
    o2 = gc.compile(g, backend="llvm", opt_level=2)
    for _ in range(2):
        l0, l2 = o0(**feeds)[0], o2(**feeds)[0]
        np.testing.assert_allclose(l2, l0, rtol=1e-5)
    for k in o0.params:
        np.testing.assert_allclose(o2.params[k], o0.params[k], rtol=1e-4, atol=1e-6)
