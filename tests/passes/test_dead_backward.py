"""Dead-backward elimination: gradient work that no requested output needs is never run."""
from __future__ import annotations

import numpy as np

import graphc as gc

BATCH = 8


def cnn(frozen_features: bool):
    g = gc.Graph("finetune")
    with g:
        x = gc.placeholder("x", (BATCH, 1, 8, 8))
        t = gc.placeholder("t", (BATCH,), "i32")
        c1 = gc.nn.Conv2d(1, 4, 3, padding=1, name="c1")
        c2 = gc.nn.Conv2d(4, 8, 3, padding=1, name="c2")
        fc = gc.nn.Linear(8, 10, name="fc")
        h = gc.max_pool2d(gc.relu(c1(x)), 2)
        logits = fc(gc.global_avg_pool2d(gc.relu(c2(h))))
        loss = gc.softmax_cross_entropy(logits, t)
        last = [fc.weight, fc.bias]
        every = [c1.weight, c1.bias, c2.weight, c2.bias, *last]
        grads = gc.grad(loss, last if frozen_features else every)
    return g, loss, grads


def feeds():
    rng = np.random.default_rng(0)
    return {"x": rng.random((BATCH, 1, 8, 8), np.float32), "t": rng.integers(0, 10, BATCH).astype(np.int32)}


def test_fine_tuning_the_last_layer_runs_no_convolution_backward():
    g, loss, grads = cnn(frozen_features=True)
    exe = gc.compile(g, [loss, *grads], backend="llvm")
    ops = {n.op for n in exe.graph.nodes}
    assert not ops & {"conv2d_grad_input", "conv2d_grad_weight", "col2im", "max_pool2d_grad"}
    full_g, full_loss, full_grads = cnn(frozen_features=False)
    full = gc.compile(full_g, [full_loss, *full_grads], backend="llvm")
    a, b = exe(**feeds()), full(**feeds())
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    for ga, gb in zip(a[1:], b[-2:]):
        np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-7)


def test_unused_gradients_are_removed_and_the_ledger_counts_the_flops():
    g, loss, grads = cnn(frozen_features=False)   # gradients of every layer are built...
    exe = gc.compile(g, [loss, *grads[-2:]], backend="reference", passes=["dce"])  # ...two are used
    entry = exe.ledger[0]
    assert entry.name == "dce" and entry.details["dead nodes removed"] > 0
    assert entry.flops_after < entry.flops_before
    assert not {n.op for n in exe.graph.nodes} & {"conv2d_grad_input", "conv2d_grad_weight"}
