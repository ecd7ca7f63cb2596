"""Batch split (passes/batch_split.py, backends/llvm/split.py): an inference graph whose
nodes are all batch-wise runs as one copy per thread over slices of its batch. Checked
against the reference interpreter on the whole batch, and the refusals (reductions over
the batch, reshapes that move it, parameters, batches the threads do not divide)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.compile import optimize_graph
from graphc.errors import GraphcError
from graphc.passes.batch_split import split_batch

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvmlite missing")


def _cnn(n: int) -> gc.Graph:
    """conv -> bias -> relu -> max pool -> conv (2x2 image: the dense-map path) -> + residual
    -> global mean -> flatten -> linear: every node batch-wise."""
    rng = np.random.default_rng(0)
    g = gc.Graph("cnn")
    with g:
        x = gc.placeholder("x", (n, 3, 8, 8), "f32")
        w1 = gc.constant(rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
        b1 = gc.constant(rng.standard_normal(8).astype(np.float32))
        h = gc.max_pool2d(gc.relu(gc.conv2d(x, w1, b1, padding=1)), 2, stride=2)
        h = gc.max_pool2d(h, 2, stride=2)
        w2 = gc.constant(rng.standard_normal((8, 8, 3, 3)).astype(np.float32))
        h = gc.relu(gc.conv2d(h, w2, padding=1) + h)
        f = gc.reshape(gc.mean(h, axis=(2, 3), keepdims=True), (n, 8))
        wl = gc.constant(rng.standard_normal((8, 5)).astype(np.float32))
        g.set_outputs([f @ wl, h])
    return g


def _factory(g, **kw):
    from graphc.pipeline import compile_graph
    work, single, _ = optimize_graph(g, backend="llvm")
    return compile_graph(work, "llvm", single_output=single, **kw)


@pytest.mark.parametrize("n,threads,parts", [(4, 2, 2), (6, 3, 3), (6, 4, 3), (2, 2, 2)])
def test_split_executable_equals_the_reference(n, threads, parts):
    from graphc.backends.llvm.codegen import CodegenOptions
    from graphc.backends.llvm.split import BatchSplitExecutable
    g = _cnn(n)
    exe = _factory(g, num_threads=threads, options=CodegenOptions.from_env(max_threads=threads))
    assert isinstance(exe, BatchSplitExecutable) and exe.parts == parts
    assert exe.part.graph.inputs[0].shape[0] == n // parts
    x = np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32)
    want = gc.compile(g, backend="reference")(x)
    got = exe(x)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    again = exe(x=x * 2)  # a second call reuses the contexts
    np.testing.assert_allclose(again[0], gc.compile(g, backend="reference")(x * 2)[0], rtol=1e-5, atol=1e-5)


def test_split_executable_serves_concurrent_callers():
    g = _cnn(4)
    exe = _factory(g, num_threads=2)
    ref = gc.compile(g, backend="reference")
    xs = [np.random.default_rng(s).standard_normal((4, 3, 8, 8)).astype(np.float32) for s in range(4)]
    want = [ref(x)[0] for x in xs]
    errors = []

    def worker(k):
        try:
            for _ in range(20):
                np.testing.assert_allclose(exe(xs[k])[0], want[k], rtol=1e-5, atol=1e-5)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]


def test_split_is_not_used_where_it_would_change_the_answer_or_cannot_apply():
    from graphc.backends.llvm.runtime import LLVMExecutable
    # one thread, or batch_split=False: the plain executable
    assert isinstance(_factory(_cnn(4), num_threads=1), LLVMExecutable)
    assert isinstance(_factory(_cnn(4), num_threads=2, batch_split=False), LLVMExecutable)
    assert isinstance(_factory(_cnn(3), num_threads=2), LLVMExecutable)  # 3 rows, 2 threads
    # no more parts than the program has GEMM workspace regions (threads) for
    from graphc.backends.llvm.codegen import CodegenOptions
    capped = _factory(_cnn(6), num_threads=3, options=CodegenOptions.from_env(max_threads=2))
    assert capped.parts == 2  # 3 threads asked for, workspace for 2: 6 rows in 2 parts



def _reason(build) -> str:
    g = gc.Graph("g")
    with g:
        g.set_outputs(build())
    work, _, _ = optimize_graph(g, backend="llvm")
    sub, why = split_batch(work, 2)
    assert sub is None
    return why


def test_split_refuses_nodes_that_mix_batch_entries():
    x = lambda: gc.placeholder("x", (4, 6), "f32")  # noqa: E731

    def centred():
        v = x()
        return [v - gc.sum(v, axis=0, keepdims=True)]
    assert "sum" in _reason(centred)  # batch statistics
    assert "reshape" in _reason(lambda: [gc.reshape(gc.reshape(x(), (2, 12)) * 2.0, (4, 6))])  # pairs rows
    square = lambda: gc.placeholder("x", (4, 4), "f32")  # noqa: E731
    assert "transpose" in _reason(lambda: [gc.transpose(square(), (1, 0))])  # swaps batch and features
    assert "batch" in _reason(lambda: [gc.placeholder("a", (4, 2), "f32"), gc.placeholder("b", (3, 2), "f32")])
    g = gc.Graph("p")
    with g:
        w = gc.nn.Linear(6, 3, name="l")
        g.set_outputs([w(gc.placeholder("x", (4, 6), "f32"))])
    work, _, _ = optimize_graph(g, backend="llvm")
    assert "parameters" in split_batch(work, 2)[1]


def test_split_graph_on_slices_equals_the_whole_batch():
    """The part's graph on each slice, through the reference interpreter, gives the whole
    batch's rows: the rules kept every node batch-wise."""
    g = _cnn(4)
    work, single, _ = optimize_graph(g, backend="reference")
    sub, why = split_batch(work, 2)
    assert sub is not None, why
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32)
    whole = gc.compile(g, backend="reference")(x)
    part = gc.compile(sub, backend="reference")
    halves = [part(x[:2]), part(x[2:])]
    for k, w in enumerate(whole):
        np.testing.assert_allclose(np.concatenate([np.array(h[k]) for h in halves]), w, rtol=1e-6, atol=1e-6)


def test_split_executable_keeps_its_thread_count():
    exe = _factory(_cnn(4), num_threads=2)
    exe.num_threads = 2
    with pytest.raises(GraphcError, match="parts"):
        exe.num_threads = 1
    assert "batch split in 2 parts" in exe.report()


def test_export_of_a_split_executable_lowers_the_whole_graph(tmp_path):
    """gc.export of a batch-split executable builds the full-batch program (the one it
    holds is one part's), and the artifact computes what the executable does."""
    g = _cnn(2)
    exe = _factory(g, num_threads=2)
    assert exe.program.inputs and exe.part.graph.inputs[0].shape[0] == 1
    gc.export(exe, None, str(tmp_path / "split"))
    loaded = gc.load(str(tmp_path / "split"))
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for a, b in zip(loaded(x), exe(x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_reduction_rule_keeps_only_reductions_off_the_batch_axis():
    """mean over axis 1 is batch-wise, over axis 0 it is not; layer_norm (a reduction with
    scale and shift operands) gets no default rule rather than a wrong one."""
    from graphc.ir.batch import rule_for
    from graphc.ir.registry import get_op
    g = gc.Graph("r")
    with g:
        x = gc.placeholder("x", (4, 6), "f32")
        ln = gc.layer_norm(x, gc.constant(np.ones(6, np.float32)), gc.constant(np.zeros(6, np.float32)), axis=-1)
        g.set_outputs([gc.mean(x, axis=1), gc.mean(x, axis=0), ln])
    nodes = {(n.op, n.attrs.get("axes")): n for n in g.nodes}
    rule = rule_for(get_op("mean"))
    assert rule(nodes[("mean", (1,))], [True], 2) == nodes[("mean", (1,))].attrs
    assert rule(nodes[("mean", (0,))], [True], 2) is None
    (ln_node,) = [n for n in g.nodes if n.op == "layer_norm"]
    assert rule_for(get_op("layer_norm"))(ln_node, [True, False, False], 2) is None
