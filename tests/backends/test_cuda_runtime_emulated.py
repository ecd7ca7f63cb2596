"""The CUDA runtime's logic without a GPU: pycuda is replaced by a host-memory fake
(tests/backends/fake_pycuda.py) and kernels run in the CPU emulator, so compiling through
`gc.compile(backend="cuda")` and calling the executable exercises the real runtime code:
the arena and buffer offsets, input staging, resident parameters swapped with their update
buffers across training steps, the status flag, device inputs and device outputs."""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

from tests.backends import cuda_emulator as emu
from tests.backends import fake_pycuda
from tests.backends.test_llvm_conformance import _mlp_step

pytestmark = pytest.mark.skipif(not emu.available(), reason="no C++ compiler for the emulator")


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path_factory):
    fake_pycuda.install(monkeypatch, tmp_path_factory.getbasetemp() / "fake-gpu")


def test_adam_train_steps_track_the_reference(fake_gpu):
    g = _mlp_step(gc.optim.Adam(1e-2))
    ref, dev = gc.compile(g, backend="reference"), gc.compile(g, backend="cuda")
    rng = np.random.default_rng(0)
    for name in list(ref.params)[:2]:  # assigned values reach the device
        value = rng.standard_normal(ref.params[name].shape).astype(np.float32)
        ref.params[name] = dev.params[name] = value
    with pytest.raises(gc.GraphcError, match="shape"):
        dev.params[name] = np.zeros(3, np.float32)
    with pytest.raises(gc.GraphcError, match="missing input"):
        dev()
    for _ in range(3):
        x = rng.standard_normal((32, 20)).astype(np.float32)
        t = rng.integers(0, 10, 32).astype(np.int32)
        (lr,), (ld,) = ref(x=x, t=t), dev(x, t)
        np.testing.assert_allclose(ld, lr, rtol=1e-4)
    for k in ref.params:
        np.testing.assert_allclose(dev.params[k], ref.params[k], rtol=1e-3, atol=1e-5)
    assert "cuda:" in dev.report()


def test_gather_errors_device_inputs_and_outputs(fake_gpu):
    g = gc.Graph("gather")
    with g:
        table = gc.placeholder("table", (5, 3), "f32")
        ids = gc.placeholder("ids", (4,), "i32")
        y = gc.take(table, ids, axis=0) * 2.0
    exe = gc.compile(g, y, backend="cuda")
    tv = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(exe(tv, np.array([4, 0, 2, 2], np.int32)), 2 * tv[[4, 0, 2, 2]])
    with pytest.raises(gc.GraphcError, match="out of range"):
        exe(table=tv, ids=np.array([4, 0, 7, 2], np.int32))
    # the flag is cleared: the next good call succeeds; the table comes as a device array
    dev_table = fake_pycuda.to_gpu(tv)
    np.testing.assert_array_equal(exe(dev_table, np.array([1, 1, 3, 0], np.int32)), 2 * tv[[1, 1, 3, 0]])
    with pytest.raises(gc.GraphcError, match="dtype"):
        exe(fake_pycuda.to_gpu(tv.astype(np.float64)), np.zeros(4, np.int32))
    assert exe.gpu_seconds(tv, np.array([0, 1, 2, 3], np.int32), repeat=2) > 0
    np.testing.assert_array_equal(exe(tv, np.array([2, 2, 0, 1], np.int32)), 2 * tv[[2, 2, 0, 1]])
    # DLPack: (with the fake driver, device memory is host memory, so a numpy array's
    # DLPack capsule presented as a CUDA tensor exercises the parsing)
    np.testing.assert_array_equal(exe(_AsCudaDLPack(tv), np.array([3, 2, 1, 0], np.int32)), 2 * tv[::-1][1:])
    with pytest.raises(gc.GraphcError, match="contiguous"):
        exe(_AsCudaDLPack(np.arange(30, dtype=np.float32).reshape(5, 6)[:, ::2]), np.zeros(4, np.int32))
    exe.device_outputs = True
    a = exe(tv, np.array([0, 1, 2, 3], np.int32))
    b = exe(tv, np.array([3, 3, 3, 3], np.int32))
    np.testing.assert_array_equal(a.get(), 2 * tv[[0, 1, 2, 3]])  # not overwritten by b
    np.testing.assert_array_equal(b.get(), 2 * tv[[3, 3, 3, 3]])


def test_empty_tensors(fake_gpu):
    g = gc.Graph("empty")
    with g:
        x = gc.placeholder("x", (0, 3), "f32")
        g.set_outputs([x * 2.0, gc.sum(x, axis=0), gc.max(x, axis=1)])
    dev, ref = gc.compile(g, backend="cuda"), gc.compile(g, backend="reference")
    xv = np.zeros((0, 3), np.float32)
    for got, want in zip(dev(xv), ref(x=xv)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_out_of_device_memory_is_a_clear_error(fake_gpu, monkeypatch):
    monkeypatch.setattr(fake_pycuda, "MEMORY_LIMIT", [1000])
    g = gc.Graph("big")
    with g:
        x = gc.placeholder("x", (100, 100), "f32")
        g.set_outputs([gc.exp(x)])
    with pytest.raises(gc.GraphcError, match="device memory"):
        gc.compile(g, backend="cuda")


class _AsCudaDLPack:
    """A numpy array that claims to live on CUDA device 0 (DLPack protocol)."""

    def __init__(self, arr: np.ndarray) -> None:
        self.arr = arr

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        return self.arr.__dlpack__()
