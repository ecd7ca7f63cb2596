"""A GEMM epilogue whose chain has a view (reshape, expand_dims, squeeze) after an
elementwise member: the view passes the member's value on, it does not restart the chain
at the accumulator (that rule once dropped a convolution's bias and a gradient term)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import graphc as gc
from graphc.backends import available_backends

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")


def _agree(g, outputs, feeds, opt_level=2):
    want = gc.compile(g, outputs=outputs, backend="reference", opt_level=0)(**feeds)
    got = gc.compile(g, outputs=outputs, backend="llvm", opt_level=opt_level)(**feeds)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opt_level", [1, 2, 3])
def test_max_gradient_through_matmul_keeps_every_term(opt_level):
    g = gc.Graph("m")
    with g:
        x = gc.placeholder("x", (2, 3, 1))
        w = gc.placeholder("w", (1, 2))
        m = gc.max(x, axis=0)
        loss = gc.sum(m @ w) + gc.sum(gc.sum(m, axis=0, keepdims=True) * 0.5)
        gx = gc.grad(loss, x)
    rng = np.random.default_rng(0)
    _agree(g, [gx], {"x": rng.standard_normal((2, 3, 1)).astype(np.float32),
                     "w": np.ones((1, 2), np.float32)}, opt_level)


def test_conv_bias_survives_expand_dims_then_elementwise():
    g = gc.Graph("m2")
    with g:
        x = gc.placeholder("x", (1, 2, 2, 2))
        y = gc.expand_dims(gc.conv2d(x, gc.constant(np.ones((2, 2, 1, 1), np.float32)),
                                     gc.constant(np.array([10.0, 20.0], np.float32))), 2) * 2.0
    _agree(g, [y], {"x": np.ones((1, 2, 2, 2), np.float32)})


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["add_bias", "tanh", "mul2", "view", "relu", "sub_res"]),
                min_size=1, max_size=5),
       st.sampled_from(["matmul", "conv"]), st.integers(0, 2**31 - 1))
def test_random_epilogue_chains_with_views_match_the_reference(chain, head, seed):
    """Property: contraction -> any mix of elementwise members and views -> result."""
    rng = np.random.default_rng(seed)
    g = gc.Graph("chain")
    with g:
        if head == "matmul":
            x = gc.placeholder("x", (3, 4))
            y = x @ gc.constant(rng.standard_normal((4, 5)).astype(np.float32))
        else:
            x = gc.placeholder("x", (2, 3, 4, 4))
            y = gc.conv2d(x, gc.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
                          padding=1)
        for step in chain:
            shape = tuple(y.shape)
            if step == "add_bias":
                y = y + gc.constant(rng.standard_normal(shape[-1:]).astype(np.float32))
            elif step == "sub_res":
                y = y - gc.constant(rng.standard_normal(shape).astype(np.float32))
            elif step == "tanh":
                y = gc.tanh(y)
            elif step == "relu":
                y = gc.relu(y)
            elif step == "mul2":
                y = y * 2.0
            else:
                y = gc.expand_dims(y, len(shape)) if len(shape) < 5 else gc.reshape(
                    y, (int(np.prod(shape)),))
        y = y * 1.5  # an elementwise op after the last view keeps it inside the epilogue
    feeds = {"x": rng.standard_normal(tuple(x.shape)).astype(np.float32)}
    _agree(g, [y], feeds)
