"""The ONNX ops graphc builds from registry ops at import (ops_activation, ops_math, ops_norm,
ops_layout_extra, ops_index, ops_einsum, ops_loss, ops_resize, ops_attention): random inputs
against onnx's ReferenceEvaluator or an independent numpy formula (beyond the node suite's
fixed cases), exactness of rounding and Mod on edge values, accuracy of the inverse and
hyperbolic functions over their domains, and gradients of the decompositions against
finite differences in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnx")

import graphc as gc  # noqa: E402
from graphc.backends import available_backends  # noqa: E402
from graphc.backends.reference import evaluate  # noqa: E402
from graphc.ir.emitter import Emitter  # noqa: E402
from graphc.passes.autodiff import grad  # noqa: E402
from tests.onnx.onnx_check import check, model, run  # noqa: E402

RNG = np.random.default_rng(17)
LLVM = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")


def f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def i64(v):
    return np.asarray(v, dtype=np.int64)


E = np.zeros(0, np.float32)  # an empty roi/scales input

# (op, inputs, attrs, extra check() arguments)
CASES = [
    ("Elu", {"x": f32(3, 4, 5, scale=3)}, {"alpha": 0.7}, {}),
    ("Selu", {"x": f32(3, 4, 5, scale=3)}, {}, {}),
    ("Celu", {"x": f32(3, 4, 5, scale=3)}, {"alpha": 2.0}, {}),
    ("PRelu", {"x": f32(3, 4, 5), "s": f32(4, 1)}, {}, {}),
    ("PRelu", {"x": RNG.integers(-9, 9, (3, 4)).astype(np.int32),
               "s": np.asarray([2, -3, 1, 0], np.int32)}, {}, {"opset": 16}),
    ("HardSwish", {"x": f32(4, 9, scale=5)}, {}, {}),
    ("Mish", {"x": f32(4, 9, scale=5)}, {}, {}),
    ("Softsign", {"x": f32(4, 9, scale=5)}, {}, {}),
    ("ThresholdedRelu", {"x": f32(4, 9)}, {"alpha": 0.4}, {}),
    ("Shrink", {"x": f32(4, 9)}, {"bias": 0.3, "lambd": 0.6}, {}),
    ("Swish", {"x": f32(4, 9, scale=4)}, {"alpha": 1.7}, {"opset": 24}),
    ("Hardmax", {"x": f32(3, 4, 5)}, {"axis": 1}, {}),
    ("IsInf", {"x": np.array([1, np.inf, -np.inf, np.nan, 0], np.float32)},
     {"detect_negative": 0}, {}),
    ("GroupNormalization", {"x": f32(2, 6, 3, 4), "s": f32(6), "b": f32(6)},
     {"num_groups": 3, "epsilon": 1e-3}, {"opset": 21}),
    ("GroupNormalization", {"x": f32(2, 6, 3, 4).astype(np.float16),
                            "s": f32(6).astype(np.float16), "b": f32(6).astype(np.float16)},
     {"num_groups": 2}, {"opset": 21, "rtol": 2e-3, "atol": 2e-3}),
    ("RMSNormalization", {"x": f32(2, 3, 4, 5), "s": f32(4, 5)}, {"axis": -2}, {}),
    ("MeanVarianceNormalization", {"x": f32(2, 3, 4, 5)}, {"axes": [1, 3]}, {}),
    ("LpNormalization", {"x": f32(2, 3, 4)}, {"axis": 1, "p": 2}, {}),
    ("DepthToSpace", {"x": f32(2, 12, 3, 2)}, {"blocksize": 2, "mode": "DCR"}, {}),
    ("DepthToSpace", {"x": f32(2, 12, 3, 2)}, {"blocksize": 2, "mode": "CRD"}, {}),
    ("SpaceToDepth", {"x": f32(2, 3, 6, 4)}, {"blocksize": 2}, {}),
    ("SpaceToDepth", {"x": f32(2, 3, 6, 4)}, {"blocksize": 2, "mode": "CRD"}, {"opset": 28}),
    ("Trilu", {"x": f32(2, 4, 6), "k": i64(-1)}, {"upper": 0}, {}),  # k a graph input
    ("Trilu", {"x": RNG.integers(0, 9, (5, 3)), "k": i64(2)}, {}, {"consts": {"k": i64(2)}}),
    ("EyeLike", {"x": f32(3, 5)}, {"k": 2, "dtype": 6}, {}),
    ("OneHot", {"i": i64([[1, -1], [4, 9]]), "d": i64(5), "v": f32(2)}, {"axis": 0},
     {"consts": {"d": i64(5)}}),
    ("ArgMin", {"x": RNG.integers(-3, 3, (4, 6)).astype(np.int32)},
     {"axis": 1, "select_last_index": 1}, {}),
    ("ArgMin", {"x": np.array([[np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max]] * 2)},
     {"axis": 1, "keepdims": 0}, {}),
    ("ReduceProd", {"x": f32(3, 4, 5), "a": i64([0, 2])}, {"keepdims": 0},
     {"consts": {"a": i64([0, 2])}, "rtol": 1e-5}),
    ("ReduceProd", {"x": np.array([[0.0, -2.0, np.inf], [-1.0, -3.0, 5.0]], np.float32)},
     {}, {"opset": 13}),
    ("ReduceProd", {"x": RNG.integers(-4, 4, (3, 7)).astype(np.int64)}, {"keepdims": 1},
     {"opset": 13}),
    ("TopK", {"x": f32(3, 7), "k": i64([3])}, {"axis": 1, "largest": 0},
     {"n_out": 2, "consts": {"k": i64([3])}}),
    ("TopK", {"x": np.array([[2, 1, 2, 2, 1]], np.int64), "k": i64([4])}, {},
     {"n_out": 2, "consts": {"k": i64([4])}}),  # ties: the lower index first
    ("GatherElements", {"d": f32(3, 4, 5), "i": RNG.integers(-5, 5, (3, 4, 2))}, {"axis": 2}, {}),
    ("GatherND", {"d": f32(2, 3, 4, 5), "i": np.stack(
        [RNG.integers(0, 3, (2, 6)), RNG.integers(-4, 4, (2, 6))], -1)}, {"batch_dims": 1}, {}),
    ("CumSum", {"x": f32(3, 9), "a": i64(1)}, {"exclusive": 1, "reverse": 1},
     {"consts": {"a": i64(1)}}),
    ("CumProd", {"x": RNG.integers(-3, 4, (3, 9)).astype(np.int64), "a": i64(-1)}, {"exclusive": 1},
     {"consts": {"a": i64(-1)}, "opset": 26}),
]


@pytest.mark.parametrize("op,inputs,attrs,extra", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_the_onnx_reference(op, inputs, attrs, extra):
    check(op, inputs, attrs, **extra)


@pytest.mark.parametrize("red", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("const", [True, False], ids=["const-indices", "graph-indices"])
def test_scatter_reductions(red, const):
    d = f32(3, 5, 4)
    if red == "none":  # unique targets (duplicates are undefined in ONNX)
        idx = np.argsort(RNG.random((3, 5, 4)), axis=1)[:, :3].astype(np.int64) - 5 * (RNG.random((3, 3, 4)) < .5)
    else:
        idx = RNG.integers(-5, 5, (3, 3, 4)).astype(np.int64)
    check("ScatterElements", {"d": d, "i": idx, "u": f32(3, 3, 4)}, {"axis": 1, "reduction": red},
          opset=18, consts={"i": idx} if const else None)
    rows = np.array([[[0], [2]], [[-1], [2]]], np.int64) if red != "none" else \
        np.array([[[0], [-1]], [[1], [1]]], np.int64)[:, :1]  # none: 0 and 1, once each
    check("ScatterND", {"d": d, "i": rows, "u": f32(*rows.shape[:2], 5, 4)}, {"reduction": red},
          opset=18, consts={"i": rows} if const else None)


@pytest.mark.parametrize("backend", ["reference", pytest.param("llvm", marks=LLVM)])
def test_scatter_and_gather_refuse_out_of_range_indices(backend):
    ins = {"d": f32(1, 3), "i": i64([[0, 3, 1]])}
    m = model("GatherElements", ins, {"axis": 1}, out_like=[np.zeros((1, 3), np.float32)])
    with pytest.raises(gc.GraphcError, match="out of range"):
        run(m, ins, backend)


# -- numpy formulas where onnx's ReferenceEvaluator is not the spec ----------------------------

def test_lrn_sums_the_channel_window():
    # ReferenceEvaluator's LRN loops over the batch axis instead of the channels.
    x = f32(2, 7, 3, 2)
    size, alpha, beta, bias = 4, 0.02, 0.6, 1.5
    sq = np.zeros_like(x)
    for c in range(7):
        lo, hi = max(0, c - (size - 1) // 2), min(7, c + math.ceil((size - 1) / 2) + 1)
        sq[:, c] = (x[:, lo:hi] ** 2).sum(1)
    want = x / (bias + alpha / size * sq) ** beta
    check("LRN", {"x": x}, {"size": size, "alpha": alpha, "beta": beta, "bias": bias}, want=[want])


def test_l1_normalization_divides_by_the_sum_of_magnitudes():
    # ReferenceEvaluator sums x itself for p=1; the spec (and the node suite) sum |x|.
    x = f32(3, 4)
    check("LpNormalization", {"x": x}, {"axis": 0, "p": 1}, want=[x / np.abs(x).sum(0)])


def test_nll_mean_counts_only_targets_that_are_not_ignored():
    # ReferenceEvaluator averages over every target when ignore_index=-1 and no weight.
    x, t = f32(4, 5, 3), RNG.integers(0, 5, (4, 3))
    t[::2, 1] = -1
    keep = t != -1
    picked = -np.take_along_axis(x, np.where(keep, t, 0)[:, None], 1)[:, 0]
    want = np.asarray((picked * keep).sum() / keep.sum(), np.float32)
    check("NegativeLogLikelihoodLoss", {"x": x, "t": t}, {"ignore_index": -1}, want=[want])


def test_hardmax_before_opset_13_flattens_at_axis():
    x = f32(2, 3, 4)
    flat = x.reshape(2, 12)
    want = (flat == flat.max(1, keepdims=True)).astype(np.float32).reshape(x.shape)
    check("Hardmax", {"x": x}, {"axis": 1}, opset=11, want=[want])


@pytest.mark.parametrize("ii", [None, 2, -1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("red", ["none", "sum", "mean"])
def test_softmax_cross_entropy(ii, weighted, red):
    x, t = f32(3, 5, 2, 2), RNG.integers(0, 5, (3, 2, 2))
    if ii is not None:
        t[0] = ii
    ins = {"x": x, "t": t, **({"w": np.abs(f32(5))} if weighted else {})}
    attrs = {"reduction": red, **({} if ii is None else {"ignore_index": ii})}
    check("SoftmaxCrossEntropyLoss", ins, attrs, n_out=2)
    if ii != -1 or weighted:  # (see the ignore_index=-1 test above)
        check("NegativeLogLikelihoodLoss", ins, attrs)


# -- Einsum --------------------------------------------------------------------------------

EINSUM = [("ij->ji", [(3, 4)]), ("...ii->...i", [(3, 5, 5)]), ("bij,bjk->bik", [(5, 2, 3), (5, 3, 4)]),
          ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]), ("ii", [(4, 4)]), ("iij->j", [(3, 3, 2)]),
          ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("ab,cd->cabd", [(2, 3), (4, 5)]),
          ("bhqd,bhkd->bhqk", [(2, 3, 4, 8), (2, 3, 5, 8)]), ("ij,ij->", [(3, 4), (3, 4)]),
          ("abc,cb->a", [(2, 3, 4), (4, 3)]), ("iji->j", [(3, 2, 3)]), ("ij,jk", [(2, 3), (3, 4)]),
          ("i,i,i->i", [(4,), (4,), (4,)]), ("...,...->...", [(2, 3), (3,)]), ("->", [()]),
          ("b i d, b j d -> b i j", [(2, 3, 4), (2, 5, 4)])]


@pytest.mark.parametrize("eq,shapes", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_matches_numpy(eq, shapes):
    ins = {f"x{i}": f32(*s) for i, s in enumerate(shapes)}
    want = np.asarray(np.einsum(eq.replace(" ", ""), *ins.values()))
    check("Einsum", ins, {"equation": eq}, want=[want], rtol=1e-5, atol=1e-5)


# -- Resize ---------------------------------------------------------------------------------

RESIZE_COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                 "asymmetric", "tf_crop_and_resize"]
RESIZE_MODES = [("nearest", {"nearest_mode": m}) for m in
                ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")] + \
               [("linear", {}), ("linear", {"antialias": 1}), ("cubic", {}),
                ("cubic", {"cubic_coeff_a": -0.5, "exclude_outside": 1}), ("cubic", {"antialias": 1})]


@pytest.mark.parametrize("coord", RESIZE_COORDS)
@pytest.mark.parametrize("mode,extra", RESIZE_MODES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(RESIZE_MODES)])
def test_resize_matches_the_onnx_reference(coord, mode, extra):
    x = f32(1, 2, 5, 7)
    scales = np.array([1, 1, 1.6, 0.45], np.float32)
    roi = np.array([0, 0, 0.1, 0.2, 1, 1, 0.8, 1.1], np.float32) if coord == "tf_crop_and_resize" else E
    attrs = {"mode": mode, "coordinate_transformation_mode": coord, "extrapolation_value": -2.0,
             **extra}
    check("Resize", {"x": x, "roi": roi, "scales": scales}, attrs, opset=19,
          consts={"roi": roi, "scales": scales}, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_sizes_axes_and_aspect_policy(policy):
    x = f32(1, 2, 5, 7)
    sizes = i64([9, 4])
    check("Resize", {"x": x, "roi": E, "scales": E, "sizes": sizes},
          {"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": policy}, opset=19,
          consts={"roi": E, "scales": E, "sizes": sizes}, rtol=1e-5, atol=1e-5)


def test_resize_nearest_of_integers_is_a_gather():
    x = RNG.integers(-100, 100, (1, 1, 3, 4)).astype(np.int32)
    s = np.array([1, 1, 2.5, 0.75], np.float32)
    check("Resize", {"x": x, "roi": E, "scales": s}, {"mode": "nearest"}, opset=19,
          consts={"roi": E, "scales": s})


# -- Attention ------------------------------------------------------------------------------

ATTN = [({}, {}), ({"is_causal": 1}, {}), ({"scale": 0.3, "softcap": 1.5}, {}),
        ({"qk_matmul_output_mode": 2}, {"mask": "float"}), ({"qk_matmul_output_mode": 3}, {"mask": "bool"}),
        ({"is_causal": 1}, {"past": True, "mask": "bool"}), ({"is_causal": 1}, {"gqa": True}),
        ({"q_num_heads": 4, "kv_num_heads": 2}, {"rank3": True, "mask": "float"}),
        ({"is_causal": 1}, {"nonpad": True})]


@pytest.mark.parametrize("attrs,kind", ATTN, ids=[str(i) for i in range(len(ATTN))])
def test_attention_matches_the_onnx_reference(attrs, kind):
    b, hq, hk, sq, skv, d = 2, 4, 2 if kind.get("gqa") or kind.get("rank3") else 4, 3, 5, 8
    if kind.get("rank3"):
        q, k, v = f32(b, sq, hq * d), f32(b, skv, hk * d), f32(b, skv, hk * d)
    else:
        q, k, v = f32(b, hq, sq, d), f32(b, hk, skv, d), f32(b, hk, skv, d)
    past = 2 if kind.get("past") else 0
    mask = None
    if kind.get("mask") == "float":
        mask = f32(sq, skv + past)
    elif kind.get("mask") == "bool":
        mask = RNG.random((b, 1, sq, skv + past - 1)) < 0.7  # shorter than the keys: padded
    ins = {"Q": q, "K": k, "V": v, "attn_mask": mask,
           "past_key": f32(b, hk, past, d) if past else None,
           "past_value": f32(b, hk, past, d) if past else None}
    opset = 23
    if kind.get("nonpad"):
        ins["nonpad_kv_seqlen"] = i64([5, 4])
        opset = 24
    outs = ["Y", "pk" if past else "", "pv" if past else "",
            "qk" if "qk_matmul_output_mode" in attrs else ""]
    while outs and not outs[-1]:
        outs.pop()
    check("Attention", ins, attrs, opset=opset, out_names=outs, rtol=1e-5, atol=1e-5)


# -- exactness: rounding and Mod on llvm (the cast f32 -> i64 truncates and saturates) ---------

def _edge_values(dt):
    v = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 1e-30, -1e-30,
         np.inf, -np.inf, np.nan, 2.0 ** 23 - 0.5, -(2.0 ** 23 - 0.5), 2.0 ** 23 + 2, 1e30, -1e30,
         4194303.5, 2.0 ** 52 + 0.5 if dt == np.float64 else 3.0]
    rand = RNG.standard_normal(300) * 10 ** RNG.uniform(-3, 9, 300)
    with np.errstate(over="ignore"):
        return np.concatenate([v, rand]).astype(dt)


def _same_bits(got, want):
    return np.array_equal(got, want, equal_nan=True) and \
        np.array_equal(np.signbit(got), np.signbit(want))


@LLVM
@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("op,fn", [("Floor", np.floor), ("Ceil", np.ceil), ("Round", np.round)])
def test_rounding_is_exact_for_every_value(op, fn, dt):
    x = _edge_values(dt)
    got = run(model(op, {"x": x}, out_like=[fn(x)]), {"x": x}, "llvm")[0]
    assert _same_bits(got, fn(x)), x[~((got == fn(x)) | np.isnan(x))]


@LLVM
@pytest.mark.parametrize("dt", [np.float16, np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_is_exact(dt, fmod):
    if np.dtype(dt).kind == "f":
        a = (RNG.standard_normal(300) * 10 ** RNG.uniform(-2, 4, 300)).astype(dt)
        c = (RNG.standard_normal(300) * 10 ** RNG.uniform(-2, 2, 300)).astype(dt)
        a[:8], c[:8] = [-4, 4, -4, 4, 5, -5, np.inf, 3], [2, -2, -2, 2, np.inf, -np.inf, 2, 0]
        # just below a multiple of c: a / c rounds up to the integer in f64 (f64 inputs)
        q = RNG.integers(1, 1000, 40) * RNG.choice([-1, 1], 40)
        near = np.nextafter(q * c[8:48].astype(np.float64), 0)
        a[8:48] = near.astype(dt)
    else:
        info = np.iinfo(dt)
        a = RNG.integers(-1000, 1000, 300).astype(dt)
        c = RNG.integers(1, 30, 300).astype(dt) * RNG.choice([-1, 1], 300).astype(dt)
        a[:4], c[:4] = [info.min, info.max, -7, 7], [3, -3, 7, -7]
    fn = np.fmod if fmod else np.mod
    with np.errstate(all="ignore"):
        want = fn(a, c)
    got = run(model("Mod", {"a": a, "b": c}, {"fmod": fmod}, out_like=[want]), {"a": a, "b": c},
              "llvm")[0]
    assert _same_bits(got, want)


def _domain(op):
    def mag(lo, hi, n=1500):
        return 10 ** RNG.uniform(lo, hi, n)
    signed = lambda m: m * RNG.choice([-1, 1], m.size)  # noqa: E731
    return {"Tan": signed(mag(-6, 1.2)), "Sinh": signed(mag(-8, 1.93)), "Cosh": signed(mag(-8, 1.93)),
            "Asinh": signed(mag(-8, 30)), "Acosh": 1 + mag(-7, 30), "Atan": signed(mag(-8, 30)),
            "Atanh": np.concatenate([signed(mag(-8, 0)) * 0.999999, 1 - mag(-7, -1, 200)]),
            "Asin": np.concatenate([RNG.uniform(-1, 1, 1500), [1, -1, 0, 1 - 1e-7]]),
            "Acos": np.concatenate([RNG.uniform(-1, 1, 1500), [1, -1, 0, 1 - 1e-7]])}[op]


@LLVM
@pytest.mark.parametrize("op", ["Tan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh", "Atan", "Asin",
                                "Acos"])
def test_inverse_and_hyperbolic_functions_are_accurate_over_their_domains(op):
    fn = getattr(np, ("arc" + op[1:].lower()) if op.startswith("A") else op.lower())
    x = _domain(op).astype(np.float32)
    want = fn(x.astype(np.float64))
    got = run(model(op, {"x": x}, out_like=[want.astype(np.float32)]), {"x": x}, "llvm")[0]
    fin = np.isfinite(want)
    rel = np.abs(got[fin] - want[fin]) / np.maximum(np.abs(want[fin]), np.finfo(np.float32).tiny)
    assert rel.max() < 2e-6 and np.array_equal(np.isnan(got), np.isnan(want))


@LLVM
@pytest.mark.parametrize("op,inputs,attrs,extra", [
    ("Einsum", {"a": f32(2, 3, 4), "b": f32(4, 3)}, {"equation": "abc,cb->a"}, {"rtol": 1e-5}),
    ("ScatterElements", {"d": f32(3, 5), "i": RNG.integers(0, 5, (3, 4)), "u": f32(3, 4)},
     {"axis": 1, "reduction": "max"}, {"opset": 18}),
    ("CumSum", {"x": RNG.integers(-9, 9, (4, 11)).astype(np.int32), "a": i64(1)}, {},
     {"consts": {"a": i64(1)}}),
    ("Elu", {"x": f32(5, 9, scale=4)}, {}, {}),
    ("GroupNormalization", {"x": f32(2, 6, 3, 4), "s": f32(6), "b": f32(6)}, {"num_groups": 3},
     {"opset": 21, "rtol": 1e-4, "atol": 1e-5}),
], ids=["einsum", "scatter-max", "cumsum-int", "elu", "groupnorm"])
def test_llvm_agrees(op, inputs, attrs, extra):
    check(op, inputs, attrs, backend="llvm", **extra)


# -- gradients of the decompositions -------------------------------------------------------------

def _f64(*shape, lo=None, hi=None):
    if lo is not None:
        return RNG.uniform(lo, hi, shape)
    return RNG.standard_normal(shape)


GRADS = [
    ("Elu", {"x": _f64(3, 4)}, {}), ("Selu", {"x": _f64(3, 4)}, {}), ("Celu", {"x": _f64(3, 4)}, {}),
    ("PRelu", {"x": _f64(3, 4), "s": _f64(4)}, {}), ("HardSwish", {"x": _f64(3, 4, lo=-2, hi=2)}, {}),
    ("Mish", {"x": _f64(3, 4)}, {}), ("Softsign", {"x": _f64(3, 4)}, {}),
    ("LRN", {"x": _f64(2, 5, 2, 2)}, {"size": 3}),
    ("GroupNormalization", {"x": _f64(2, 4, 3), "s": _f64(4), "b": _f64(4)}, {"num_groups": 2}),
    ("RMSNormalization", {"x": _f64(2, 3, 4), "s": _f64(4)}, {}),
    ("MeanVarianceNormalization", {"x": _f64(2, 3, 2, 2)}, {}),
    ("LpNormalization", {"x": _f64(3, 4)}, {"axis": 0}),
    ("DepthToSpace", {"x": _f64(1, 8, 2, 2)}, {"blocksize": 2, "mode": "CRD"}),
    ("CumSum", {"x": _f64(3, 5), "a": i64(1)}, {"exclusive": 1}),
    ("ReduceProd", {"x": _f64(3, 5)}, {"keepdims": 0}),
    ("Einsum", {"a": _f64(2, 3, 3), "b": _f64(3, 4)}, {"equation": "bii,ij->bj"}),
    ("GatherElements", {"d": _f64(3, 4), "i": RNG.integers(0, 3, (3, 4))}, {"axis": 0}),
    ("GatherND", {"d": _f64(3, 4, 2), "i": RNG.integers(0, 3, (5, 2))}, {}),
    ("ScatterElements", {"d": _f64(3, 4), "i": RNG.integers(0, 4, (3, 2)), "u": _f64(3, 2)},
     {"axis": 1, "reduction": "mul"}),
    ("ScatterND", {"d": _f64(4, 3), "i": i64([[1], [3]]), "u": _f64(2, 3)}, {"reduction": "add"}),
    ("Resize", {"x": _f64(1, 1, 3, 4), "roi": E, "s": np.array([1, 1, 1.7, 0.6])},
     {"mode": "cubic"}),
    ("NegativeLogLikelihoodLoss", {"x": _f64(3, 5, 2), "t": RNG.integers(0, 5, (3, 2)),
                                   "w": _f64(5, lo=0.5, hi=2)}, {"ignore_index": 1}),
    ("SoftmaxCrossEntropyLoss", {"x": _f64(4, 5), "t": RNG.integers(0, 5, (4,))}, {}),
    ("Attention", {"Q": _f64(1, 2, 3, 4), "K": _f64(1, 2, 5, 4), "V": _f64(1, 2, 5, 4)},
     {"is_causal": 1, "softcap": 2.0}),
    ("TopK", {"x": _f64(3, 6), "k": i64([2])}, {}),
    ("Tan", {"x": _f64(5, lo=-1.2, hi=1.2)}, {}), ("Sinh", {"x": _f64(6, lo=-3, hi=3)}, {}),
    ("Cosh", {"x": _f64(6, lo=-3, hi=3)}, {}), ("Asinh", {"x": _f64(6, lo=-3, hi=3)}, {}),
    ("Acosh", {"x": _f64(6, lo=1.1, hi=4)}, {}), ("Atanh", {"x": _f64(6, lo=-0.9, hi=0.9)}, {}),
    ("Atan", {"x": _f64(6, lo=-4, hi=4)}, {}), ("Asin", {"x": _f64(6, lo=-0.9, hi=0.9)}, {}),
    ("Acos", {"x": _f64(6, lo=-0.9, hi=0.9)}, {}),
]
_CONSTS = {("CumSum", "a"), ("TopK", "k"), ("Resize", "s"), ("Resize", "roi")}


@pytest.mark.parametrize("op,inputs,attrs", GRADS, ids=[g[0] for g in GRADS])
def test_gradients_match_finite_differences(op, inputs, attrs):
    """d(sum(seed * y))/dx in float64 by graphc's autodiff of the decomposition equals the
    central difference along a random direction, for every float input."""
    consts = {n: a for n, a in inputs.items() if (op, n) in _CONSTS}
    opset = {"GroupNormalization": 21}.get(op, 23)
    # (onnx's ReferenceEvaluator cannot run MVN's function body in f64: declare its output)
    like = [np.zeros(inputs["x"].shape)] if op == "MeanVarianceNormalization" else None
    g = gc.onnx.load(model(op, inputs, attrs, opset=opset, consts=consts,
                           n_out=2 if op == "TopK" else 1, out_like=like))
    xs = [v for v in g.inputs if v.dtype.is_float]
    y = g.outputs[0]
    b = Emitter(g)
    seed = RNG.standard_normal(y.shape)
    loss = b.sum(b.mul(y, b.const(seed, y.dtype)), axes=tuple(range(y.type.rank)), keepdims=False)
    grads = grad(g, loss, xs)
    feeds = {v: np.asarray(inputs[v.name]) for v in g.inputs}
    res = evaluate(g, feeds, grads)
    h = 1e-6
    for x, gx in zip(xs, grads):
        d = RNG.standard_normal(x.shape)
        def f(t):
            return evaluate(g, {**feeds, x: feeds[x] + t * d}, [loss])[loss]
        fd = (f(h) - f(-h)) / (2 * h)
        assert np.isfinite(res[gx]).all()
        np.testing.assert_allclose(np.sum(res[gx] * d), fd, rtol=1e-5, atol=1e-7)
