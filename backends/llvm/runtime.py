"""LLVM runtime: compile a kernel-IR program (through the cache) and call it from Python.

`compile_program(program)` -> `CompiledProgram` (machine code loaded, entry addresses).
`LLVMExecutable(graph, program)` is the `Executable`: one native call per graph call.
`run_program(compiled, arrays)` runs a compiled program on caller-owned arrays (tests).

Per call, when every input is given positionally, `LLVMExecutable.__call__` checks and
converts the arguments with the base class's `convert_argument` and then runs a call
path generated (as Python source) for the program:
    1. take a call context (slots array, arena, status flags) from the executable's pool,
    2. write `id(array)` of every input and parameter into its slot (a preallocated ctypes
       uint64 array; ~40 ns a slot), allocate each output with `numpy.empty` and write its
       `id`; zero the status flag,
    3. call `<program>_pyentry(slots)` through ctypes (which releases the GIL): the native
       wrapper reads each array's data pointer from the `PyArrayObject` (offset checked at
       import against `ndarray.ctypes.data`; if the check fails, the runtime falls back to
       writing data pointers from Python, ~2 us each, and calling `<program>_entry`),
    4. read the status flag (Program.status: a kernel flagged bad data, e.g. an index out
       of range -> KernelError with the registered message), return the context.
Other calls (keywords, results that are views or temps) go through the base class and a
general `_execute`. Measured for a one-element `x + 1` graph on the (shared, loaded)
2-core development machine: 2.8 us per call at best, 3-6 us typical; of that the native
call through ctypes is ~0.4 us, numpy.empty ~0.25 us, argument conversion ~0.6 us.

Thread safety: a context (slots array + 64-byte aligned arena, one numpy byte buffer
reused across calls) is used by one call at a time: concurrent calls each pop their own
context from the pool (a new one is made when the pool is empty, so N concurrent calls
hold N arenas; they stay pooled for reuse). Calls that update parameters are serialised
by the executable's lock; graphs without updates never write parameters.

Lifetimes: the executable holds its `JitModule` (the code), the constant arrays (their
pointers are written once into every context), and through the base class the parameter
arrays (each call holds the ones it passes in locals until the native call returns).
Parameter updates are written into the parameter arrays themselves where the program says
so (`Program.updates[name] == Program.params[name]`, passes/donate.py); any other update
is returned as a fresh output array and installed as the new value.

Threads: parallel loops use `num_threads` (GRAPHC_NUM_THREADS or os.cpu_count() by
default; `exe.num_threads = n` changes it for this executable, at most the max_threads
the GEMM workspace was sized for). The GEMM library (`graphc_gemm_f32/f64`) is compiled
once per process (through the cache) and shared by all programs.
"""
from __future__ import annotations

import ctypes
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from ...ir import kernel as K
from ...ir.errors import GraphcError
from .. import numerics
from ..executable import Executable, convert_argument
from . import codegen, engine
from .cache import CompileCache, default_cache, make_key


def _pyobject_data_offset() -> int:
    """Offset of `data` in numpy's PyArrayObject, verified on live arrays (0: unusable)."""
    off = 16  # PyObject_HEAD (refcount, type) on a default CPython build
    try:
        for a in (np.zeros(3, np.float32), np.empty((2, 5), np.int64), np.zeros((), bool), np.empty(0)):
            if ctypes.c_void_p.from_address(id(a) + off).value != a.ctypes.data:
                return 0
    except Exception:
        return 0
    return off


PY_DATA_OFFSET = _pyobject_data_offset()


@dataclass
class CompiledProgram:
    program: K.Program
    jit: engine.JitModule
    entry: int              # address of void entry(void** args)
    py_entry: int           # address of void pyentry(uint64* slots), 0 if none
    num_threads_addr: int   # address of the i32 thread-count global
    external: list[str]
    arena_bytes: int
    source: str             # 'built', 'memory' or 'disk'
    seconds: float          # wall time of compile_program
    profile_addr: int = 0   # address of the per-kernel cycle counters (options.profile)
    max_threads: int = 1    # the GEMM workspace holds this many per-thread regions
    options: codegen.CodegenOptions | None = None  # what the code was generated with

    def set_num_threads(self, n: int) -> int:
        """Team size of parallel loops for every caller of this code (clamped to
        [1, max_threads]: the GEMM workspace was sized for max_threads). Returns it."""
        n = max(1, min(int(n), self.max_threads))
        ctypes.c_int32.from_address(self.num_threads_addr).value = n
        return n

    def kernel_cycles(self, reset: bool = False) -> list[tuple[str, int]]:
        """(kernel name, cycles) accumulated since the last reset; needs options.profile."""
        if not self.profile_addr:
            raise GraphcError("compile with CodegenOptions(profile=True) to count kernel cycles")
        n = len(self.program.kernels)
        arr = (ctypes.c_int64 * n).from_address(self.profile_addr)
        out = [(k.name, int(arr[i])) for i, k in enumerate(self.program.kernels)]
        if reset:
            ctypes.memset(self.profile_addr, 0, 8 * n)
        return out


def default_options() -> codegen.CodegenOptions:
    """The code generator's options for programs run in this process (GRAPHC_* variables)."""
    return codegen.CodegenOptions.from_env(py_data_offset=PY_DATA_OFFSET,
                                           parallel=engine.gomp_available())


def compile_program(program: K.Program, *, options: codegen.CodegenOptions | None = None,
                    cache: CompileCache | bool | None = None) -> CompiledProgram:
    """Generate, optimise, emit and load a program. `cache`: None = the default cache
    (GRAPHC_CACHE / GRAPHC_CACHE_DIR), False = no caching, or a CompileCache."""
    t0 = time.perf_counter()
    if options is None:
        options = default_options()
    target = engine.host_target()
    abi = codegen.abi(program, options)

    def build() -> bytes:
        gen = codegen.generate(program, options)
        obj, _ = engine.optimize_and_emit(gen.text, target)
        return obj

    if cache is False:
        obj, where = build(), "built"
    else:
        c = default_cache() if cache is None or cache is True else cache
        key = make_key(codegen.program_key(program), target.key(), options.key()
                       + (numerics.plan_key(program) if options.check_numerics else ""))
        obj, where = c.get_or_build(key, build)
    for dt in abi.gemm_dtypes:
        ensure_gemm_library(dt, cache)
    jit = engine.JitModule(obj, target)
    entry = jit.address(abi.entry)
    py_entry = jit.address(abi.py_entry) if abi.py_entry else 0
    nt_addr = jit.global_address(abi.num_threads_global)
    prof = jit.global_address(abi.profile_global) if abi.profile_global else 0
    cp = CompiledProgram(program, jit, entry, py_entry, nt_addr, abi.external, abi.arena_bytes, where,
                         time.perf_counter() - t0, prof, options.threads, options)
    cp.set_num_threads(codegen.default_num_threads())
    return cp


from .errors import KernelError  # noqa: E402  (re-exported: runtime.KernelError)


_libraries: dict[str, engine.JitModule] = {}
_libraries_lock = threading.Lock()


def ensure_gemm_library(dtype: str, cache: CompileCache | bool | None = None) -> int:
    """Compile (or fetch from the cache) and load graphc_gemm_<dtype> once per process, and
    register its address so that programs calling it resolve the symbol. Returns it."""
    from . import gemm
    name = gemm.gemm_name(dtype)
    with _libraries_lock:
        jm = _libraries.get(dtype)
        if jm is None:
            target = engine.host_target()

            def build() -> bytes:
                from llvmlite import ir
                mod = ir.Module(name=f"graphc_gemm_{dtype}")
                gemm.declare_gemm(mod, dtype, codegen._gemm_target())
                return engine.optimize_and_emit(str(mod), target)[0]

            if cache is False:
                obj = build()
            else:
                c = default_cache() if cache is None or cache is True else cache
                obj, _ = c.get_or_build(make_key(f"graphc gemm library {dtype}", target.key()), build)
            jm = engine.JitModule(obj, target)
            engine.register_symbol(name, jm.address(name))
            _libraries[dtype] = jm
    return jm.address(name)


def _aligned(arr: np.ndarray, align: int = 64) -> np.ndarray:
    """arr itself when its data starts on an `align`-byte boundary, else an aligned copy:
    for constants a GEMM reads as packed panels (K.Gemm.b_panels: aligned vector loads);
    numpy only promises 16 bytes. Other constants are used where they lie."""
    if arr.ctypes.data % align == 0:
        return arr
    raw = np.empty(arr.nbytes + align, np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


class _Context:
    """One call's scratch: the slots array, the arena and the status flags."""
    __slots__ = ("slots", "addr", "arena", "status", "flag")

    def __init__(self, n_slots: int, arena_bytes: int, fixed: list[tuple[int, int]],
                 status_slot: int | None, use_py: bool) -> None:
        self.slots = (ctypes.c_uint64 * n_slots)()
        self.addr = ctypes.addressof(self.slots)
        raw = np.empty(arena_bytes + 64, np.uint8)
        start = (-raw.ctypes.data) % 64
        self.arena = raw[start:start + arena_bytes]
        self.slots[n_slots - 1] = raw.ctypes.data + start
        for i, v in fixed:
            self.slots[i] = v
        # Program.status: i32[2]; slot 0 is zeroed before each call and read after it.
        self.status = np.zeros(2, np.int32)
        self.flag = (ctypes.c_int32 * 2).from_address(self.status.ctypes.data)
        if status_slot is not None:
            self.slots[status_slot] = id(self.status) if use_py else self.status.ctypes.data


class LLVMExecutable(Executable):
    backend_name = "llvm"

    def __init__(self, graph, program: K.Program | None = None, params: Mapping[str, Any] | None = None,
                 single_output: bool = False, *, compiled: CompiledProgram | None = None,
                 num_threads: int | None = None, cache: CompileCache | bool | None = None,
                 options: codegen.CodegenOptions | None = None, raw_pointers: bool = False,
                 check_numerics: bool = False) -> None:
        """raw_pointers: slots hold data pointers and the plain entry runs, never the
        Python-object entry (for callers that fill contexts themselves: `slot_layout`).
        check_numerics: the code checks every kernel's results for NaN/inf and a call that
        finds some raises NumericsError naming the node (backends/numerics.py)."""
        super().__init__(graph, params=params, single_output=single_output)
        if program is None and compiled is None:
            raise GraphcError(f"LLVMExecutable({graph.name!r}): give the planned program "
                              "(graphc.pipeline.lower_program)")
        program = program if program is not None else compiled.program
        self.program = program
        if check_numerics and compiled is None:
            options = replace(options or default_options(), check_numerics=True)
        self.compiled = compiled or compile_program(program, options=options, cache=cache)
        self.check_numerics = bool(self.compiled.options and self.compiled.options.check_numerics)
        self._cache = cache
        c = self.compiled
        p = program
        ext = c.external
        slot_of = {n: i for i, n in enumerate(ext)}
        self._n_slots = len(ext) + 1
        use_py = bool(c.py_entry) and not raw_pointers
        self._use_py = use_py
        self.entry_address = c.entry  # void entry(i64 address of a context's slots)
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_uint64)(c.py_entry if use_py else c.entry)
        # inputs and params: slot <- array each call
        in_names = [v.name for v in graph.inputs]
        if len(p.inputs) != len(in_names):
            raise GraphcError(f"internal: program {p.name!r} has {len(p.inputs)} inputs, graph has "
                              f"{len(in_names)}")
        buf_of_input = dict(zip(in_names, p.inputs))
        self._in_slots = [(slot_of[b], n) for n, b in buf_of_input.items() if b in slot_of]
        self._param_slots = [(slot_of[b], n) for n, b in p.params.items() if b in slot_of]
        bound = {b for _, b in buf_of_input.items()} | set(p.params.values())
        # constants: fixed slots
        self._consts: dict[str, np.ndarray] = {}
        panel_operands = {st.b for k in p.kernels for st in codegen._walk_stmts(k.body)
                          if isinstance(st, K.Gemm) and st.b_panels}
        fixed: list[tuple[int, int]] = []
        for name in ext:
            buf = p.buffers[name]
            if buf.kind == "const":
                if name not in p.constants:
                    raise GraphcError(f"internal: constant buffer {name!r} has no data")
                arr = np.ascontiguousarray(np.asarray(p.constants[name]), dtype=buf.dtype.np_dtype)
                if name in panel_operands:
                    arr = _aligned(arr)
                if arr.size != buf.size:
                    raise GraphcError(f"internal: constant {name!r} has {arr.size} elements, "
                                      f"buffer says {buf.size}")
                self._consts[name] = arr
                fixed.append((slot_of[name], id(arr) if use_py else arr.ctypes.data))
            elif buf.kind in ("input", "param") and name not in bound:
                raise GraphcError(f"internal: {buf.kind} buffer {name!r} is not bound to a graph "
                                  f"{buf.kind}")
        self._fixed = fixed
        # outputs: allocated each call
        shapes: dict[str, tuple] = {}
        for v, b in zip(graph.outputs, p.outputs):
            shapes.setdefault(b, tuple(v.shape))
        ptypes = {pp.name: pp.type for pp in graph.params}
        for pname, b in p.updates.items():
            shapes.setdefault(b, tuple(ptypes[pname].shape))
        self._out_specs = []
        status = getattr(p, "status", None)
        self._status_slot = slot_of.get(status) if status else None
        self._errors = list(getattr(p, "errors", []) or [])
        for name in ext:
            buf = p.buffers[name]
            if buf.kind == "output" and name == status:
                if buf.size != 2 or buf.dtype.name != "i32":
                    raise GraphcError(f"internal: status buffer {name!r} must be i32[2]")
            elif buf.kind == "output":
                shape = shapes.get(name, (buf.size,))
                if int(np.prod(shape, dtype=np.int64)) != buf.size:
                    raise GraphcError(f"internal: output buffer {name!r} has {buf.size} elements but "
                                      f"its value has shape {shape}")
                self._out_specs.append((slot_of[name], name, shape, buf.dtype.np_dtype))
        self._shapes = shapes
        self._result_names = list(p.outputs)
        # updates written into the parameter's own storage need no installing (passes/donate.py)
        self._update_names = [(k, b) for k, b in p.updates.items() if b != p.params.get(k)]
        # results that are not plain output buffers (aliases, inputs, temps): slow path
        self._special = {n for n in list(p.outputs) + [b for _, b in self._update_names]
                         if n in p.aliases or p.buffers[n].kind != "output"}
        self._storage = {n: self._root(n) for n in self._special}
        self._pool: list[_Context] = []
        self._fast = use_py and not self._special and not self.check_numerics
        if self._fast:
            self._execute = self._build_fast_path()  # instance attribute shadows the method
        self._in_types = [(v.name, f"input {v.name!r}", v.type) for v in graph.inputs]
        self._num_threads = 0
        self.num_threads = num_threads if num_threads is not None else codegen.default_num_threads()

    def _report_lines(self) -> list[str]:
        p = self.program
        fused = sum(k.name.endswith("_fused") for k in p.kernels)
        lines = [f"llvm: {len(p.kernels)} kernels ({fused} fused groups), arena "
                 f"{p.arena_bytes:,} bytes, {self.num_threads} threads, object from "
                 f"{self.compiled.source}"]
        if p.memory_plan is not None:
            lines.append(p.memory_plan.summary())
        return lines

    def _profile(self, inputs, params, repeat):
        from . import profiling  # a build with per-kernel cycle counters, made on first use
        return profiling.profile(self, inputs, params, repeat, profiling_build)

    # -- threads -------------------------------------------------------------------------
    @property
    def num_threads(self) -> int:
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n: int) -> None:
        n = int(n)
        if n < 1:
            raise GraphcError(f"num_threads must be >= 1, got {n}")
        self._num_threads = self.compiled.set_num_threads(n)  # at most max_threads

    # -- calling -------------------------------------------------------------------------
    def _root(self, name: str) -> tuple[str, int]:
        p = self.program
        off = 0
        while name in p.aliases:
            base, o = p.aliases[name]
            off += int(o) * p.buffers[base].dtype.itemsize
            name = base
        if p.buffers[name].kind == "temp":
            return "<arena>", off + p.arena[name]
        return name, off

    def slot_layout(self) -> tuple[list[tuple[int, str]], list[tuple[int, str, tuple, Any]]]:
        """(slot, graph input name) of each input and (slot, buffer name, shape, numpy dtype)
        of each output buffer: for callers that fill raw-pointer contexts (`new_context`)
        themselves and run `entry_address` on them (backends/llvm/split.py)."""
        if self._use_py or self._param_slots:
            raise GraphcError("internal: slot_layout needs a raw_pointers executable without parameters")
        return list(self._in_slots), list(self._out_specs)

    def fail(self, code: int) -> None:
        """Raise the error a context's status code stands for."""
        self._fail(code)

    @property
    def result_names(self) -> list[str]:
        """The output buffer of each graph output, in order."""
        return list(self._result_names)

    @property
    def plain_results(self) -> bool:
        return not self._special and not self._update_names

    def new_context(self) -> _Context:
        """A fresh call context (slots, arena, status flags); calls take them from a pool."""
        return _Context(self._n_slots, self.compiled.arena_bytes, self._fixed, self._status_slot,
                        self._use_py)

    def _build_fast_path(self):
        """`_execute` specialised to this program by generated Python: straight-line slot
        writes and allocations, no loops or dicts beyond the result (~1 us + 0.3 us per
        output on the development machine)."""
        env = {"_pop": self._pool.pop, "_push": self._pool.append, "_new": self.new_context,
               "_empty": np.empty, "_fn": self._fn, "_id": id, "_fail": self._fail}
        lines = ["def _execute(inputs, params):",
                 "    try:", "        ctx = _pop()", "    except IndexError:", "        ctx = _new()",
                 "    s = ctx.slots", "    flag = ctx.flag", "    flag[0] = 0"]
        for i, n in self._in_slots:
            lines.append(f"    s[{i}] = _id(inputs[{n!r}])")
        for k, (i, n) in enumerate(self._param_slots):  # p<k> holds the array during the call
            lines.append(f"    p{k} = params[{n!r}]")
            lines.append(f"    s[{i}] = _id(p{k})")
        local = {}
        for k, (i, name, shape, dt) in enumerate(self._out_specs):
            env[f"_shape{k}"], env[f"_dt{k}"] = shape, dt
            local[name] = f"o{k}"
            lines.append(f"    o{k} = _empty(_shape{k}, _dt{k})")
            lines.append(f"    s[{i}] = _id(o{k})")
        lines += ["    _fn(ctx.addr)", "    code = flag[0]", "    _push(ctx)",
                  "    if code:", "        _fail(code)"]
        outs = ", ".join(local[n] for n in self._result_names)
        upd = ", ".join(f"{k!r}: {local[b]}" for k, b in self._update_names)
        lines.append(f"    return [{outs}], {{{upd}}}")
        exec(compile("\n".join(lines), f"<graphc llvm call {self.program.name}>", "exec"), env)
        return env["_execute"]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Executable.__call__ with the same checks and semantics, minus its generic costs
        when every input is given positionally: outputs are fresh arrays (never views of
        inputs or parameters, so no defensive copies), and parameters are read from the
        live dict (each held by a local of the call while native code runs)."""
        if kwargs or not self._fast or len(args) != len(self._in_types):
            return super().__call__(*args, **kwargs)
        inputs = {name: convert_argument(what, a, t) for (name, what, t), a in zip(self._in_types, args)}
        if self.graph.updates:
            with self._lock:
                outs, updates = self._execute(inputs, self._params)
                self._params.update(updates)
        else:
            outs, _ = self._execute(inputs, self._params)
        return outs[0] if self.single_output else tuple(outs)

    def _fail(self, code: int) -> None:
        raise KernelError(self._errors[code - 1] if 0 < code <= len(self._errors)
                          else f"compiled kernel reported error code {code}")

    def _execute(self, inputs: dict[str, np.ndarray], params: dict[str, np.ndarray]):
        try:
            ctx = self._pool.pop()
        except IndexError:
            ctx = self.new_context()
        slots = ctx.slots
        bufs = {}
        flag = ctx.flag
        flag[0] = 0
        try:
            if self._use_py:
                for i, n in self._in_slots:
                    slots[i] = id(inputs[n])
                for i, n in self._param_slots:
                    slots[i] = id(params[n])
                for i, name, shape, dt in self._out_specs:
                    a = np.empty(shape, dt)
                    slots[i] = id(a)
                    bufs[name] = a
                self._fn(ctx.addr)
            else:
                for i, n in self._in_slots:
                    slots[i] = inputs[n].ctypes.data
                for i, n in self._param_slots:
                    slots[i] = params[n].ctypes.data
                for i, name, shape, dt in self._out_specs:
                    a = np.empty(shape, dt)
                    slots[i] = a.ctypes.data
                    bufs[name] = a
                self._fn(ctx.addr)
            code = flag[0]
            if self._special and not code:
                for n in self._special:
                    bufs[n] = self._extract(n, bufs, inputs, params, ctx)
            numerics_error = None
            if code > len(self._errors) and self.check_numerics:  # the slow path, holding ctx
                numerics_error = numerics.locate_in_kernel(
                    self.program, code - len(self._errors) - 1,
                    lambda name: self._read_buffer(name, bufs, inputs, params, ctx),
                    {**inputs, **params}, "llvm")
        finally:
            self._pool.append(ctx)
        if numerics_error is not None:
            raise numerics_error
        if code:
            self._fail(code)
        outs = [bufs[n] for n in self._result_names]
        return outs, {k: bufs[b] for k, b in self._update_names}

    def _read_buffer(self, name, bufs, inputs, params, ctx) -> np.ndarray:
        """A copy of buffer `name`'s elements (flat) as a call left them in its context."""
        p = self.program
        buf = p.buffers[name]
        root, off = self._root(name)
        nbytes = buf.size * buf.dtype.itemsize
        if root == "<arena>":
            raw = ctx.arena[off:off + nbytes]
        else:
            if root in bufs:
                arr = bufs[root]
            elif root in self._consts:
                arr = self._consts[root]
            else:
                inv = dict(zip(p.inputs, [v.name for v in self.graph.inputs]))
                pinv = {b: n for n, b in p.params.items()}
                arr = inputs[inv[root]] if root in inv else params[pinv[root]]
            raw = arr.reshape(-1).view(np.uint8)[off:off + nbytes]
        return raw.view(buf.dtype.np_dtype).copy()

    def _extract(self, name, bufs, inputs, params, ctx) -> np.ndarray:
        """A result that is not a plain output buffer: a view of its storage (copied out of
        the arena, which the next call reuses)."""
        p = self.program
        buf = p.buffers[name]
        shape = self._shapes.get(name, (buf.size,))
        root, off = self._storage[name]
        nbytes = buf.size * buf.dtype.itemsize
        if root == "<arena>":
            raw = ctx.arena[off:off + nbytes]
            return raw.view(buf.dtype.np_dtype).reshape(shape).copy()
        if root in bufs:
            arr = bufs[root]
        elif root in self._consts:
            arr = self._consts[root]
        else:
            inv = {b: n for n, b in zip([v.name for v in self.graph.inputs], p.inputs)}
            pinv = {b: n for n, b in p.params.items()}
            arr = inputs[inv[root]] if root in inv else params[pinv[root]]
        raw = arr.reshape(-1).view(np.uint8)[off:off + nbytes]
        return raw.view(buf.dtype.np_dtype).reshape(shape)


def run_program(compiled: CompiledProgram, arrays: Mapping[str, np.ndarray], num_threads: int | None = None
                ) -> None:
    """Run a compiled program on caller-owned arrays keyed by buffer name (no graph needed).

    Inputs, params, consts and outputs must all be given (contiguous, right dtype and size);
    an arena is allocated for the call."""
    p = compiled.program
    for name in compiled.external:
        a = arrays.get(name)
        buf = p.buffers[name]
        if a is None:
            raise GraphcError(f"run_program: missing array for buffer {name!r}")
        if a.dtype != buf.dtype.np_dtype or a.size != buf.size or not a.flags.c_contiguous:
            raise GraphcError(f"run_program: buffer {name!r} wants {buf.size} contiguous {buf.dtype}, "
                              f"got {a.dtype}{list(a.shape)}")
    if num_threads is not None:
        compiled.set_num_threads(num_threads)
    raw = np.empty(compiled.arena_bytes + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    args = (ctypes.c_void_p * (len(compiled.external) + 1))()
    for i, name in enumerate(compiled.external):
        args[i] = arrays[name].ctypes.data
    args[len(compiled.external)] = raw.ctypes.data + start
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(compiled.entry)(args)


def profiling_build(exe) -> "LLVMExecutable":
    """The build of an executable's program with per-kernel cycle counters (for a batch
    split, or a loaded artifact, the unsplit program its `whole_program()` lowers)."""
    compiled = getattr(exe, "compiled", None)
    base = compiled.options if compiled is not None and compiled.options is not None else default_options()
    options = replace(base, profile=True, check_numerics=False)
    program = getattr(exe, "program", None)
    if program is None or getattr(exe, "parts", None):
        program = exe.whole_program()
    return LLVMExecutable(exe.graph, program, params=dict(exe._params), options=options,
                          cache=getattr(exe, "_cache", None))
