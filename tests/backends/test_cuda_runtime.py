"""The CUDA backend on a GPU equals the reference interpreter (the conformance suite).

Run on a machine with an NVIDIA GPU, pycuda and nvcc: `pytest -m cuda`. Without any of
them every test here is skipped (the reason says which is missing). Tolerances are the
LLVM conformance suite's (test_llvm_conformance.TOL); GEMM and reductions accumulate in a
different order than numpy, f16 matrix products run on tensor cores with f32 accumulation.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.ir import all_ops

from tests.backends.cuda_programs import gemm_graphs, reduction_graphs, with_outputs
from tests.backends.test_llvm_conformance import BCAST, ODD, _mlp_step, assert_backends_agree
from tests.examples import digits_cnn, mlp_step
from tests.ir.random_graphs import build_random_graph, op_example


def _why_not() -> str:
    try:
        from graphc.backends.cuda.runtime import cuda_available
    except Exception as e:  # pragma: no cover - import errors are reported as the reason
        return f"CUDA backend import failed: {e}"
    ok, why = cuda_available()
    return "" if ok else why


_REASON = _why_not()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(bool(_REASON), reason=_REASON or "ok")]


def assert_agrees(graph, feeds=None, outputs=None, tol=None):
    return assert_backends_agree(graph, feeds, outputs, tol, backend="cuda")


@pytest.mark.parametrize("op", sorted(all_ops()))
@pytest.mark.parametrize("seed", range(4))
def test_every_op_matches_reference(op, seed):
    g = op_example(op, seed=seed)
    if g is None:
        pytest.skip(f"no example for {op}")
    assert_agrees(with_outputs(g))


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_every_op_in_f16_matches_reference(op):
    g = op_example(op, seed=0, dtypes=("f16",))
    if g is None:
        pytest.skip(f"no f16 example for {op}")
    assert_agrees(with_outputs(g))


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "sigmoid", "gelu", "erf", "sin", "cos", "sqrt",
                                "rsqrt", "relu", "abs", "neg", "sign"])
@pytest.mark.parametrize("shape", ODD)
@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_unary_odd_sizes(op, shape, dt):
    g = gc.Graph("u")
    with g:
        x = gc.placeholder("x", shape, dt)
        y = gc.ops.emit(op, x)
    xv = np.random.default_rng(len(shape)).standard_normal(shape).astype(gc.dtypes.dtype(dt).np_dtype) * 3
    if op in ("log", "sqrt", "rsqrt"):
        xv = np.abs(xv) + 0.01
    assert_agrees(g, {"x": xv}, [y])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "less"])
@pytest.mark.parametrize("sa,sb", BCAST)
def test_binary_broadcasting(op, sa, sb):
    g = gc.Graph("b")
    with g:
        a = gc.placeholder("a", sa, "f32")
        b = gc.placeholder("b", sb, "f32")
        y = gc.ops.emit(op, a, b)
    rng = np.random.default_rng(3)
    av, bv = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    if op == "pow":
        av = np.abs(av) + 0.1
    assert_agrees(g, {"a": av, "b": bv}, [y])


@pytest.mark.parametrize("name_graph", list(gemm_graphs()) + list(reduction_graphs()),
                         ids=lambda ng: ng[0])
def test_gemms_and_reductions(name_graph):
    _, g = name_graph
    tol = 2e-2 if "f16" in g.name else None  # f16 inputs, long dot products
    assert_agrees(g, tol=tol)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (3, 17, 5), (64, 1, 33), (100, 130, 70), (257, 65, 129),
                                   (512, 512, 512)])
def test_matmul_sizes_and_transposes(m, n, k):
    g = gc.Graph("mm")
    with g:
        a = gc.placeholder("a", (m, k), "f32")
        b = gc.placeholder("b", (k, n), "f32")
        outs = [a @ b, gc.ops.emit("matmul", gc.transpose(a), b, transpose_a=True),
                gc.ops.emit("matmul", a, gc.transpose(b), transpose_b=True)]
    assert_agrees(g, outputs=outs, tol=1e-3)


def test_seeded_random_graphs_match_reference():
    for seed in range(30):
        assert_agrees(with_outputs(build_random_graph(seed, max_nodes=10, special_values=False)))


@pytest.mark.parametrize("opt", [gc.optim.SGD(0.1, momentum=0.9), gc.optim.Adam(1e-3)])
def test_mlp_train_steps_track_the_reference(opt):
    g = _mlp_step(opt)
    ref, dev = gc.compile(g, backend="reference"), gc.compile(g, backend="cuda")
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.standard_normal((32, 20)).astype(np.float32)
        t = rng.integers(0, 10, 32).astype(np.int32)
        (lr,), (ld,) = ref(x=x, t=t), dev(x=x, t=t)
        np.testing.assert_allclose(ld, lr, rtol=1e-4)
    for k in ref.params:
        np.testing.assert_allclose(dev.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


def test_cnn_train_step_tracks_the_reference():
    ex = digits_cnn()
    g = ex.build_train_step()
    ref, dev = gc.compile(g, backend="reference"), gc.compile(g, backend="cuda")
    images, labels = gc.load_digits()
    for i in range(3):
        x, t = images[i * ex.BATCH:(i + 1) * ex.BATCH, None], labels[i * ex.BATCH:(i + 1) * ex.BATCH]
        (lr, logits_r), (ld, logits_d) = ref(x=x, t=t), dev(x=x, t=t)
        np.testing.assert_allclose(ld, lr, rtol=1e-4)
        np.testing.assert_allclose(logits_d, logits_r, rtol=1e-3, atol=1e-4)
    for k in ref.params:
        np.testing.assert_allclose(dev.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


def test_benchmark_mlp_step_runs_and_tracks_the_reference():
    g = mlp_step().build()
    ref, dev = gc.compile(g, backend="reference"), gc.compile(g, backend="cuda")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    t = rng.integers(0, 10, 256).astype(np.int32)
    (lr,), (ld,) = ref(x=x, t=t), dev(x=x, t=t)
    np.testing.assert_allclose(ld, lr, rtol=1e-3)
    for k in ref.params:
        np.testing.assert_allclose(dev.params[k], ref.params[k], rtol=1e-3, atol=1e-5)


# -- the runtime's boundary ---------------------------------------------------------------------

def _square_graph():
    g = gc.Graph("sq")
    with g:
        x = gc.placeholder("x", (4, 5), "f32")
        g.set_outputs([x * x + 1.0])
    return g


def test_device_arrays_are_used_in_place_and_checked():
    import pycuda.gpuarray as gpuarray
    exe = gc.compile(_square_graph(), backend="cuda")
    xv = np.arange(20, dtype=np.float32).reshape(4, 5)
    with _active():
        xd = gpuarray.to_gpu(xv)
    (out,) = exe(xd)
    np.testing.assert_allclose(out, xv * xv + 1)
    with _active():
        wrong = gpuarray.to_gpu(xv.astype(np.float64))
        short = gpuarray.to_gpu(xv[:3])
    with pytest.raises(gc.GraphcError, match="dtype"):
        exe(wrong)
    with pytest.raises(gc.GraphcError, match="shape"):
        exe(short)


def test_torch_cuda_tensors_are_accepted_through_the_array_interface():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    exe = gc.compile(_square_graph(), backend="cuda")
    xv = np.arange(20, dtype=np.float32).reshape(4, 5)
    xt = torch.from_numpy(xv).cuda()
    torch.cuda.synchronize()
    (out,) = exe(xt)
    np.testing.assert_allclose(out, xv * xv + 1)


def test_device_outputs_stay_on_the_device():
    exe = gc.compile(_square_graph(), backend="cuda")
    exe.device_outputs = True
    xv = np.ones((4, 5), np.float32)
    (a,) = exe(xv)
    (b,) = exe(xv * 2)
    np.testing.assert_allclose(a.get(), xv * xv + 1)  # not overwritten by the second call
    np.testing.assert_allclose(b.get(), 4 * xv * xv + 1)


def test_bad_gather_index_is_an_error_not_a_crash():
    g = gc.Graph("gather")
    with g:
        table = gc.placeholder("table", (5, 3), "f32")
        ids = gc.placeholder("ids", (4,), "i32")
        y = gc.take(table, ids, axis=0)
    exe = gc.compile(g, y, backend="cuda")
    tv = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(exe(table=tv, ids=np.array([4, 0, 2, 2], np.int32)), tv[[4, 0, 2, 2]])
    with pytest.raises(gc.GraphcError, match="out of range"):
        exe(table=tv, ids=np.array([4, 0, 7, 2], np.int32))
    np.testing.assert_array_equal(exe(table=tv, ids=np.array([1, 1, 1, 1], np.int32)), tv[[1, 1, 1, 1]])


def test_parameters_live_on_the_device_and_read_back():
    g = gc.Graph("p")
    with g:
        x = gc.placeholder("x", (3,), "f32")
        w = gc.param("w", (3,), init=gc.init.zeros())
        g.set_outputs([x * w], updates={w: w + x})
    exe = gc.compile(g, backend="cuda")
    exe.params["w"] = np.array([1, 2, 3], np.float32)
    (y,) = exe(np.ones(3, np.float32))
    np.testing.assert_allclose(y, [1, 2, 3])
    np.testing.assert_allclose(exe.params["w"], [2, 3, 4])
    (y,) = exe(np.full(3, 2, np.float32))
    np.testing.assert_allclose(y, [4, 6, 8])
    np.testing.assert_allclose(exe.params["w"], [4, 5, 6])
    with pytest.raises(gc.GraphcError):
        exe.params["w"] = np.zeros(4, np.float32)


def test_second_compile_comes_from_the_cache():
    g = _square_graph()
    gc.compile(g, backend="cuda")
    again = gc.compile(g, backend="cuda")
    assert again.cubin_source in ("memory", "disk")


def _active():
    from graphc.backends.cuda.runtime import _Active, device
    return _Active(device()["context"])
