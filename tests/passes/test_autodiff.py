"""Reverse-mode autodiff on composite graphs: finite differences, accumulation over fan-out,
paths that carry no gradient, and the errors users see."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
import graphc.ir as ir
from graphc.backends.reference import evaluate
from graphc.passes.autodiff import grad
from graphc.testing import check_grads

RNG = np.random.default_rng(99)


def test_composite_function_matches_finite_differences():
    def build(b, xs):
        x, w, v = xs
        h = b.tanh(b.matmul(x, w))
        s = b.softmax(b.mul(h, h), axis=1) if "softmax" in ir.all_ops() else b.exp(h)
        return b.add(b.mul(s, b.sigmoid(v)), b.log(b.add(b.mul(h, h), b.scalar(1.0, h))))
    check_grads(build, [RNG.standard_normal((3, 4)), RNG.standard_normal((4, 5)),
                        RNG.standard_normal((5,))])


def test_fan_out_gradients_accumulate():
    # f(x) = x*x + exp(x) * x uses x four times.
    def build(b, xs):
        (x,) = xs
        return b.add(b.mul(x, x), b.mul(b.exp(x), x))
    check_grads(build, [RNG.standard_normal((2, 3))])


def test_gradient_of_unconnected_input_is_zero_and_int_paths_are_skipped():
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((3,), "f64"))
    z = g.add_input("z", ir.TensorType((2,), "f64"))
    k = g.add_input("k", ir.TensorType((3,), "i32"))
    b = ir.Emitter(g)
    y = b.sum(b.mul(x, b.cast(k, to="f64")), axes=(0,))
    gx, gz = grad(g, y, [x, z])
    kv = np.array([1, -2, 5], np.int32)
    res = evaluate(g, {x: np.ones(3), z: np.ones(2), k: kv}, [gx, gz])
    np.testing.assert_array_equal(res[gx], kv)
    np.testing.assert_array_equal(res[gz], np.zeros(2))


def test_only_nodes_on_the_path_are_differentiated():
    """A branch that does not reach the loss, or that does not depend on the requested
    inputs, adds no backward nodes (dead backward is never built)."""
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((4,), "f64"))
    data = g.add_input("data", ir.TensorType((4,), "f64"))
    b = ir.Emitter(g)
    side = b.exp(b.sin(x))                       # not used by the loss
    feat = b.tanh(b.cos(data))                  # does not depend on x
    loss = b.sum(b.mul(x, feat), axes=(0,))
    before = len(g.nodes)
    grad(g, loss, [x])
    new_ops = [n.op for n in g.nodes[before:]]
    assert "cos" not in new_ops and "sin" not in new_ops and "exp" not in new_ops
    assert len(new_ops) <= 4
    del side


def test_seeded_vector_jacobian_product():
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((3,), "f64"))
    s = g.add_input("s", ir.TensorType((3,), "f64"))
    b = ir.Emitter(g)
    y = b.mul(x, x)
    (gx,) = grad(g, y, [x], seed=s)
    xv, sv = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(evaluate(g, {x: xv, s: sv}, [gx])[gx], 2 * xv * sv)


def test_errors():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3, 4))
        with pytest.raises(gc.DifferentiationError, match="scalar output"):
            gc.grad(x * 2.0, x)
        i = gc.placeholder("i", (3,), "i32")
        with pytest.raises(gc.DifferentiationError, match="not floating point"):
            gc.grad(x.sum(), i)


def test_op_without_gradient_on_a_float_path_is_named(monkeypatch):
    """An op with no VJP between x and the loss is an error naming the op and the line."""
    opdef = ir.OpDef("opaque_square", ir.Fusion.OPAQUE, lambda ts, a: ts[0], lambda x: x * x, 1)
    monkeypatch.setitem(ir.registry._REGISTRY, "opaque_square", opdef)
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,), "f64")
        y = gc.ops.emit("opaque_square", x).sum()
        with pytest.raises(gc.DifferentiationError, match="op opaque_square has no gradient") as e:
            gc.grad(y, x)
    assert e.value.node.op == "opaque_square" and e.value.loc.file == __file__


def test_no_gradient_op_on_the_path_is_named():
    g = ir.Graph("t")
    x = g.add_input("x", ir.TensorType((3,), "f64"))
    b = ir.Emitter(g)
    mask = b.cast(b.greater(x, b.scalar(0.0, x)), to="f64")  # comparisons have no gradient
    y = b.sum(b.mul(mask, x), axes=(0,))
    (gx,) = grad(g, y, [x])  # the comparison's output is bool: no gradient flows, no error
    xv = np.array([-1.0, 2.0, 3.0])
    np.testing.assert_array_equal(evaluate(g, {x: xv}, [gx])[gx], [0.0, 1.0, 1.0])


def test_gradient_nodes_point_at_the_forward_source_line():
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (3,), "f64")
        y = gc.tanh(x).sum()  # forward line
        fwd_line = y.graph.nodes[-1].loc.line
        before = len(g.nodes)
        gc.grad(y, x)
    tanh_back = [n for n in g.nodes[before:] if n.op in ("mul", "sub")]
    assert tanh_back and all(n.loc.line == fwd_line for n in tanh_back)


def test_second_order_gradient():
    """grad of grad: d2/dx2 sum(sin(x)) = -sin(x)."""
    g = gc.Graph("t")
    with g:
        x = gc.placeholder("x", (5,), "f64")
        (gx,) = gc.grad(gc.sin(x).sum(), [x])
        (ggx,) = gc.grad(gx.sum(), [x])
    xv = RNG.standard_normal(5)
    np.testing.assert_allclose(gc.compile(g, ggx, backend="reference")(xv), -np.sin(xv), rtol=1e-12)
