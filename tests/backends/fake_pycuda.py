"""A stand-in for pycuda.driver and pycuda.gpuarray over host memory and the CPU emulator,
so the CUDA runtime's own logic (device arena and offsets, staging of inputs, resident
parameters and their swap with update buffers, the status flag, device inputs and
outputs) runs in CI. Only the calls the runtime makes exist, with pycuda's documented
signatures and preconditions: asynchronous copies insist on page-locked host memory,
allocations of zero bytes fail, launches need `prepare` first.

`install(monkeypatch, workdir)` replaces the modules and makes the runtime's
`compile_module` build the emulator library instead of calling nvcc; the "cubin" it
returns is the library's path, which `module_from_buffer` loads.
"""
from __future__ import annotations

import ctypes
import hashlib
import sys
import types
from pathlib import Path

import numpy as np

from tests.backends import cuda_emulator as emu


class Error(Exception):
    pass


class LogicError(Error):
    pass


MEMORY_LIMIT: list[int] = []  # set [n] to refuse allocations beyond n bytes (out of memory)


class DeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise LogicError("cuMemAlloc failed: invalid argument")
        if MEMORY_LIMIT and nbytes > MEMORY_LIMIT[0]:
            raise Error("cuMemAlloc failed: out of memory")
        self._mem = np.full(nbytes + 256, 0xAB, np.uint8)  # garbage, as fresh device memory
        self._ptr = self._mem.ctypes.data + (-self._mem.ctypes.data) % 256
        self.nbytes = nbytes

    def __int__(self) -> int:
        return self._ptr

    __index__ = __int__


class _Pinned(np.ndarray):
    """Page-locked host memory (a marker subclass: views stay pinned)."""


def mem_alloc(nbytes: int) -> DeviceAllocation:
    return DeviceAllocation(nbytes)


def pagelocked_empty(shape, dtype) -> np.ndarray:
    return np.empty(shape, dtype).view(_Pinned)


def pagelocked_zeros(shape, dtype) -> np.ndarray:
    return np.zeros(shape, dtype).view(_Pinned)


def _host(buf: np.ndarray, pinned: bool) -> np.ndarray:
    if pinned and not isinstance(buf, _Pinned):
        raise LogicError("asynchronous copies need page-locked host memory")
    if not buf.flags.c_contiguous:
        raise LogicError("host buffer must be contiguous")
    return buf


def memcpy_htod(dest, src) -> None:
    src = _host(np.asarray(src), False)
    ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)


def memcpy_dtoh(dest, src) -> None:
    dest = _host(dest, False)
    ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


def memcpy_htod_async(dest, src, stream=None) -> None:
    src = _host(src, True)
    ctypes.memmove(int(dest), src.ctypes.data, src.nbytes)


def memcpy_dtoh_async(dest, src, stream=None) -> None:
    dest = _host(dest, True)
    ctypes.memmove(dest.ctypes.data, int(src), dest.nbytes)


def memcpy_dtod_async(dest, src, size, stream=None) -> None:
    ctypes.memmove(int(dest), int(src), size)


class Stream:
    handle = 0x57

    def synchronize(self) -> None:
        pass


class Event:
    def record(self, stream=None) -> None:
        import time
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def time_till(self, end: "Event") -> float:
        return (end.t - self.t) * 1e3


class Context:
    _stack: list = []

    def push(self) -> None:
        Context._stack.append(self)

    @staticmethod
    def pop() -> None:
        if not Context._stack:
            raise LogicError("context stack is empty")
        Context._stack.pop()

    @staticmethod
    def synchronize() -> None:
        pass


class device_attribute:
    MULTIPROCESSOR_COUNT = "MULTIPROCESSOR_COUNT"


class Device:
    @staticmethod
    def count() -> int:
        return 1

    def __init__(self, index: int) -> None:
        self.index = index

    def compute_capability(self) -> tuple[int, int]:
        return 8, 0

    def name(self) -> str:
        return "emulated GPU"

    def get_attribute(self, attr) -> int:
        return 4

    def retain_primary_context(self) -> Context:
        return Context()


def init(flags: int = 0) -> None:
    pass


class Function:
    def __init__(self, lib, name: str) -> None:
        self._fn = getattr(lib, f"gcemu_{name}")
        self.name = name
        self._nargs = None

    def prepare(self, arg_types: str) -> "Function":
        self._nargs = len(arg_types)
        return self

    def prepared_async_call(self, grid, block, stream, *args) -> None:
        if self._nargs is None:
            raise LogicError("prepared_async_call before prepare")
        if len(args) != self._nargs:
            raise LogicError(f"{self.name}: {len(args)} arguments, prepared for {self._nargs}")
        if Context._stack == []:
            raise LogicError("no current context")
        ptrs = (ctypes.c_void_p * max(len(args), 1))(*[int(a) for a in args])
        gx, gy, gz = (tuple(grid) + (1, 1))[:3]
        if self._fn(ptrs, gx, gy, gz, block[0]):
            raise Error(f"{self.name}: launch failed (barrier timeout)")


class Module:
    def __init__(self, lib) -> None:
        self._lib = lib

    def get_function(self, name: str) -> Function:
        return Function(self._lib, name)


def module_from_buffer(buffer) -> Module:
    return Module(ctypes.CDLL(bytes(buffer).decode()))


class GPUArray:
    """The part of pycuda.gpuarray.GPUArray the runtime and the tests use."""

    def __init__(self, shape, dtype, gpudata=None) -> None:
        self.shape = tuple(shape) if not isinstance(shape, int) else (shape,)
        self.dtype = np.dtype(dtype)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.gpudata = gpudata if gpudata is not None else DeviceAllocation(max(self.size * self.dtype.itemsize, 1))
        self.flags = types.SimpleNamespace(c_contiguous=True, f_contiguous=len(self.shape) <= 1)

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (int(self.gpudata), False),
                "version": 3, "strides": None}

    def get(self) -> np.ndarray:
        out = np.empty(self.shape, self.dtype)
        memcpy_dtoh(out, self.gpudata)
        return out


def to_gpu(arr) -> GPUArray:
    arr = np.ascontiguousarray(arr)
    g = GPUArray(arr.shape, arr.dtype)
    memcpy_htod(g.gpudata, arr)
    return g


def install(monkeypatch, workdir: Path) -> None:
    """Make `import pycuda.driver` / `pycuda.gpuarray` return these fakes and compile
    generated modules with the emulator (cached by source in `workdir`)."""
    from graphc.backends.cuda import runtime
    pkg = types.ModuleType("pycuda")
    drv = types.ModuleType("pycuda.driver")
    ga = types.ModuleType("pycuda.gpuarray")
    this = sys.modules[__name__]
    for name in ("Error", "LogicError", "DeviceAllocation", "mem_alloc", "pagelocked_empty",
                 "pagelocked_zeros", "memcpy_htod", "memcpy_dtoh", "memcpy_htod_async",
                 "memcpy_dtoh_async", "memcpy_dtod_async", "Stream", "Event", "Context", "device_attribute", "Device", "init",
                 "module_from_buffer"):
        setattr(drv, name, getattr(this, name))
    ga.GPUArray, ga.to_gpu = GPUArray, to_gpu
    pkg.driver, pkg.gpuarray = drv, ga
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setitem(sys.modules, "pycuda.gpuarray", ga)
    monkeypatch.setattr(runtime, "_device", {})

    def compile_module(module, arch, cache=None):
        key = hashlib.sha256(module.source.encode()).hexdigest()[:16]
        d = workdir / key
        lib = d / "emu.so"
        if not lib.exists():
            d.mkdir(parents=True, exist_ok=True)
            emu.build(module.source, module.functions, d)
        return str(lib).encode(), "built"

    monkeypatch.setattr(runtime, "compile_module", compile_module)
