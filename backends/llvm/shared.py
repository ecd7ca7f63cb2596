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


_LOADED: dict[str, ctypes.CDLL] = {}  # sha256 of the library bytes -> its handle (a cache)


def open_library(data: bytes, digest: str, original: str) -> ctypes.CDLL:
    """dlopen the exact bytes that were verified, from a private copy deleted once loaded.

    The dynamic loader hands back an already loaded library when asked for the same path
    again, so loading an artifact that was re-exported in place would silently run the
    old code; loading a private copy of the verified bytes runs exactly them, and the
    handle is cached by their sha256 so the same code loads once per process. The copy is
    unlinked as soon as dlopen has mapped it (the mapping outlives the name), so nothing is
    left in the temporary directory, whatever happens to the process afterwards. Where
    the temporary directory cannot hold code (mounted noexec), the original path is loaded
    instead. libgomp, if this loads it, reads its settings now: unless the user chose,
    idle OpenMP workers sleep instead of spinning, as for the JIT (engine.load_gomp)."""
    cached = _LOADED.get(digest)
    if cached is not None:
        return cached
    import tempfile
    directory = _private_dir()
    if not _LOADED:
        _sweep(directory)
    fd, path = tempfile.mkstemp(prefix=f"{digest[:16]}-", suffix=".so", dir=directory)
    set_policy = not (os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"))
    if set_policy:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        except OSError:
            lib = ctypes.CDLL(os.path.abspath(original), mode=ctypes.RTLD_LOCAL)
    except OSError as e:
        raise ArtifactError(f"cannot load the artifact's shared object {original}: {e}") from None
    finally:
        if set_policy:
            os.environ.pop("OMP_WAIT_POLICY", None)
        try:
            os.unlink(path)
        except OSError:
            pass
    _LOADED[digest] = lib
    return lib


def _sweep(directory: str, min_age_s: float = 600.0) -> None:
    """Remove library copies that an earlier process left (killed between writing and
    unlinking, or a graphc that kept its copies); recent ones may be another process's."""
    import time
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for e in entries:
        try:
            if e.name.endswith((".so", ".tmp")) and now - e.stat().st_mtime > min_age_s:
                os.unlink(e.path)
        except OSError:
            pass


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
    """An artifact's program, run through its C API (what gc.load returns)."""

    backend_name = "aot"
    output_names: list[str] = []   # gc.load sets them from the manifest
    output_dict = False            # return {name: array}, as the traced function returned a dict

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

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the artifact: the outputs as a tuple (one array for a single output), or as
        {name: array} when the exported function returned a dict."""
        outs = super().__call__(*args, **kwargs)
        return dict(zip(self.output_names, outs)) if self.output_dict else outs

    def _profile(self, inputs, params, repeat):
        """The artifact's code has no cycle counters: its graph (the verified .gcir) is
        lowered again and JIT-built with them (needs llvmlite), then run on its weights."""
        from . import profiling
        from .runtime import profiling_build
        return profiling.profile(self, inputs, params, repeat, profiling_build)

    def _report_lines(self) -> list[str]:
        return [f"aot: {self._prefix} loaded from a shared object, {self.num_threads} threads"]

    def __del__(self) -> None:
        pool, self._pool = getattr(self, "_pool", []), []
        try:
            for m in pool:
                self._destroy(m)
        except Exception:  # interpreter shutdown: ctypes may already be gone
            pass
