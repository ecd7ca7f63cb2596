"""The Winograd rewrite (passes/winograd.py): compiled models equal the direct path within the
documented bound, forward and backward; constants fold; epilogues fuse only when nothing else
reads the intermediate; the cost model's choices and reasons reach the ledger; and the float32
error against a float64 direct convolution on realistic data stays within ERROR_BOUND."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir import GraphcError, get_op
from graphc.passes.winograd import (DEFAULT_MACHINE, ERROR_BOUND, MachineFigures, choose,
                                    estimate, winograd)

RNG = np.random.default_rng(11)


def relu_data(*shape):
    return np.maximum(RNG.standard_normal(shape), 0).astype(np.float32)


def he(k, c):
    return (RNG.standard_normal((k, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)


def rel_err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def conv_graph(x_shape, w, b=None, padding=1, act=True):
    g = gc.Graph("conv")
    with g:
        x = gc.placeholder("x", x_shape, "f32")
        y = gc.conv2d(x, gc.constant(w), None if b is None else gc.constant(b), padding=padding)
        y = gc.relu(y) if act else y
    return g, y


def notes(exe) -> str:
    return "\n".join(n for e in exe.ledger for n in e.notes)


def details(exe) -> dict:
    return next(e.details for e in exe.ledger if e.name == "winograd")


@pytest.mark.parametrize("mode", ["F2", "F4"])
@pytest.mark.parametrize("padding", [1, (0, 2, 1, 0)])
def test_inference_equals_direct_and_fuses_bias_and_relu(mode, padding):
    w, b = he(6, 5), RNG.standard_normal(6).astype(np.float32)
    g, y = conv_graph((2, 5, 11, 9), w, b, padding)
    x = relu_data(2, 5, 11, 9)
    direct = gc.compile(g, y, backend="llvm", winograd="off")(x)
    exe = gc.compile(g, y, backend="llvm", winograd=mode)
    tile = int(mode[1])
    assert rel_err(exe(x), direct) <= ERROR_BOUND[tile]
    d = details(exe)
    assert d[mode] == 1 and d["filters folded"] == 1 and d["epilogues fused"] == 2
    assert f"F({tile}x{tile},3x3): winograd={mode}" in notes(exe)


def test_rewritten_graph_prints_and_runs_on_the_reference_backend():
    w = he(4, 3)
    g, y = conv_graph((1, 3, 8, 8), w)
    exe = gc.compile(g, y, backend="reference", winograd="F4")
    x = relu_data(1, 3, 8, 8)
    want = gc.compile(g, y, backend="reference")(x)
    assert rel_err(exe(x), want) <= 1e-6  # the references compute in float64
    work = g.copy()
    winograd(work, "F4")
    text = work.to_text()
    for op in ("winograd_input_transform", "matmul", "winograd_output_transform"):
        assert op in text
    assert "winograd_filter_transform" not in text  # folded into a constant
    assert gc.parse(text).to_text() == text


def test_training_gradients_equal_direct_and_backward_data_takes_the_winograd_path():
    g = gc.Graph("train")
    with g:
        x = gc.placeholder("x", (2, 4, 10, 10), "f32")
        c1 = gc.nn.Conv2d(4, 6, 3, padding=1)
        c2 = gc.nn.Conv2d(6, 6, 3, padding=(1, 0))
        h = c2(gc.relu(c1(x)))
        loss = (h * h).mean()
        grads = gc.grad(loss, [x, c1.weight, c1.bias, c2.weight])
    xv = relu_data(2, 4, 10, 10)
    want = gc.compile(g, [loss, *grads], backend="llvm", winograd="off")(x=xv)
    for mode in ("F2", "F4"):
        exe = gc.compile(g, [loss, *grads], backend="llvm", winograd=mode)
        got = exe(x=xv)
        for a, b in zip(got, want):
            assert rel_err(a, b) <= 4 * ERROR_BOUND[int(mode[1])]
        d = details(exe)
        assert d[mode] == 4 and d["filters folded"] == 0  # 2 forward, 2 backward-data
        assert "conv2d_grad_input" in notes(exe)


def test_filter_transform_stays_a_graph_op_for_parameters():
    g = gc.Graph("p")
    with g:
        x = gc.placeholder("x", (1, 3, 6, 6), "f32")
        y = gc.nn.Conv2d(3, 4, 3, padding=1)(x)
    work = g.copy()
    work.set_outputs([work.nodes[-1].outputs[0]])
    winograd(work, "F2")
    ops = [n.op for n in work.nodes]
    assert "winograd_filter_transform" in ops and "conv2d" not in ops
    exe = gc.compile(g, y, backend="llvm", winograd="F2")
    xv = relu_data(1, 3, 6, 6)
    assert rel_err(exe(x=xv), gc.compile(g, y, backend="reference")(x=xv)) <= ERROR_BOUND[2]


def test_epilogue_is_not_fused_when_the_convolution_output_is_also_read():
    w, b = he(3, 2), RNG.standard_normal(3).astype(np.float32)
    g = gc.Graph("two")
    with g:
        x = gc.placeholder("x", (1, 2, 6, 6), "f32")
        c = gc.conv2d(x, gc.constant(w), padding=1)
        y = gc.relu(c + gc.constant(b).reshape((1, 3, 1, 1)))
    exe = gc.compile(g, [c, y], backend="llvm", winograd="F2")
    xv = relu_data(1, 2, 6, 6)
    want = gc.compile(g, [c, y], backend="reference")(x=xv)
    for a, b_ in zip(exe(x=xv), want):
        assert rel_err(a, b_) <= ERROR_BOUND[2]
    assert details(exe)["epilogues fused"] == 0


def conv_node(x_shape, w_shape, **attrs):
    g = gc.Graph("n")
    with g:
        gc.conv2d(gc.placeholder("x", x_shape, "f32"), gc.constant(np.zeros(w_shape, np.float32)), **attrs)
    return g.nodes[-1]


def test_cost_model_choices_and_reasons():
    big = conv_node((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert choose(big, "auto").tile in (2, 4)
    first = conv_node((1, 3, 56, 56), (64, 3, 3, 3), padding=1)
    assert choose(first, "auto").tile is None  # k = C = 3 starves the small GEMMs
    assert "direct" in choose(first, "auto").reason and "F4" in choose(first, "auto").reason
    strided = conv_node((1, 8, 9, 9), (8, 8, 3, 3), stride=2)
    assert choose(strided, "F4") == choose(strided, "auto")
    assert choose(strided, "F4").reason == "direct: stride or dilation is not 1"
    assert choose(conv_node((1, 8, 9, 9), (8, 8, 5, 5)), "F2").tile is None
    assert choose(conv_node((1, 8, 9, 9), (8, 4, 3, 3), groups=2), "F2").tile is None
    assert choose(big, "off").tile is None


def test_estimates_follow_the_machine_figures():
    big = conv_node((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    slow_transforms = MachineFigures(interior_ns=((2, 50.0), (4, 50.0)), edge_ns=((2, 50.0), (4, 50.0)))
    assert estimate(big, 4, slow_transforms) > estimate(big, 4, DEFAULT_MACHINE)
    assert choose(big, "auto", slow_transforms).tile is None
    assert estimate(big, None) == pytest.approx(estimate(big, None, MachineFigures()))


def test_bad_mode_is_a_graphc_error():
    g, y = conv_graph((1, 2, 5, 5), he(2, 2))
    with pytest.raises(GraphcError, match="winograd='F3'"):
        gc.compile(g, y, backend="llvm", winograd="F3")


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("c,hw", [(64, 12), (512, 6)])
def test_float32_error_against_float64_direct_convolution(tile, c, hw):
    """Realistic data (ReLU'd inputs, He weights), C up to 512: within the documented bound."""
    w = he(16, c)
    g, y = conv_graph((1, c, hw, hw), w, act=False)
    x = relu_data(1, c, hw, hw)
    exact = get_op("conv2d").reference(x.astype(np.float64), w.astype(np.float64), strides=(1, 1),
                                       padding=(1, 1, 1, 1), dilations=(1, 1), groups=1)
    got = gc.compile(g, y, backend="llvm", winograd=f"F{tile}")(x)
    err = rel_err(got, exact)
    assert err <= ERROR_BOUND[tile]
    direct = rel_err(gc.compile(g, y, backend="llvm", winograd="off")(x), exact)
    assert direct <= ERROR_BOUND[2]  # the yardstick: plain float32 rounding

