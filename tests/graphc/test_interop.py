"""Other libraries' arrays at the boundary: DLPack, __array__ and __cuda_array_interface__.

The fakes below speak exactly one protocol each (over a numpy array's own memory), so the
paths are tested without torch, JAX or CuPy installed; a torch test runs where torch is.
Zero-copy is checked by memory address: the array the executable runs on starts at the
producer's buffer.
"""
from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.interop import host_array
from graphc.jit import flatten


class DLPackOnly:
    """A host tensor that only speaks DLPack (as a torch CPU tensor or a JAX CPU array)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()

    def __hash__(self):  # hashable, as torch tensors are: must not become a static value
        return id(self)


class ArrayOnly:
    """An object that only has __array__ (pandas, xarray, ...)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._arr = arr

    def __array__(self, dtype=None, copy=None):
        return self._arr if dtype is None else self._arr.astype(dtype)


class CudaOnly:
    """A device array seen through __cuda_array_interface__ (CuPy, numba, torch CUDA)."""

    def __init__(self, shape, typestr="<f4") -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr,
                                         "data": (0x7F0000000000, False), "version": 3}


class DLPackCuda:
    """A DLPack tensor on a CUDA device (kDLCUDA = 2)."""

    def __dlpack__(self, **kwargs):
        raise BufferError("device memory")

    def __dlpack_device__(self):
        return (2, 0)


def _graph():
    g = gc.Graph("interop")
    with g:
        x = gc.placeholder("x", (3, 4), "f32")
        y = x * 2.0 + 1.0
    return g, y


@pytest.fixture(scope="module")
def llvm_exe():
    g, y = _graph()
    return gc.compile(g, y)  # the default backend: llvm


def test_dlpack_input_is_viewed_in_place_and_computes_right(llvm_exe):
    a = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    t = DLPackOnly(a)
    assert llvm_exe.bind((t,), {})["x"].ctypes.data == a.ctypes.data  # zero-copy
    np.testing.assert_allclose(llvm_exe(t), a * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(llvm_exe(x=t), a * 2 + 1, rtol=1e-6)  # by name: the generic path


def test_array_interface_input_is_viewed_in_place(llvm_exe):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert llvm_exe.bind((ArrayOnly(a),), {})["x"].ctypes.data == a.ctypes.data
    np.testing.assert_allclose(llvm_exe(ArrayOnly(a)), a * 2 + 1)


def test_dlpack_of_another_dtype_or_layout_converts_with_a_copy():
    g, y = _graph()
    exe = gc.compile(g, y, backend="reference")
    a = np.random.default_rng(1).standard_normal((3, 8))
    strided = a[:, ::2]  # f64, not contiguous: converted, so a copy
    got = exe.bind((DLPackOnly(strided),), {})["x"]
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_allclose(exe(DLPackOnly(strided)), strided * 2 + 1, rtol=1e-6)
    with pytest.raises(gc.InputError, match="expected dtype f32"):
        exe(DLPackOnly(np.ones((3, 4), np.int32)))  # ints into a float input: refused as for numpy
    with pytest.raises(gc.InputError, match="expected shape"):
        exe(DLPackOnly(np.ones((4, 3), np.float32)))


@pytest.mark.parametrize("device", [CudaOnly((3, 4)), DLPackCuda()], ids=["cuda_array_interface", "dlpack_cuda"])
def test_device_arrays_on_a_host_backend_say_to_move_them(llvm_exe, device):
    with pytest.raises(gc.InputError, match=r"CUDA device memory.*host.*backend='cuda'"):
        llvm_exe(device)
    with pytest.raises(gc.InputError, match="input 'x'"):
        llvm_exe(x=device)


def test_jit_traces_foreign_arrays_as_arrays_not_static_values():
    calls = []

    @gc.jit(backend="reference")
    def f(x, w):
        calls.append(1)
        return np.tanh(x @ w)

    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((3, 2)).astype(np.float32)
    np.testing.assert_allclose(f(DLPackOnly(x), ArrayOnly(w)), np.tanh(x @ w), rtol=1e-5)
    x2 = rng.standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(f(DLPackOnly(x2), w), np.tanh(x2 @ w), rtol=1e-5)
    assert len(calls) == 1 and f.retraces == 0  # new objects, same types: the cached trace
    leaves, paths = [], []
    flatten({"a": DLPackOnly(x)}, "p", leaves, paths)
    assert leaves[0].ctypes.data == x.ctypes.data and paths == ["p['a']"]  # zero-copy


def test_jit_refuses_device_arrays_before_tracing_on_llvm():
    calls = []

    @gc.jit
    def f(x):
        calls.append(1)
        return x + 1

    with pytest.raises(gc.InputError, match="CUDA device memory"):
        f(CudaOnly((2,)))
    assert not calls  # refused at the boundary, nothing traced or compiled
    leaves: list = []
    flatten(CudaOnly((2, 5), "<f8"), "x", leaves, [], device_ok=True)  # the cuda backend's view
    assert isinstance(leaves[0], CudaOnly)


def test_unreadable_objects_are_input_errors():
    class Broken:
        def __dlpack__(self, **kw):
            raise RuntimeError("Can't export tensors that require gradient, use tensor.detach()")

        def __dlpack_device__(self):
            return (1, 0)

        def __array__(self, dtype=None, copy=None):
            raise RuntimeError("Can't call numpy() on Tensor that requires grad")

    with pytest.raises(gc.InputError, match="detach"):
        host_array("input 'x'", Broken())


def test_torch_cpu_tensors_are_zero_copy_when_torch_is_installed(llvm_exe):
    torch = pytest.importorskip("torch")
    t = torch.randn(3, 4)
    assert llvm_exe.bind((t,), {})["x"].ctypes.data == t.data_ptr()
    np.testing.assert_allclose(llvm_exe(t), t.numpy() * 2 + 1, rtol=1e-6)

    @gc.jit
    def f(x):
        return x * 2.0 + 1.0
    np.testing.assert_allclose(f(t), t.numpy() * 2 + 1, rtol=1e-6)
