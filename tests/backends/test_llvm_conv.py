"""The convolution kernels (ir/ops/conv_lowering.py) against the reference: forward,
input gradient and weight gradient, across the run split (batches below, at and above
RUNS, with a remainder), groups, strides, dilations, padding and dtypes, and each forward
path (per image in row chunks, batched small images, 1x1, direct sums, depthwise)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.ir.ops.conv_lowering import RUNS

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="llvmlite missing")

# f32 sums of up to a few hundred products in another order; f16 rounds inputs and output
TOL = {"f64": 1e-10, "f32": 2e-5, "f16": 2e-2}

CASES = [  # (N, C, H, W, K, kernel, stride, padding, dilation, groups)
    (1, 3, 9, 7, 4, 3, 1, 1, 1, 1),
    (RUNS, 4, 6, 6, 6, 3, 2, 1, 1, 2),
    (RUNS + 3, 2, 7, 8, 3, 3, 1, 2, 2, 1),
    (2 * RUNS + 1, 6, 5, 5, 6, 1, 1, 0, 1, 3),
    (5, 4, 8, 8, 4, 5, (2, 1), (1, 3, 2, 0), 1, 4),   # depthwise, 5x5, uneven padding
    (2, 4, 7, 6, 8, 3, 1, 1, 2, 4),                   # depthwise, channel multiplier 2, dilated
    (1, 6, 9, 9, 6, 3, 2, 1, 1, 6),                   # depthwise, strided
    # (<= 64 output pixels per image with 1 < N <= RUNS run as one GEMM over the batch: above,
    # with groups; below, columns written as GEMM panels of two or four rows per panel)
    (2, 5, 8, 8, 6, 3, 1, 1, 1, 1),
    (3, 4, 4, 4, 6, 3, 1, 1, 1, 1),
    (2, 1, 4, 4, 2, 3, 1, 1, 1, 1),                   # (too small for the library: loops read the panels)
    (3, 3, 40, 40, 4, 7, 2, 3, 1, 1),                 # per image, columns in two row chunks
    (2, 3, 64, 64, 5, 7, 2, 3, 1, 1),                 # ... in 8 chunks of GEMM-packed panels
    (2, 24, 9, 9, 8, 1, 1, 0, 1, 1),                  # 1x1: the GEMM reads the image itself
    (3, 4, 18, 18, 6, 1, 1, 0, 1, 1),                 # 4 products per output: summed directly
    (2, 1, 20, 36, 3, 3, 2, 1, 1, 1),                 # direct sum over padded, strided planes
]


def _graph(case, dtype):
    n, c, h, w, k, ks, stride, pad, dil, groups = case
    g = gc.Graph("conv")
    with g:
        x = gc.placeholder("x", (n, c, h, w), dtype)
        wt = gc.placeholder("w", (k, c // groups, ks, ks), dtype)
        y = gc.conv2d(x, wt, stride=stride, padding=pad, dilation=dil, groups=groups)
        gy = gc.placeholder("gy", y.shape, dtype)
        gx, gw = gc.grad(gc.sum(y * gy), [x, wt])
        g.set_outputs([y, gx, gw])
    return g


@pytest.mark.parametrize("dtype", ["f32", "f64", "f16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-C{}-{}x{}-K{}-k{}-s{}-p{}-d{}-g{}".format(*c))
def test_conv_and_its_gradients_equal_the_reference(case, dtype):
    g = _graph(case, dtype)
    rng = np.random.default_rng(sum(map(hash, map(str, case))) % 1000)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np_dtype) for v in g.inputs}
    want = gc.compile(g, backend="reference")(**feeds)
    got = gc.compile(g, backend="llvm")(**feeds)
    for name, a, b in zip(("y", "dx", "dw"), got, want):
        scale = max(np.abs(b.astype(np.float64)).max(), 1.0)
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=0,
                                   atol=TOL[dtype] * scale, err_msg=f"{name} {dtype} {case}")


def test_scratch_is_per_run_not_per_batch():
    """The point of the per-image kernels: scratch grows with min(N, RUNS), not with N."""
    from graphc.compile import prepare
    from graphc.passes.lower import lower

    def arena(n):
        work, _ = prepare(_graph((n, 8, 16, 16, 8, 3, 1, 1, 1, 1), "f32"))
        return lower(work).arena_bytes
    small, big = arena(RUNS), arena(8 * RUNS)
    # everything else (x, y, gy, dx views) scales with N; columns (9x the image) must not
    per_image_io = 4 * (8 * 16 * 16) * 4
    assert big - small <= 7 * RUNS * per_image_io


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-C{}-{}x{}-K{}-k{}-s{}-p{}-d{}-g{}".format(*c))
def test_bias_activation_and_residual_epilogues_equal_the_reference(case, dtype):
    """conv -> + bias -> relu -> + residual fuses into the convolution kernel (the GEMM
    epilogue, the f16 conversion loop, or the depthwise sum) and computes what the
    reference does."""
    from graphc.compile import prepare
    from graphc.passes.lower import lower
    n, c, h, w, k, ks, stride, pad, dil, groups = case
    g = gc.Graph("conv_epilogue")
    with g:
        x = gc.placeholder("x", (n, c, h, w), dtype)
        wt = gc.placeholder("w", (k, c // groups, ks, ks), dtype)
        b = gc.placeholder("b", (k,), dtype)
        y = gc.conv2d(x, wt, b, stride=stride, padding=pad, dilation=dil, groups=groups)
        r = gc.placeholder("r", y.shape, dtype)
        g.set_outputs([gc.relu(y) + r])
    work, _ = prepare(g)
    from graphc.passes.manager import Pipeline, standard_passes
    Pipeline(standard_passes(2, ("legalize", "fusion"))).run(work)
    kernels = lower(work, fuse_ops=None).kernels
    if groups in (1, k):  # other grouped results index the bias over (group, row): not fused
        assert len(kernels) == 1 and kernels[0].name.endswith("_fused"), [k.name for k in kernels]
    rng = np.random.default_rng(7)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype.np_dtype) for v in g.inputs}
    want = gc.compile(g, backend="reference")(**feeds)[0].astype(np.float64)
    got = gc.compile(g, backend="llvm")(**feeds)[0].astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * max(np.abs(want).max(), 1.0))


def test_each_forward_path_is_taken():
    """The cases above reach every forward lowering; a change of the thresholds that
    routes them elsewhere must update the cases, or a path goes untested."""
    from graphc.compile import prepare
    from graphc.passes.lower import lower

    def text(case):
        n, c, h, w, k, ks, stride, pad, dil, groups = case
        g = gc.Graph("conv")
        with g:
            y = gc.conv2d(gc.placeholder("x", (n, c, h, w), "f32"), gc.placeholder("w", (k, c // groups, ks, ks), "f32"),
                          stride=stride, padding=pad, dilation=dil, groups=groups)
            g.set_outputs([y])
        work, _ = prepare(g)
        return str(lower(work, gemm_panels={"f32": 16}))
    chunked, packed, pointwise, direct, strided_direct = (text(c) for c in CASES[-5:])
    assert "for chunk" in chunked and "gemm" in chunked and "panels=" not in chunked  # 20 columns
    assert "for chunk" in packed and "panels=16" in packed
    assert "gemm" in pointwise and "scratch" not in pointwise  # no columns: the image itself
    assert "gemm" not in direct and "gemm" not in strided_direct
    batched = text(CASES[1])
    assert "gemm" in batched and "for run" not in batched  # one GEMM after all images, no runs
    assert all("panels=16" in text(c) and "for run" not in text(c) for c in CASES[7:10])


DENSE_CASES = [  # (N, C, H, W, K, kernel, stride, padding, dilation): images within one window
    (2, 16, 2, 2, 24, 3, 1, 1, 1),      # ResNet's last stage: 3x3 over 2x2 (96 columns: panels)
    (5, 8, 1, 1, 8, 3, 1, 1, 1),        # 1x1 images: only the centre tap is real
]
# within one window, but some output does not read some input: a dense map would multiply
# that input by a structural zero (0 * inf = NaN), so these run as convolutions
NOT_DENSE_CASES = [
    (2, 3, 3, 3, 4, 3, 1, 1, 1),        # 3x3 over 3x3: only the centre output sees every input
    (1, 4, 3, 3, 6, 3, 2, 1, 1),        # strided
    (3, 3, 2, 3, 4, 3, 1, (2, 2, 1, 1), 2),  # dilated, uneven padding, not square
    (1, 1, 2, 1, 2, (2, 1), 1, (0, 0, 0, 1), 1),  # found by the fuzzer (seed 2831812521)
]


@pytest.mark.parametrize("panels", [True, False])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case", DENSE_CASES, ids=lambda c: "N{}-C{}-{}x{}-K{}-k{}-s{}-p{}-d{}".format(*c))
def test_constant_weight_small_image_runs_as_one_dense_map(case, dtype, panels):
    """A constant weight over images no larger than its window becomes the dense matrix of
    the convolution (built at lowering time, in the GEMM's panels or row-major): one GEMM
    with the bias, relu and residual in its epilogue, equal to the reference."""
    from graphc.backends.llvm import gemm_panels
    from graphc.backends.llvm.runtime import LLVMExecutable
    from graphc.compile import optimize_graph
    from graphc.passes.lower import lower
    n, c, h, w, k, ks, stride, pad, dil = case
    rng = np.random.default_rng(3)
    np_dt = np.dtype({"f32": np.float32, "f64": np.float64}[dtype])
    g = gc.Graph("dense")
    with g:
        x = gc.placeholder("x", (n, c, h, w), dtype)
        y = gc.conv2d(x, gc.constant(rng.standard_normal((k, c, ks, ks)).astype(np_dt)),
                      gc.constant(rng.standard_normal(k).astype(np_dt)), stride=stride, padding=pad, dilation=dil)
        r = gc.placeholder("r", y.shape, dtype)
        g.set_outputs([gc.relu(y) + r])
    work, single, _ = optimize_graph(g, backend="llvm")
    prog = lower(work, fuse_ops=None, plan=True, gemm_panels=gemm_panels() if panels else None)
    (kernel,) = prog.kernels
    assert kernel.name.endswith("_fused") and "derived" in str(prog)
    width = gemm_panels()[dtype]  # panels when the columns (K*OH*OW) fill whole ones
    assert ("panels=" in str(kernel)) == (panels and y.type.size // n % width == 0)
    assert "scratch" not in str(prog)
    # the matrix off a vector boundary: the runtime must align panels it hands the GEMM
    (name,) = [b for b in prog.constants if b.startswith("derived")]
    raw = np.empty(prog.constants[name].size + 1, np_dt)
    raw[1:] = prog.constants[name]
    prog.constants[name] = raw[1:]
    feeds = {"x": rng.standard_normal(x.shape).astype(np_dt), "r": rng.standard_normal(r.shape).astype(np_dt)}
    want = gc.compile(g, backend="reference")(**feeds)[0]
    got = LLVMExecutable(work, prog, single_output=single, cache=False)(**feeds)
    got = got[0] if isinstance(got, (tuple, list)) else got
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("case", DENSE_CASES + NOT_DENSE_CASES,
                         ids=lambda c: "N{}-C{}-{}x{}-K{}-k{}-s{}-p{}-d{}".format(*c))
def test_nan_and_inf_reach_only_the_outputs_that_read_them(case):
    """One input element inf, another NaN: the outputs that are NaN or inf are the
    reference's, whether the convolution ran as a dense map or not."""
    n, c, h, w, k, ks, stride, pad, dil = case
    kh, kw = ks if isinstance(ks, tuple) else (ks, ks)
    rng = np.random.default_rng(5)
    g = gc.Graph("nonfinite")
    with g:
        x = gc.placeholder("x", (n, c, h, w), "f64")
        g.set_outputs([gc.conv2d(x, gc.constant(rng.standard_normal((k, c, kh, kw))),
                                 stride=stride, padding=pad, dilation=dil)])
    xv = rng.standard_normal((n, c, h, w))
    xv.flat[0], xv.flat[-1] = np.inf, np.nan
    want = gc.compile(g, backend="reference")(xv)[0]
    got = gc.compile(g, backend="llvm")(xv)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)


def test_dense_map_only_where_every_input_is_a_tap_of_every_output():
    from graphc.compile import prepare
    from graphc.passes.lower import lower
    for case, dense in [(c, True) for c in DENSE_CASES] + [(c, False) for c in NOT_DENSE_CASES]:
        n, c, h, w, k, ks, stride, pad, dil = case
        kh, kw = ks if isinstance(ks, tuple) else (ks, ks)
        g = gc.Graph("conv")
        with g:
            g.set_outputs([gc.conv2d(gc.placeholder("x", (n, c, h, w), "f32"),
                                     gc.constant(np.ones((k, c, kh, kw), np.float32)),
                                     stride=stride, padding=pad, dilation=dil)])
        work, _ = prepare(g)
        assert ("derived" in str(lower(work))) == dense, case


def test_dense_map_only_for_constant_weights_within_one_window():
    from graphc.compile import prepare
    from graphc.passes.lower import lower

    def text(h, const):
        g = gc.Graph("conv")
        with g:
            wv = np.ones((4, 4, 3, 3), np.float32)
            wt = gc.constant(wv) if const else gc.placeholder("w", wv.shape, "f32")
            g.set_outputs([gc.conv2d(gc.placeholder("x", (2, 4, h, h), "f32"), wt, padding=1)])
        work, _ = prepare(g)
        return str(lower(work))
    assert "derived" in text(2, True)
    assert "derived" not in text(4, True) and "derived" not in text(2, False)  # 16 > 9 taps; a parameter


@pytest.mark.parametrize("groups", [1, 2])
def test_padding_sums_to_plus_zero(groups):
    """A window over padding only sums to +0 as numpy's does (it was -0 from 0 * negative
    weight, and rsqrt of it -inf where the reference says +inf); found by the fuzzer."""
    g = gc.Graph("pad_zero")
    with g:
        x = gc.placeholder("x", (1, 2, 2, 3))
        w = gc.constant(-np.abs(np.random.default_rng(0).standard_normal((2, 2 // groups, 1, 1)))
                        .astype(np.float32))
        g.set_outputs([gc.rsqrt(gc.conv2d(x, w, padding=1, groups=groups))])
    xv = np.abs(np.random.default_rng(1).standard_normal((1, 2, 2, 3))).astype(np.float32)
    want = gc.compile(g, backend="reference")(xv)[0]
    got = gc.compile(g, backend="llvm")(xv)[0]
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
