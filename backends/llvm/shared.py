"""An Executable over an exported shared object, called through its C API with ctypes.

Nothing here imports llvmlite: loading an artifact runs no compiler. The C API is the one
capi.py generates; this module drives its checked functional form (`<p>_call_sized` with
the executable's own parameter arrays and their sizes, updates into fresh arrays) so that
parameter state, argument checks and threading follow the base Executable exactly as for
the JIT, and the C side checks the counts and sizes again.

Each concurrent call takes its own C model (arena and output buffers) from a pool; models
are created on demand from the weights file and kept for reuse.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any, Mapping

import numpy as np

from ...ir.errors import GraphcError
from ...ir.graph import Graph
from ..executable import Executable
from .errors import KernelError


class ArtifactError(GraphcError):
    """An artifact cannot be loaded or run (damaged, mismatched, or for another machine)."""


_VOIDP_ARRAY: dict[int, Any] = {}


def _pointers(n: int):
    t = _VOIDP_ARRAY.get(n)
    if t is None:
        t = _VOIDP_ARRAY[n] = ctypes.c_void_p * max(n, 1)
    return t()


def _sizes(nbytes: list[int]):
    """(count, a size_t array of the byte sizes) for the sized C entry point."""
    return len(nbytes), (ctypes.c_size_t * max(len(nbytes), 1))(*nbytes)


def _private_dir() -> str:
    """A directory only this user can write, for the verified copies of loaded libraries."""
    import tempfile
    d = os.path.join(tempfile.gettempdir(), f"graphc-aot-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.stat(d)
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o022):
        raise ArtifactError(f"{d} is not a private directory of this user; refusing to load code from it")
    return d


def open_library(data: bytes, digest: str, original: str) -> ctypes.CDLL:
    """dlopen the exact bytes that were verified, from a private file named by their sha256.

    The dynamic loader hands back an already loaded library when asked for the same path
    again, so loading an artifact that was re-exported in place would silently run the
    old code; a content-named copy loads new code under a new name (and the same code
    once). Where the temporary directory cannot hold code (mounted noexec), the original
    path is loaded instead. libgomp, if this loads it, reads its settings now: unless the user chose,
    idle OpenMP workers sleep instead of spinning, as for the JIT (engine.load_gomp)."""
    path = os.path.join(_private_dir(), f"{digest}.so")
    if not _holds(path, data):  # absent, or a copy damaged since: write it again
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    set_policy = not (os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"))
    if set_policy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        try:
            return ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError:
            return ctypes.CDLL(os.path.abspath(original), mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        raise ArtifactError(f"cannot load the artifact's shared object {original}: {e}") from None
    finally:
        if set_policy:
            os.environ.pop("OMP_WAIT_POLICY", None)


def _holds(path: str, data: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def library_facts(lib: ctypes.CDLL, prefix: str, original: str) -> str:
    """The manifest keys the library was built with (`<prefix>_artifact_facts()`, JSON)."""
    try:
        fn = getattr(lib, f"{prefix}_artifact_facts")
    except AttributeError:
        raise ArtifactError(f"{original} does not export {prefix}_artifact_facts: the manifest's c_prefix "
                            f"{prefix!r} is not this library's, or it was built by another graphc") from None
    fn.restype = ctypes.c_char_p
    fn.argtypes = []
    return (fn() or b"").decode("utf-8", errors="replace")


def _default_threads() -> int:
    """GRAPHC_NUM_THREADS or the core count, as for the JIT (codegen.default_num_threads,
    which this module does not import: it would load llvmlite)."""
    env = os.environ.get("GRAPHC_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else (os.cpu_count() or 1)


class SharedLibraryExecutable(Executable):
    backend_name = "aot"

    def __init__(self, graph: Graph, lib: ctypes.CDLL, prefix: str, weights_path: str,
                 params: Mapping[str, Any], single_output: bool, max_threads: int) -> None:
        super().__init__(graph, params=params, single_output=single_output)
        self._lib = lib
        self._prefix = prefix
        self._weights_path = os.path.abspath(weights_path).encode()
        try:
            self._create = getattr(lib, f"{prefix}_create")
            self._call = getattr(lib, f"{prefix}_call_sized")
            self._destroy = getattr(lib, f"{prefix}_destroy")
            self._error = getattr(lib, f"{prefix}_error")
            self._set_threads = getattr(lib, f"{prefix}_set_num_threads")
        except AttributeError as e:
            raise ArtifactError(f"shared object does not export the {prefix}_* C API: {e}") from None
        self._create.restype = ctypes.c_void_p
        self._create.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        self._call.restype = ctypes.c_int
        i, p, sz = ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
        self._call.argtypes = [p, i, p, sz, i, p, sz, i, p, sz, p]
        self._destroy.argtypes = [ctypes.c_void_p]
        self._error.restype = ctypes.c_char_p
        self._error.argtypes = [ctypes.c_void_p]
        self._set_threads.restype = ctypes.c_int
        self._set_threads.argtypes = [ctypes.c_int]
        self.max_threads = max_threads
        self._pool: list[int] = [self._new_model()]  # fails here, at load, if anything is wrong
        self._out_specs = [(tuple(v.shape), v.dtype.np_dtype) for v in graph.outputs]
        self._sizes = [_sizes([v.type.size * v.dtype.itemsize for v in vs])
                       for vs in (graph.inputs, graph.params, graph.outputs)]
        self._param_names = [p.name for p in graph.params]
        self._update_specs = [(p.name, tuple(p.shape), p.dtype.np_dtype) if p.name in graph.updates
                              else None for p in graph.params]
        self._num_threads = self._set_threads(_default_threads())

    def _new_model(self) -> int:
        err = ctypes.create_string_buffer(1024)
        m = self._create(self._weights_path, err, len(err))
        if not m:
            raise ArtifactError(err.value.decode(errors="replace") or "model creation failed")
        return m

    @property
    def num_threads(self) -> int:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        if int(n) < 1:
            raise GraphcError(f"num_threads must be >= 1, got {n}")
        self._num_threads = self._set_threads(int(n))  # clamped to the export's max_threads

    def _execute(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]):
        ins = _pointers(len(inputs))
        for i, v in enumerate(self.graph.inputs):
            ins[i] = inputs[v.name].ctypes.data
        ps = _pointers(len(self._param_names))
        for i, n in enumerate(self._param_names):
            ps[i] = params[n].ctypes.data
        outs = [np.empty(shape, dt) for shape, dt in self._out_specs]
        ops = _pointers(len(outs))
        for i, a in enumerate(outs):
            ops[i] = a.ctypes.data
        updates: dict[str, np.ndarray] = {}
        ups = _pointers(len(self._param_names))
        for i, spec in enumerate(self._update_specs):
            if spec is not None:
                a = updates[spec[0]] = np.empty(spec[1], spec[2])
                ups[i] = a.ctypes.data
        try:
            model = self._pool.pop()
        except IndexError:
            model = self._new_model()
        try:
            (n_in, in_bytes), (n_par, par_bytes), (n_out, out_bytes) = self._sizes
            code = self._call(model, n_in, ins, in_bytes, n_par, ps, par_bytes, n_out, ops, out_bytes, ups)
            message = self._error(model).decode(errors="replace") if code else ""
        finally:
            self._pool.append(model)
        if code:
            raise KernelError(message)
        return outs, updates

    def _report_lines(self) -> list[str]:
        return [f"aot: {self._prefix} loaded from a shared object, {self.num_threads} threads"]

    def __del__(self) -> None:
        pool, self._pool = getattr(self, "_pool", []), []
        try:
            for m in pool:
                self._destroy(m)
        except Exception:  # interpreter shutdown: ctypes may already be gone
            pass
