"""Whole models: MLP gradients against a hand derivation, CNN gradients against finite
differences, optimiser steps against their published update rules, batch-norm state, and
training on the bundled digits."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from tests.examples import digits_cnn

RNG = np.random.default_rng(2024)


def test_mlp_gradients_equal_hand_derivation():
    n, d, h, c = 8, 5, 6, 3
    g = gc.Graph("mlp")
    with g:
        x = gc.placeholder("x", (n, d), "f64")
        t = gc.placeholder("t", (n,), "i32")
        w1 = gc.param("w1", (d, h), "f64", init=gc.init.normal(0.5, seed=1))
        b1 = gc.param("b1", (h,), "f64", init=gc.init.normal(0.1, seed=2))
        w2 = gc.param("w2", (h, c), "f64", init=gc.init.normal(0.5, seed=3))
        b2 = gc.param("b2", (c,), "f64", init=gc.init.zeros())
        loss = gc.softmax_cross_entropy(gc.relu(x @ w1 + b1) @ w2 + b2, t)
        grads = gc.grad(loss, [w1, b1, w2, b2])
    exe = gc.compile(g, [loss, *grads], backend="reference")
    xv, tv = RNG.standard_normal((n, d)), RNG.integers(0, c, n).astype(np.int32)
    out = exe(x=xv, t=tv)

    # Hand derivation (Bishop, PRML 5.3): dL/dz2 = (softmax(z2) - onehot) / n, then chain rule.
    P = {k: exe.params[k] for k in ("w1", "b1", "w2", "b2")}
    z1 = xv @ P["w1"] + P["b1"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ P["w2"] + P["b2"]
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(c)[tv]
    loss_ref = -np.mean(np.log(p[np.arange(n), tv]))
    dz2 = (p - onehot) / n
    dw2, db2 = a1.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ P["w2"].T) * (z1 > 0)
    dw1, db1 = xv.T @ dz1, dz1.sum(0)
    for got, want in zip(out, [loss_ref, dw1, db1, dw2, db2]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_cnn_gradients_match_finite_differences():
    n = 3
    g = gc.Graph("cnn")
    with g:
        x = gc.placeholder("x", (n, 1, 8, 8), "f64")
        t = gc.placeholder("t", (n,), "i32")
        conv1 = gc.nn.Conv2d(1, 3, 3, padding=1, name="c1", dtype="f64")
        conv2 = gc.nn.Conv2d(3, 4, 3, stride=2, padding=(1, 0), name="c2", dtype="f64")
        fc = gc.nn.Linear(4, 5, name="fc", dtype="f64")
        h = gc.max_pool2d(gc.relu(conv1(x)), 2)
        logits = fc(gc.global_avg_pool2d(gc.relu(conv2(h))))
        loss = gc.softmax_cross_entropy(logits, t)
        names = [p.name for p in g.params]
        grads = gc.grad(loss, [gc.Tensor(p, g) for p in g.params])
    exe = gc.compile(g, [loss, *grads], backend="reference")
    for name in names:  # non-zero biases so every path carries signal
        exe.params[name] = exe.params[name] + RNG.normal(0, 0.1, exe.params[name].shape)
    xv = RNG.random((n, 1, 8, 8))
    tv = np.array([0, 3, 4], np.int32)
    out = exe(x=xv, t=tv)
    analytic = dict(zip(names, out[1:]))
    eps = 1e-6
    worst = 0.0
    for name in names:
        base = exe.params[name].copy()
        flat_idx = RNG.choice(base.size, size=min(base.size, 6), replace=False)
        for k in flat_idx:
            bumped = base.copy()
            bumped.flat[k] += eps
            exe.params[name] = bumped
            hi = exe(x=xv, t=tv)[0]
            bumped.flat[k] -= 2 * eps
            exe.params[name] = bumped
            lo = exe(x=xv, t=tv)[0]
            exe.params[name] = base
            num = (hi - lo) / (2 * eps)
            ana = analytic[name].flat[k]
            assert abs(ana - num) <= 1e-7 + 1e-5 * abs(num), (name, k, ana, num)
            worst = max(worst, abs(ana - num) / (abs(num) + 1e-7))
    assert worst < 1e-4


def test_sgd_momentum_matches_pytorch_update_rule():
    lr, mom, wd = 0.1, 0.9, 0.01
    g = gc.Graph("q")
    with g:
        a = gc.placeholder("a", (4,), "f64")
        w = gc.param("w", (4,), "f64", init=gc.init.fill(1.0))
        loss = ((w - a) * (w - a)).sum()
        upd = gc.optim.SGD(lr, momentum=mom, weight_decay=wd, nesterov=True).updates(loss)
    step = gc.compile(g, loss, updates=upd, backend="reference")
    av = np.array([0.5, -1.0, 2.0, 0.0])
    wv, v = np.ones(4), np.zeros(4)
    for _ in range(4):
        step(a=av)
        gr = 2 * (wv - av) + wd * wv
        v = mom * v + gr
        wv = wv - lr * (gr + mom * v)
        np.testing.assert_allclose(step.params["w"], wv, rtol=1e-12)


def test_adam_matches_published_update_rule():
    lr, (b1, b2), eps, wd = 0.01, (0.9, 0.999), 1e-8, 0.1
    g = gc.Graph("q")
    with g:
        a = gc.placeholder("a", (3,), "f64")
        w = gc.param("w", (3,), "f64", init=gc.init.fill(1.0))
        loss = (gc.exp(w) - a * w).sum()
        upd = gc.optim.Adam(lr, weight_decay=wd).updates(loss)
    step = gc.compile(g, loss, updates=upd, backend="reference")
    av = np.array([0.5, 2.0, 3.0])
    wv, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    for t in range(1, 6):
        step(a=av)
        gr = np.exp(wv) - av
        m = b1 * m + (1 - b1) * gr
        v = b2 * v + (1 - b2) * gr * gr
        mh, vh = m / (1 - b1 ** t), v / (1 - b2 ** t)
        wv = wv - lr * mh / (np.sqrt(vh) + eps) - lr * wd * wv  # AdamW (Loshchilov & Hutter)
        np.testing.assert_allclose(step.params["w"], wv, rtol=1e-6)


def test_batch_norm_layer_training_and_running_statistics():
    n, c = 6, 3
    g = gc.Graph("bn")
    with g:
        x = gc.placeholder("x", (n, c, 2, 2), "f64")
        bn = gc.nn.BatchNorm(c, momentum=0.2, dtype="f64")
        y = bn(x, training=True)
        loss = (y * y * y).mean()
        y_eval = bn(x, training=False)
        upd = gc.optim.SGD(0.0).updates(loss)  # lr 0: parameters stay, running stats move
    step = gc.compile(g, y, updates=upd, backend="reference")
    ev = gc.compile(g, y_eval, backend="reference")
    xv = RNG.standard_normal((n, c, 2, 2)) * 3 + 1
    out = step(x=xv)
    mu = xv.mean(axis=(0, 2, 3))
    var = xv.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out, (xv - mu[None, :, None, None]) /
                               np.sqrt(var[None, :, None, None] + 1e-5), rtol=1e-10)
    m = n * 4
    np.testing.assert_allclose(step.params[bn.running_mean.name], 0.2 * mu, rtol=1e-12)
    np.testing.assert_allclose(step.params[bn.running_var.name], 0.8 + 0.2 * var * m / (m - 1),
                               rtol=1e-12)
    for name in ev.params:
        ev.params[name] = step.params[name]
    rm, rv = step.params[bn.running_mean.name], step.params[bn.running_var.name]
    np.testing.assert_allclose(ev(x=xv), (xv - rm[None, :, None, None]) /
                               np.sqrt(rv[None, :, None, None] + 1e-5), rtol=1e-10)


@pytest.mark.slow
def test_training_the_example_cnn_on_digits_lowers_loss_and_learns():
    ex = digits_cnn()

    images, labels = gc.load_digits()
    assert images.shape == (1797, 8, 8) and labels.shape == (1797,)
    order = np.random.default_rng(0).permutation(len(labels))
    images, labels = images[order][:, None], labels[order]
    g = ex.build_train_step()
    step = gc.compile(g, backend="reference")
    evaluate = gc.compile(g, g.pred, backend="reference")
    x_test, t_test = images[ex.N_TRAIN:], labels[ex.N_TRAIN:]

    def accuracy():
        for name in evaluate.params:
            evaluate.params[name] = step.params[name]
        return float(np.mean(evaluate(x_eval=x_test) == t_test))

    acc0 = accuracy()
    epoch_losses = []
    rng = np.random.default_rng(1)
    for _ in range(5):
        perm = rng.permutation(ex.N_TRAIN)
        losses = [float(step(x=images[perm[i:i + ex.BATCH]], t=labels[perm[i:i + ex.BATCH]])[0])
                  for i in range(0, ex.N_TRAIN, ex.BATCH)]
        epoch_losses.append(np.mean(losses))
    assert epoch_losses[-1] < 0.5 * epoch_losses[0], epoch_losses
    assert epoch_losses[0] < np.log(10) + 0.1  # starts near chance: log(10) = 2.30
    acc = accuracy()
    assert acc > 0.75 and acc > acc0 + 0.5, (acc0, acc)


def test_layer_norm_and_embedding_layers():
    vocab, dim, n = 7, 4, 5
    g = gc.Graph("emb")
    with g:
        ids = gc.placeholder("ids", (n,), "i32")
        emb = gc.nn.Embedding(vocab, dim, dtype="f64")
        ln = gc.nn.LayerNorm(dim, dtype="f64")
        y = ln(emb(ids))
        loss = (y * gc.constant(np.arange(dim, dtype=np.float64))).sum()
        (g_table,) = gc.grad(loss, [emb.weight])
    exe = gc.compile(g, [y, g_table], backend="reference")
    exe.params[ln.gamma.name] = RNG.standard_normal(dim)
    exe.params[ln.beta.name] = RNG.standard_normal(dim)
    idv = np.array([3, 0, 3, 6, 1], np.int32)
    out, gt = exe(ids=idv)
    table, gamma, beta = (exe.params[k] for k in (emb.weight.name, ln.gamma.name, ln.beta.name))
    rows = table[idv]
    mu, var = rows.mean(-1, keepdims=True), rows.var(-1, keepdims=True)
    np.testing.assert_allclose(out, (rows - mu) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-12)
    # d loss / d row, summed into the table rows that were looked up (row 3 twice)
    c = np.arange(dim) * gamma
    xhat = (rows - mu) / np.sqrt(var + 1e-5)
    drow = (c - c.mean() - xhat * (c * xhat).mean(-1, keepdims=True)) / np.sqrt(var + 1e-5)
    expect = np.zeros_like(table)
    np.add.at(expect, idv, drow)
    np.testing.assert_allclose(gt, expect, rtol=1e-10, atol=1e-12)
