"""CUDA runtime (pycuda): compile a program through the cache, keep its state on the GPU,
run a call as a sequence of asynchronous launches on one stream.

Device memory, allocated once per executable (in the device's primary context, shared
with PyTorch, CuPy and other libraries that use it):
    * one arena of `Program.arena_bytes` for every temp (the memory pass's plan, views
      included; codegen.CudaModule.storage gives each buffer's root and byte offset);
    * one allocation per parameter, resident across calls: a training step writes the new
      value into its update buffer, and the two allocations then swap roles (no copy);
    * constants, uploaded once; one staging allocation per input; one per result buffer.
A call: inputs that are host arrays are checked and converted (Executable's rules),
copied into pinned staging memory and sent asynchronously; inputs that already live on
the device (pycuda `GPUArray`, anything with `__cuda_array_interface__` or `__dlpack__`
on a CUDA device: PyTorch, CuPy, JAX, Numba) are used in place after a shape, dtype and
contiguity check (they are never converted: a wrong dtype is an InputError; one whose
address is not 16-byte aligned, as a slice can be, is copied on the device into the
staging buffer, since vectorised kernels assume aligned bases). Then the
status flag is zeroed, every kernel is launched in order on the executable's stream, the
results and the status flag come back into pinned memory, and one stream synchronisation
ends the call. Host<->device copies happen only at this boundary. `device_outputs=True`
returns the results as pycuda GPUArrays instead (fresh allocations, nothing copied).

Calls are serialised by the executable's lock (one arena, one stream). Errors: a kernel
that flags bad data (an index out of range) raises KernelError with the registered message
after the call; a CUDA error (launch failure, illegal address) raises CudaRuntimeError
naming the program (the CUDA context may be unusable afterwards, as CUDA defines).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any, Iterator, Mapping

import numpy as np

from ...ir import kernel as K
from ...ir.errors import GraphcError, InputError
from ...ir.types import format_shape
from ..errors import KernelError  # the LLVM backend's too (re-exported: runtime.KernelError)
from ..executable import Executable, convert_argument
from . import codegen, nvcc


class CudaUnavailable(GraphcError):
    """pycuda, a CUDA device or nvcc is missing."""


class CudaRuntimeError(GraphcError):
    """The CUDA driver reported an error while running a compiled program."""


ALIGN = 16  # bytes: vectorised kernels load 16 bytes at a time from every buffer base

# -- the device ----------------------------------------------------------------------------

_device_lock = threading.Lock()
_device: dict[str, Any] = {}  # explicit cache: the driver module, context, arch of the device


def _driver():
    try:
        import pycuda.driver as drv
    except ImportError as e:
        raise CudaUnavailable(f"the CUDA backend needs pycuda (pip install 'graphc-compiler[cuda]'): {e}") from None
    return drv


def device() -> dict[str, Any]:
    """The primary context of device $GRAPHC_CUDA_DEVICE (default 0), retained once per
    process: {'drv', 'context', 'arch', 'name', 'sms'}."""
    with _device_lock:
        if not _device:
            drv = _driver()
            choice = os.environ.get("GRAPHC_CUDA_DEVICE", "0").strip() or "0"
            if not choice.isdigit():
                raise CudaUnavailable(f"GRAPHC_CUDA_DEVICE={choice!r} is not a device number")
            index = int(choice)
            try:
                drv.init()
                count = drv.Device.count()
                if not 0 <= index < count:
                    raise CudaUnavailable(f"no CUDA device {index} ({count} found)")
                dev = drv.Device(index)
                major, minor = dev.compute_capability()
                info = dict(drv=drv, context=dev.retain_primary_context(), arch=f"sm_{major}{minor}",
                            name=dev.name(), sms=dev.get_attribute(drv.device_attribute.MULTIPROCESSOR_COUNT))
            except drv.Error as e:
                raise CudaUnavailable(f"CUDA device {index} cannot be used: {e}") from None
            _device.update(info)
        return _device


class _Active:
    """`with _Active(ctx):` makes the context current on this thread for the block."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    def __enter__(self):
        self.ctx.push()
        return self

    def __exit__(self, *exc) -> None:
        _device["drv"].Context.pop()


def cuda_available() -> tuple[bool, str]:
    """(usable, why not): pycuda imports, a device answers and nvcc is found."""
    try:
        device()
    except CudaUnavailable as e:
        return False, str(e)
    if nvcc.find_nvcc() is None:
        return False, "nvcc not found (set GRAPHC_NVCC or CUDA_HOME)"
    return True, ""


# -- compiling -------------------------------------------------------------------------------

def compile_module(module: codegen.CudaModule, arch: str, cache=None) -> tuple[bytes, str]:
    """(cubin, where): nvcc through the compile cache (memory + disk, like the LLVM
    backend's). The key is what the cubin depends on: the translation unit itself, the
    target, nvcc's version and flags."""
    from ..llvm.cache import default_cache

    def build() -> bytes:
        return nvcc.compile_cuda(module.source, arch, output="cubin")

    if cache is False:
        return build(), "built"
    h = hashlib.sha256()
    for part in ("graphc cuda", module.source, arch, nvcc.nvcc_version(), " ".join(nvcc.BASE_FLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    c = default_cache() if cache is None or cache is True else cache
    return c.get_or_build(h.hexdigest(), build)


# -- device arrays from other libraries ---------------------------------------------------------

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CUDA = 2
_DL_CODES = {0: "i", 1: "u", 2: "f", 6: "b"}  # kDLInt, kDLUInt, kDLFloat, kDLBool


def _dlpack_view(obj: Any, stream_handle: int) -> tuple[int, tuple, np.dtype, bool, Any]:
    """(pointer, shape, dtype, contiguous, keepalive) of a DLPack CUDA tensor."""
    try:
        capsule = obj.__dlpack__(stream=stream_handle)
    except TypeError:
        capsule = obj.__dlpack__()
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    t = _DLTensor.from_address(get(capsule, b"dltensor"))  # DLManagedTensor starts with it
    shape = tuple(t.shape[i] for i in range(t.ndim))
    kind = _DL_CODES.get(t.dtype.code)
    if kind is None or t.dtype.lanes != 1:
        raise InputError(f"DLPack tensor of unsupported element type (code {t.dtype.code}, "
                         f"{t.dtype.bits} bits x {t.dtype.lanes})")
    dt = np.dtype(bool) if kind == "b" else np.dtype(f"{kind}{t.dtype.bits // 8}")
    contiguous = True
    if t.strides:
        expect = 1
        for i in reversed(range(t.ndim)):
            if shape[i] != 1 and t.strides[i] != expect:
                contiguous = False
            expect *= shape[i]
    return (t.data or 0) + t.byte_offset, shape, dt, contiguous, capsule


def device_view(what: str, value: Any, want, stream_handle: int) -> tuple[int, Any] | None:
    """(device pointer, keepalive) when `value` lives on a CUDA device, else None. Checks
    shape, dtype (exact: nothing is converted on the device) and C contiguity."""
    gpuarray = sys.modules.get("pycuda.gpuarray")
    iface = getattr(value, "__cuda_array_interface__", None)
    if gpuarray is not None and isinstance(value, gpuarray.GPUArray):
        shape, dt = tuple(value.shape), np.dtype(value.dtype)
        ptr = int(value.gpudata) if value.size else 0
        contiguous = bool(value.flags.c_contiguous)
        keep = value
    elif iface is not None:
        shape = tuple(iface["shape"])
        dt = np.dtype(iface["typestr"])
        ptr = int(iface["data"][0] or 0)
        strides = iface.get("strides")
        contiguous = strides is None or strides == tuple(
            int(np.prod(shape[i + 1:], dtype=np.int64)) * dt.itemsize for i in range(len(shape)))
        if iface.get("stream") not in (None, 0):
            _device["drv"].Context.synchronize()  # producer's stream: wait for its work
        keep = value
    elif hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__") \
            and value.__dlpack_device__()[0] == _DL_CUDA:
        ptr, shape, dt, contiguous, keep = _dlpack_view(value, stream_handle)
    else:
        return None
    if shape != tuple(want.shape):
        raise InputError(f"{what}: expected shape {format_shape(want.shape)} ({want}), got device "
                         f"array of shape {format_shape(shape)}")
    if dt != want.dtype.np_dtype:
        raise InputError(f"{what}: expected dtype {want.dtype} ({want}), got a device array of "
                         f"{dt}; convert it on the device first")
    if not contiguous:
        raise InputError(f"{what}: device arrays must be C-contiguous")
    return ptr, keep


# -- parameters on the device ----------------------------------------------------------------

class _DeviceParams(MutableMapping):
    """Stands in for Executable._params: values live on the GPU; reading one copies it to
    the host (cached until a call changes it; read-only, since writing into a copy would
    silently change nothing), assigning one uploads it. The base class's ParamStore checks
    assigned values and holds the executable's lock when it assigns."""

    def __init__(self, exe: "CudaExecutable") -> None:
        self._exe = exe
        self._host: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        exe = self._exe
        if name not in exe._param_dev:
            raise KeyError(name)
        with exe._lock:  # not while a call swaps parameter buffers
            arr = self._host.get(name)
            if arr is None:
                t = exe._param_types[name]
                arr = np.empty(t.shape, t.dtype.np_dtype)
                with _Active(exe._ctx):
                    _download(exe._drv, arr, exe._param_dev[name])
                arr.setflags(write=False)  # a copy: writing into it would change nothing
                self._host[name] = arr
        return arr

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        exe = self._exe
        arr = np.ascontiguousarray(value)
        with _Active(exe._ctx):
            _upload(exe._drv, exe._param_dev[name], arr)
        host = arr.copy()
        host.setflags(write=False)
        self._host[name] = host

    def __delitem__(self, name: str) -> None:
        raise InputError("parameters of a compiled graph cannot be deleted")

    def __iter__(self) -> Iterator[str]:
        return iter(self._exe._param_dev)

    def __len__(self) -> int:
        return len(self._exe._param_dev)

    def invalidate(self, names) -> None:
        for n in names:
            self._host.pop(n, None)


def _alloc(drv, nbytes: int):
    return drv.mem_alloc(max(int(nbytes), 1))  # CUDA refuses empty allocations


def _pinned(drv, buf: K.Buffer) -> np.ndarray:
    """Page-locked staging for a buffer: exactly its elements (a view of at least one
    element's allocation, as empty page-locked allocations are refused)."""
    return drv.pagelocked_empty(max(buf.size, 1), buf.dtype.np_dtype)[:buf.size]


def _upload(drv, dst, arr: np.ndarray) -> None:
    if arr.size:
        drv.memcpy_htod(dst, np.ascontiguousarray(arr))


def _download(drv, arr: np.ndarray, src) -> None:
    if arr.size:
        drv.memcpy_dtoh(arr, src)


# -- the executable ----------------------------------------------------------------------------

class CudaExecutable(Executable):
    backend_name = "cuda"

    def __init__(self, graph, program: K.Program, params: Mapping[str, Any] | None = None,
                 single_output: bool = False, *, cache=None,
                 options: codegen.CodegenOptions | None = None, device_outputs: bool = False) -> None:
        super().__init__(graph, params=params, single_output=single_output)
        dev = device()
        self._drv = drv = dev["drv"]
        self._ctx = dev["context"]
        self.program = p = program
        self.module = codegen.render(program, options)
        self.device_outputs = device_outputs
        self.check_numerics = bool(options is not None and options.check_numerics)
        index = {k.name: i for i, k in enumerate(p.kernels)}
        self._launch_kernels = [(index.get(l.kernel, -1), l.check) for l in self.module.launches]
        nbytes = {n: b.size * b.dtype.itemsize for n, b in p.buffers.items()}
        with _Active(self._ctx):
            self.cubin, self.cubin_source = compile_module(self.module, dev["arch"], cache)
            try:  # loading the code and taking device memory can fail (an old driver, a full GPU)
                self._mod = drv.module_from_buffer(self.cubin)
                self._launches = []
                for launch in self.module.launches:
                    fn = self._mod.get_function(launch.function)
                    fn.prepare("P" * len(launch.buffers))
                    where = [(self.module.storage[b].root, self.module.storage[b].offset) for b in launch.buffers]
                    self._launches.append((fn, launch.grid, launch.block, where))
                self._stream = drv.Stream()
                self._arena = _alloc(drv, p.arena_bytes)
                # parameters: resident; an update buffer and its parameter swap after each call
                self._param_dev = {}
                for name, b in p.params.items():
                    self._param_dev[name] = _alloc(drv, nbytes[b])
                    _upload(drv, self._param_dev[name], self._params[name])
                self._const_dev = {}
                for name, data in p.constants.items():
                    b = p.buffers[name]
                    arr = np.ascontiguousarray(np.asarray(data), dtype=b.dtype.np_dtype).reshape(-1)
                    if arr.size != b.size:
                        raise GraphcError(f"internal: constant {name!r} has {arr.size} elements, buffer "
                                          f"says {b.size}")
                    self._const_dev[name] = _alloc(drv, arr.nbytes)
                    _upload(drv, self._const_dev[name], arr)
                self._in_bufs = dict(zip([v.name for v in graph.inputs], p.inputs))
                self._in_dev = {n: _alloc(drv, nbytes[b]) for n, b in self._in_bufs.items()}
                self._in_pinned = {n: _pinned(drv, p.buffers[b]) for n, b in self._in_bufs.items()}
                self._out_dev = {b: _alloc(drv, nbytes[b]) for b in p.external() if p.buffers[b].kind == "output"}
                for b in list(p.outputs) + list(p.updates.values()):
                    if p.buffers[b].kind != "output" or b in p.aliases:
                        raise GraphcError(f"internal: result buffer {b!r} of program {p.name!r} is not "
                                          "an output buffer of its own")
                shapes = {b: tuple(v.shape) for v, b in zip(graph.outputs, p.outputs)}
                self._results = [(b, shapes[b], p.buffers[b].dtype.np_dtype) for b in p.outputs]
                self._res_pinned = {b: _pinned(drv, p.buffers[b]) for b, _, _ in self._results}
                self._status_zero = drv.pagelocked_zeros(2, np.int32)
                self._status_host = drv.pagelocked_zeros(2, np.int32)
            except drv.Error as e:
                need = p.arena_bytes + sum(nbytes[b] for b in p.external())
                raise CudaRuntimeError(f"setting up program {p.name!r} on the GPU failed (it needs "
                                       f"about {need:,} bytes of device memory): {e}") from None
        self._params = _DeviceParams(self)  # the base class's ParamStore reads through it

    def _report_lines(self) -> list[str]:
        p = self.program
        return [f"cuda: {len(p.kernels)} kernels as {len(self._launches)} launches, arena "
                f"{p.arena_bytes:,} bytes on {_device.get('name', '?')} ({_device.get('arch', '?')}), "
                f"cubin from {self.cubin_source}"]

    # .. calling ..
    def _bind_inputs(self, args: tuple, kwargs: dict) -> tuple[dict[str, int], list, list[str]]:
        """(device pointer of each input, objects to keep alive, inputs to stage): device
        arrays are used as they are; host arrays are checked, converted and copied into
        their pinned staging buffer."""
        spec = self.graph.inputs
        bound = self.match_arguments(args, kwargs)
        ptrs: dict[str, int] = {}
        keep: list = []
        staged: list[str] = []
        for v in spec:
            what = f"input {v.name!r}"
            dv = device_view(what, bound[v.name], v.type, self._stream.handle)
            if dv is not None:
                ptr, alive = dv
                keep.append(alive)
                if ptr % ALIGN:  # vectorised kernels need aligned bases: copy on the device
                    self._drv.memcpy_dtod_async(int(self._in_dev[v.name]), ptr,
                                                v.type.size * v.dtype.itemsize, self._stream)
                    ptr = int(self._in_dev[v.name])
                ptrs[v.name] = ptr
                continue
            arr = convert_argument(what, bound[v.name], v.type)
            if arr.size:  # (an empty input has nothing to send)
                np.copyto(self._in_pinned[v.name], arr.reshape(-1))
                staged.append(v.name)
            ptrs[v.name] = int(self._in_dev[v.name])
        return ptrs, keep, staged

    def _root_pointers(self, inputs: dict[str, int], out_dev: dict) -> dict[str, int]:
        p = self.program
        ptr: dict[str, int] = {"<arena>": int(self._arena)}
        for n, b in self._in_bufs.items():
            ptr[b] = inputs[n]
        for n, b in p.params.items():
            ptr[b] = int(self._param_dev[n])
        for b, alloc in self._const_dev.items():
            ptr[b] = int(alloc)
        for b, alloc in out_dev.items():
            ptr[b] = int(alloc)
        return ptr

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        drv = self._drv
        p = self.program
        with self._lock, _Active(self._ctx):
            inputs, keep, staged = self._bind_inputs(args, kwargs)
            stream = self._stream
            out_dev = dict(self._out_dev)
            if self.device_outputs:  # the caller keeps these: fresh allocations every call
                for b, _, dt in self._results:
                    out_dev[b] = _alloc(drv, p.buffers[b].size * np.dtype(dt).itemsize)
            ptr = self._root_pointers(inputs, out_dev)
            try:
                self._stage(staged)
                self._launch(ptr)
                if p.status is not None:
                    drv.memcpy_dtoh_async(self._status_host, ptr[p.status], stream)
                if not self.device_outputs:
                    for b, _, _ in self._results:
                        if p.buffers[b].size:
                            drv.memcpy_dtoh_async(self._res_pinned[b], int(out_dev[b]), stream)
                stream.synchronize()
            except drv.Error as e:
                raise CudaRuntimeError(f"running program {p.name!r} on the GPU failed: {e}") from None
            del keep  # device inputs stay referenced until their kernels have finished
            code = int(self._status_host[0]) if p.status is not None else 0
            if code > len(p.errors) and self.check_numerics:
                raise self._locate_numerics(code - len(p.errors) - 1, ptr)
            if code:
                raise KernelError(p.errors[code - 1] if 0 < code <= len(p.errors)
                                  else f"compiled kernel reported error code {code}")
            results = []
            for b, shape, dt in self._results:
                if self.device_outputs:
                    import pycuda.gpuarray as gpuarray
                    results.append(gpuarray.GPUArray(shape, dt, gpudata=out_dev[b]))
                else:
                    results.append(np.array(self._res_pinned[b]).reshape(shape))
            self._install_updates()
        return results[0] if self.single_output else tuple(results)

    def _locate_numerics(self, index: int, ptr: dict[str, int]):
        """The NumericsError for kernel `index`, which a check launch flagged: re-run the
        kernels before it (parameters were not swapped; in-place writes touch only arena
        temps, which those kernels recompute), then read its inputs (backends/numerics.py)."""
        from .. import numerics
        drv, p = self._drv, self.program
        try:
            self._launch(ptr, before=index)
            self._stream.synchronize()
        except drv.Error as e:
            raise CudaRuntimeError(f"re-running program {p.name!r} to locate a NaN failed: {e}") from None

        def read(name: str) -> np.ndarray:
            st, b = self.module.storage[name], p.buffers[name]
            arr = np.empty(b.size, b.dtype.np_dtype)
            _download(drv, arr, ptr[st.root] + st.offset)
            return arr
        feeds = {n: read(b) for n, b in self._in_bufs.items()}
        feeds.update({n: read(b) for n, b in p.params.items()})
        return numerics.locate_in_kernel(p, index, read, feeds, "cuda", intact=True)

    def _stage(self, staged: list[str]) -> None:
        for name in staged:
            self._drv.memcpy_htod_async(int(self._in_dev[name]), self._in_pinned[name], self._stream)

    def _launch(self, ptr: dict[str, int], before: int | None = None) -> None:
        """Zero the status flag, then every kernel in order, on the stream (with `before`:
        only the kernels before that one, without numerics checks)."""
        status = self.program.status
        if status is not None:
            self._drv.memcpy_htod_async(ptr[status], self._status_zero, self._stream)
        for (fn, grid, block, where), (k, check) in zip(self._launches, self._launch_kernels):
            if before is not None and (check or k >= before):
                continue
            fn.prepared_async_call(grid, block, self._stream, *[ptr[r] + off for r, off in where])

    def _profile(self, inputs: dict[str, np.ndarray], params: dict, repeat: int):
        """CUDA events around each kernel's launches, `repeat` runs after a warm-up. The
        resident parameters are read, never swapped: the state does not change."""
        from ..profile import build_profile, kernel_rows
        drv, p = self._drv, self.program
        n = len(p.kernels)
        with self._lock, _Active(self._ctx):
            for name, arr in inputs.items():
                _upload(drv, self._in_dev[name], arr.reshape(-1))
            ptr = self._root_pointers({k: int(v) for k, v in self._in_dev.items()}, self._out_dev)
            spans = [(k, [i for i, (kk, check) in enumerate(self._launch_kernels) if kk == k and not check])
                     for k in range(n)]
            totals = [0.0] * n
            try:
                self._launch(ptr)
                self._stream.synchronize()
                t0 = time.perf_counter()
                for _ in range(repeat):
                    marks = []
                    for k, idx in spans:
                        if not idx:
                            continue
                        start, end = drv.Event(), drv.Event()
                        start.record(self._stream)
                        for i in idx:
                            fn, grid, block, where = self._launches[i]
                            fn.prepared_async_call(grid, block, self._stream, *[ptr[r] + off for r, off in where])
                        end.record(self._stream)
                        marks.append((k, start, end))
                    self._stream.synchronize()
                    for k, start, end in marks:
                        end.synchronize()
                        totals[k] += start.time_till(end) / 1e3
                call = (time.perf_counter() - t0) / repeat
            except drv.Error as e:
                raise CudaRuntimeError(f"profiling program {p.name!r} on the GPU failed: {e}") from None
        return build_profile(p.provenance.graph if p.provenance else self.graph, "cuda",
                             kernel_rows(p, [t / repeat for t in totals]), call, repeat,
                             f"CUDA events per kernel on {_device.get('name', '?')}")

    def gpu_seconds(self, *args: Any, repeat: int = 20, **kwargs: Any) -> float:
        """Seconds of GPU time per call of the kernels alone (no copies, no Python): the
        kernel sequence `repeat` times between two CUDA events, after one warm-up run.
        Parameters are not updated. For benchmarks; pass device arrays to skip staging."""
        drv = self._drv
        with self._lock, _Active(self._ctx):
            inputs, keep, staged = self._bind_inputs(args, kwargs)
            ptr = self._root_pointers(inputs, self._out_dev)
            try:
                self._stage(staged)
                self._launch(ptr)
                start, end = drv.Event(), drv.Event()
                start.record(self._stream)
                for _ in range(repeat):
                    self._launch(ptr)
                end.record(self._stream)
                end.synchronize()
            except drv.Error as e:
                raise CudaRuntimeError(f"running program {self.program.name!r} on the GPU failed: {e}") from None
            del keep
            return start.time_till(end) / 1e3 / repeat

    def _install_updates(self) -> None:
        """New parameter values live in their update buffers: swap the allocations."""
        for pname, b in self.program.updates.items():
            self._param_dev[pname], self._out_dev[b] = self._out_dev[b], self._param_dev[pname]
        self._params.invalidate(self.program.updates)

