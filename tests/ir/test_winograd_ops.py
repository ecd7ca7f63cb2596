"""Tests of the Winograd transforms (ir/winograd.py) and ops (ir/ops/winograd.py):
"winograd_filter_transform", "winograd_input_transform", "winograd_output_transform".

The derivation is checked against direct correlation; the three references composed with a
matmul against the conv2d and conv2d_grad_input references (float64, so only rounding
separates them); the kernel-IR lowerings (LLVM) against the references, on shapes whose
tiles hit the padded border, the interior and cut-off last tiles; and the shape errors."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from graphc.pipeline import compile_graph
from graphc.backends.reference.interpreter import evaluate
from graphc.ir import AttrError, DTypeError, Fusion, Graph, ShapeError, TensorType, get_op
from graphc.ir.winograd import POINTS, check, transform

RNG = np.random.default_rng(7)
CONV = {"strides": (1, 1), "dilations": (1, 1), "groups": 1}


def ref(op, *args, **attrs):
    return get_op(op).reference(*args, **get_op(op).check_attrs(attrs))


def graph_of(op, args, attrs):
    g = Graph("t")
    xs = [g.add_input(f"x{i}", TensorType(a.shape, a.dtype.name.replace("float", "f")))
          for i, a in enumerate(args)]
    node = g.add_node(op, xs, attrs)
    g.outputs = list(node.outputs)
    return g, xs, node


def run_reference(op, *args, **attrs):
    g, xs, node = graph_of(op, args, attrs)
    return evaluate(g, dict(zip(xs, args)), node.outputs)[node.outputs[0]]


# --- the derivation ---------------------------------------------------------------------------

@pytest.mark.parametrize("m", sorted(POINTS))
def test_transform_equals_direct_correlation(m):
    t = transform(m)
    assert t.alpha == m + 2
    assert check(t, seed=m) < 1e-12 * 10 ** (m // 2)


@pytest.mark.parametrize("m", sorted(POINTS))
def test_one_dimensional_formula_is_a_correlation(m):
    AT, G, BT = transform(m).arrays()
    d, g = RNG.standard_normal(m + 2), RNG.standard_normal(3)
    np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), np.correlate(d, g, "valid"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", sorted(POINTS))
def test_input_transform_is_small_coprime_integers(m):
    """The scaling puts the fractions into G, so the per-call input transform is integer."""
    for row in transform(m).BT:
        assert all(v.denominator == 1 for v in row)
        nums = [int(v) for v in row if v]
        assert np.gcd.reduce(nums) == 1


def test_unknown_tile_is_rejected():
    with pytest.raises(ValueError, match="F\\(3, 3\\)"):
        transform(3)
    assert Fraction(1, 2) in POINTS[6]


# --- the references compose to a convolution -----------------------------------------------------

GEOMETRIES = [  # (N, C, K, H, W, padding)
    (2, 3, 4, 7, 9, (1, 1, 1, 1)),
    (1, 2, 3, 5, 6, (0, 2, 1, 0)),
    (1, 3, 2, 3, 3, (0, 0, 0, 0)),
    (1, 1, 2, 1, 4, (2, 2, 0, 1)),
]


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("n,c,k,h,w,pad", GEOMETRIES)
def test_references_compose_to_conv2d(m, n, c, k, h, w, pad):
    x, wt, b = RNG.standard_normal((n, c, h, w)), RNG.standard_normal((k, c, 3, 3)), RNG.standard_normal(k)
    y = ref("conv2d", x, wt, padding=pad, **CONV)
    prod = ref("winograd_filter_transform", wt, tile=m) @ ref("winograd_input_transform", x, tile=m,
                                                               padding=pad)
    got = ref("winograd_output_transform", prod, b, tile=m, output_shape=y.shape, activation="relu")
    np.testing.assert_allclose(got, np.maximum(y + b.reshape(1, k, 1, 1), 0), atol=1e-11 * 10 ** (m // 2))


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n,c,k,h,w,pad", GEOMETRIES)
def test_flipped_filter_gives_the_input_gradient(m, n, c, k, h, w, pad):
    x, wt = RNG.standard_normal((n, c, h, w)), RNG.standard_normal((k, c, 3, 3))
    g = RNG.standard_normal(ref("conv2d", x, wt, padding=pad, **CONV).shape)
    dx = ref("conv2d_grad_input", g, wt, input_shape=x.shape, padding=pad, **CONV)
    back = tuple(2 - p for p in pad)
    prod = ref("winograd_filter_transform", wt, tile=m, flip=True) @ \
        ref("winograd_input_transform", g, tile=m, padding=back)
    got = ref("winograd_output_transform", prod, tile=m, output_shape=x.shape)
    np.testing.assert_allclose(got, dx, atol=1e-11)


def test_interpreter_runs_the_references_in_the_operand_dtype():
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    v = run_reference("winograd_input_transform", x, tile=2, padding=(1, 1, 1, 1))
    assert v.dtype == np.float32 and v.shape == (16, 2, 9)


# --- the LLVM lowerings against the references ----------------------------------------------------

def compare_llvm(op, args, attrs, rtol):
    g, xs, node = graph_of(op, args, attrs)
    want = evaluate(g, dict(zip(xs, args)), node.outputs)[node.outputs[0]]
    got = compile_graph(g, "llvm")(**{f"x{i}": a for i, a in enumerate(args)})[0]
    scale = max(float(np.abs(want).max()), 1e-30)
    assert np.abs(got - want).max() <= rtol * scale


@pytest.mark.parametrize("m,dtype", [(2, np.float32), (4, np.float32), (4, np.float64)])
@pytest.mark.parametrize("shape,pad", [((2, 3, 13, 9), (1, 1, 1, 1)), ((1, 2, 4, 11), (0, 2, 2, 0)),
                                       ((1, 1, 3, 3), (0, 0, 0, 0))])
def test_input_transform_lowering(m, dtype, shape, pad):
    x = RNG.standard_normal(shape).astype(dtype)
    compare_llvm("winograd_input_transform", [x], {"tile": m, "padding": pad},
                 1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("m,flip", [(2, False), (4, True), (4, False)])
def test_filter_transform_lowering(m, flip):
    w = RNG.standard_normal((5, 3, 3, 3)).astype(np.float32)
    compare_llvm("winograd_filter_transform", [w], {"tile": m, "flip": flip}, 1e-6)


@pytest.mark.parametrize("m,out,bias,act", [(2, (2, 3, 7, 5), True, "relu"), (4, (1, 2, 9, 8), False, ""),
                                            (4, (1, 3, 4, 13), True, "tanh"), (2, (1, 1, 1, 1), False, "")])
def test_output_transform_lowering(m, out, bias, act):
    n, k, oh, ow = out
    tiles = n * -(-oh // m) * -(-ow // m)
    args = [RNG.standard_normal(((m + 2) ** 2, k, tiles)).astype(np.float32)]
    if bias:
        args.append(RNG.standard_normal(k).astype(np.float32))
    compare_llvm("winograd_output_transform", args,
                 {"tile": m, "output_shape": out, "activation": act}, 1e-5)


# --- shape rules and their errors ---------------------------------------------------------------

def infer(op, types, **attrs):
    g = Graph("t")
    xs = [g.add_input(f"x{i}", t) for i, t in enumerate(types)]
    return g.add_node(op, xs, attrs).outputs[0].type


def test_shape_rules():
    assert infer("winograd_filter_transform", [TensorType((8, 4, 3, 3), "f32")], tile=4).shape == (36, 8, 4)
    assert infer("winograd_filter_transform", [TensorType((8, 4, 3, 3), "f32")], flip=True).shape == (16, 4, 8)
    # 56x56 padded by 1 -> 56x56 outputs -> 28x28 tiles of 2 per image
    assert infer("winograd_input_transform", [TensorType((2, 4, 56, 56), "f32")],
                 padding=(1, 1, 1, 1)).shape == (16, 4, 2 * 28 * 28)
    assert infer("winograd_output_transform", [TensorType((36, 3, 2 * 2 * 3), "f64")], tile=4,
                 output_shape=(2, 3, 5, 9)).shape == (2, 3, 5, 9)
    for op in ("winograd_filter_transform", "winograd_input_transform", "winograd_output_transform"):
        assert get_op(op).fusion is Fusion.OPAQUE and not get_op(op).differentiable


def test_costs_count_the_transform_arithmetic():
    g = Graph("t")
    x = g.add_input("x", TensorType((1, 2, 6, 6), "f32"))
    node = g.add_node("winograd_input_transform", [x], {"tile": 4})
    op = get_op("winograd_input_transform")
    cost = op.estimate_cost([x.type], [node.outputs[0].type], node.attrs)
    BT = transform(4).arrays()[2]
    # one tile per channel: BT @ d (nnz(BT) * 6 multiply-adds) then @ BT^T (same again)
    assert cost.flops == 2 * 2 * (np.count_nonzero(BT) * 6) * 2
    assert cost.bytes == x.type.nbytes + node.outputs[0].type.nbytes


@pytest.mark.parametrize("op,types,attrs,err,match", [
    ("winograd_filter_transform", [TensorType((2, 2, 5, 5), "f32")], {}, ShapeError, "3, 3"),
    ("winograd_filter_transform", [TensorType((2, 2, 3, 3), "f16")], {}, DTypeError, "f32 or f64"),
    ("winograd_filter_transform", [TensorType((2, 2, 3, 3), "f32")], {"tile": 3}, AttrError, "tile"),
    ("winograd_input_transform", [TensorType((1, 2, 2, 2), "f32")], {}, ShapeError, "does not fit"),
    ("winograd_input_transform", [TensorType((2, 2, 2), "f32")], {}, ShapeError, "rank 4"),
    ("winograd_input_transform", [TensorType((1, 1, 4, 4), "f32")], {"padding": (1, 1)}, AttrError, "4 ints"),
    ("winograd_output_transform", [TensorType((16, 2, 4), "f32")], {"output_shape": (1, 2, 4, 5)},
     ShapeError, "N\\*TH\\*TW"),
    ("winograd_output_transform", [TensorType((16, 2, 4), "f32"), TensorType((3,), "f32")],
     {"output_shape": (1, 2, 4, 4)}, ShapeError, "bias"),
    ("winograd_output_transform", [TensorType((16, 2, 4), "f32")],
     {"output_shape": (1, 2, 4, 4), "activation": "leaky_relu"}, AttrError, "without attributes"),
    ("winograd_output_transform", [TensorType((16, 2, 4), "f32")],
     {"output_shape": (1, 2, 4, 4), "activation": "add"}, AttrError, "unary"),
])
def test_errors_name_the_problem(op, types, attrs, err, match):
    with pytest.raises(err, match=match):
        infer(op, types, **attrs)


# --- the batched GEMM the rewrite relies on ---------------------------------------------------

@pytest.mark.parametrize("a_shape,b_shape,batched", [
    ((16, 24, 20), (16, 20, 30), True),        # Winograd: one product per transform position
    ((24, 20), (2, 3, 20, 30), True),          # a broadcast over two batch axes
    ((2, 1, 24, 20), (2, 3, 20, 30), False),   # partial broadcast: per-matrix loop
])
def test_batched_matmul_lowering(a_shape, b_shape, batched):
    from graphc.ir.kernel import Gemm
    from graphc.passes.lower import lower
    a, b = RNG.standard_normal(a_shape).astype(np.float32), RNG.standard_normal(b_shape).astype(np.float32)
    g, xs, node = graph_of("matmul", [a, b], {})
    gemms = [s for k in lower(g).kernels for s in k.body if isinstance(s, Gemm)]
    assert (len(gemms) == 1 and gemms[0].batch > 1) == batched
    got = compile_graph(g, "llvm")(x0=a, x1=b)[0]
    np.testing.assert_allclose(got, np.matmul(a, b), rtol=1e-5, atol=1e-4)
