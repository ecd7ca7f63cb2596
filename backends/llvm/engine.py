"""LLVM engine: host target machine, the O3 pipeline, object emission and MCJIT loading.

The backend's one of each: `new_target_machine` is the only place a TargetMachine is made
(`target_machine` caches them), `optimize` the only pass pipeline, `load_gomp` the only
libgomp loader (programs, the GEMM library, AOT emission, the batch-split trampoline and the
tests' CompiledGemm all go through them).

Compilation is split so that the disk cache (`cache.py`) can stand between the halves:

    text IR --optimize_and_emit--> object bytes --load_object--> JitModule (symbol addresses)

`optimize_and_emit` parses the textual module, verifies it, runs LLVM's default per-module
O3 pipeline through the new pass manager with loop and SLP vectorisation, interleaving and
unrolling on, for the host CPU and its features (AVX2/FMA on the development machine,
AVX-512 where present), and emits an ELF object. `load_object` gives the object to a fresh
MCJIT engine (one per loaded program: disposing it frees the code) and resolves the
external symbols it needs from the process: libm, and libgomp, which is loaded into the
process once with `load_library_permanently` for the `GOMP_parallel` thread pool.

The pass-manager set-up (llvmlite >= 0.45, new pass manager):

    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_interleaving = True
    pto.loop_unrolling = False   # unroll only loops marked `unroll` (see optimize())
    pb = llvm.create_pass_builder(target_machine, pto)
    pb.getModulePassManager().run(module_ref, pb)

Diagnostics: LLVM's default diagnostic handler writes remarks and warnings (the loop
vectoriser's "loop not vectorized" when a forced loop cannot be) straight to file
descriptor 2, which llvmlite cannot redirect. `quiet_llvm()` points fd 2 at a temporary
file around exactly the optimisation and emission calls and re-logs what LLVM wrote at
DEBUG on `graphc.llvm` (GRAPHC_LOG=llvm shows it); lines that are not LLVM diagnostics
(another thread's writes in that window) are written back to stderr. The descriptor is
process-wide, so the swap holds a lock; it costs ~30 us per call. The code generator
avoids the known causes (backends/llvm/codegen.py, MIN_FORCED_VECTOR_TRIPS).

Logging (`graphc.llvm`, DEBUG): optimise and emit times per module. Inside a compile with
a dump folder (ir/observe.py), each module's IR before and after optimisation and its
assembly are written there.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import llvmlite.binding as llvm

from ...ir import observe
from ...ir.errors import GraphcError

log = logging.getLogger("graphc.llvm")


class CompileError(GraphcError):
    """LLVM rejected the generated module (a code generator bug) or could not load it."""


_init_lock = threading.Lock()
_initialized = False

# LLVM command-line options set once per process, before the first compilation.
# GVN's load PRE in loops turns the overlapping loads of a sliding window (x[i], x[i+1],
# x[i+2] of a 3-wide convolution row) into a loop-carried recurrence, which the loop
# vectoriser then rebuilds with four shuffles per shifted vector instead of one unaligned
# load (and spills the recurrence registers). Off, depthwise 3x3 over 2x48x16x16 went
# from 27 to 15 us per call, MobileNetV2 (2x3x64x64) from 0.286 to 0.250 ms; ResNet-18,
# the transformer and the LSTM were unchanged. The options are process-wide: another
# llvmlite user in the same process (numba) sees them too. LLVM exits the process on an
# option it does not know: this one is in LLVM 10 to 22 (llvmlite 0.50); check it again
# when llvmlite moves to a new LLVM (every compiling test would stop at once).
LLVM_OPTIONS = ("-enable-load-in-loop-pre=false",)
_gomp_path: str | None = None

# LLVM's global state (the pass builder, target machines, MCJIT) is not safe to drive from
# several Python threads at once; one lock serialises compilation and loading.
_llvm_lock = threading.RLock()


def _initialize() -> None:
    global _initialized
    with _init_lock:
        if _initialized:
            return
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        for option in LLVM_OPTIONS:
            llvm.set_option("graphc", option)
        _initialized = True


def load_gomp() -> str | None:
    """Load libgomp into the process (once) so that generated code can call GOMP_parallel.

    Returns the path loaded, or None when no libgomp is found (then code generation must
    not emit parallel regions: `gomp_available()` is False and loops run serially).
    """
    global _gomp_path
    with _init_lock:
        if _gomp_path is not None:
            return _gomp_path or None
        candidates = [os.environ.get("GRAPHC_LIBGOMP", ""), "/lib/x86_64-linux-gnu/libgomp.so.1",
                      "/usr/lib/x86_64-linux-gnu/libgomp.so.1", ctypes.util.find_library("gomp") or "",
                      "libgomp.so.1"]
        # libgomp reads its settings when it is loaded. Unless the user chose a policy,
        # idle workers sleep at once instead of spinning (~300k iterations by default):
        # measured on the 2-core development machine while other processes kept both cores
        # busy, spinning workers made an MLP train step 5x slower with 2 threads than with
        # 1 (every fork/join waited for a descheduled spinner), passive waiting made 2
        # threads as fast as 1. The price on an idle machine is a futex wake-up per
        # parallel region (~10 us), which the parallel work threshold accounts for.
        env_set = not (os.environ.get("OMP_WAIT_POLICY") or os.environ.get("GOMP_SPINCOUNT"))
        if env_set:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            for c in candidates:
                if not c:
                    continue
                try:
                    llvm.load_library_permanently(c)
                    ctypes.CDLL(c, mode=ctypes.RTLD_GLOBAL)  # keeps omp_* callable from Python too
                except Exception:
                    continue
                _gomp_path = c
                return c
            _gomp_path = ""
            return None
        finally:
            if env_set:
                os.environ.pop("OMP_WAIT_POLICY", None)  # read once at load; leave no trace


def gomp_available() -> bool:
    return load_gomp() is not None


@dataclass(frozen=True)
class HostTarget:
    """The host CPU as LLVM sees it. `key()` enters every cache key."""
    triple: str
    cpu: str
    features: str

    def key(self) -> str:
        return f"{self.triple}|{self.cpu}|{self.features}|llvm{'.'.join(map(str, llvm.llvm_version_info))}"

    @property
    def vector_bits(self) -> int:
        f = self.features
        if "+avx512f" in f:
            return 512
        if "+avx" in f:
            return 256
        return 128


@functools.lru_cache(maxsize=1)
def host_target() -> HostTarget:
    _initialize()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except Exception:  # some platforms cannot report features
        features = ""
    return HostTarget(llvm.get_process_triple(), llvm.get_host_cpu_name(), features)


_tm_cache: dict[tuple, "llvm.TargetMachine"] = {}


def target_machine(target: HostTarget | None = None, *, jit: bool = True, opt: int = 3,
                   reloc: str = "default", codemodel: str = "jitdefault") -> "llvm.TargetMachine":
    """A TargetMachine for `target` (the host by default). `jit=True` (the large code model)
    is what MCJIT wants; AOT export asks for reloc='pic', codemodel='default'."""
    target = target or host_target()
    key = (target, jit, opt, reloc, codemodel)
    tm = _tm_cache.get(key)
    if tm is None:
        tm = new_target_machine(target, jit=jit, opt=opt, reloc=reloc, codemodel=codemodel)
        _tm_cache[key] = tm
    return tm


def new_target_machine(target: HostTarget | None = None, *, jit: bool = True, opt: int = 3,
                       reloc: str = "default", codemodel: str = "jitdefault") -> "llvm.TargetMachine":
    """A fresh TargetMachine, the one place the backend creates them: `target_machine`
    caches these; an MCJIT engine takes ownership of the one it is given, so it needs its
    own (JitModule, and the tests' CompiledGemm)."""
    _initialize()
    target = target or host_target()
    t = llvm.Target.from_triple(target.triple)
    return t.create_target_machine(cpu=target.cpu, features=target.features, opt=opt,
                                   reloc=reloc, codemodel=codemodel, jit=jit)


_fd2_lock = threading.RLock()
_fd2_depth = 0  # guarded by _fd2_lock: nested quiet_llvm() calls share one redirection
_DIAGNOSTIC = re.compile(r"^(remark|warning|error|note): ")


@contextlib.contextmanager
def quiet_llvm(what: str = "llvm") -> Iterator[None]:
    """Capture what LLVM writes to fd 2 while the block runs; re-log it (see the module
    docstring)."""
    global _fd2_depth
    with _fd2_lock:
        if _fd2_depth:
            _fd2_depth += 1
            try:
                yield
            finally:
                _fd2_depth -= 1
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no fd 2 (a daemon): nothing to capture
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            _fd2_depth = 1
            try:
                yield
            finally:
                _fd2_depth = 0
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                text = tmp.read().decode("utf-8", "replace")
        if text:
            _relog(text, what)


def _relog(text: str, what: str) -> None:
    other = []
    for line in text.splitlines():
        if _DIAGNOSTIC.match(line):
            log.debug("%s: %s", what, line)
        elif line.strip():
            other.append(line)
    if other:  # not LLVM's: another thread wrote to stderr while it was redirected
        try:
            os.write(2, ("\n".join(other) + "\n").encode())
        except OSError:
            pass


def module_name(text: str) -> str:
    """The ModuleID of a textual module (what dumps and log lines call it)."""
    m = re.match(r'\s*; ModuleID = [\'"]([^\'"]*)[\'"]', text)
    return m.group(1) if m else "module"


def optimize(mod: "llvm.ModuleRef", tm: "llvm.TargetMachine", speed_level: int = 3) -> None:
    """Run LLVM's default O`speed_level` module pipeline with vectorisation on (what LLVM
    prints meanwhile is captured and logged: quiet_llvm)."""
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_interleaving = True
    # Generic unrolling off: the vectoriser's interleaving already unrolls vector loops
    # 4x, and runtime-unrolling them again quadrupled code size and compile time for no
    # measured gain. Loops the kernel IR marks `unroll` (llvm.loop.unroll.enable) are
    # still unrolled: with this off, LLVM's unroll passes run "only when forced".
    pto.loop_unrolling = False
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    with quiet_llvm("optimise"):
        mpm.run(mod, pb)


def parse_module(text: str, target: HostTarget | None = None) -> "llvm.ModuleRef":
    _initialize()
    target = target or host_target()
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise CompileError(f"internal: generated LLVM IR is invalid: {e}") from None
    mod.triple = target.triple
    mod.data_layout = str(target_machine(target).target_data)
    return mod


def optimize_and_emit(text: str, target: HostTarget | None = None, *, speed_level: int = 3,
                      want_asm: bool = False) -> tuple[bytes, str | None]:
    """Textual LLVM IR -> (object file bytes, assembly if asked). Holds the LLVM lock.
    Inside a compile that dumps, the IR before and after optimisation and the assembly
    are written to its dump folder."""
    session = observe.current()
    name = module_name(text)
    with _llvm_lock:
        tm = target_machine(target)
        session.stage(f"llvm optimise {name}")
        session.dump_text(f"llvm-{name}", "ll", text, "llvm", "LLVM IR as generated")
        mod = parse_module(text, target)
        t0 = time.perf_counter()
        optimize(mod, tm, speed_level)
        t1 = time.perf_counter()
        session.dump_text(f"llvm-{name}.opt", "ll", lambda: str(mod), "llvm",
                          f"after LLVM's O{speed_level} pipeline")
        session.stage(f"llvm emit {name}")
        with quiet_llvm("emit"):
            obj = tm.emit_object(mod)
            asm = tm.emit_assembly(mod) if want_asm or session.dumping else None
        t2 = time.perf_counter()
        if asm is not None:
            session.dump_text(name, "s", asm, "asm", f"assembly for {(target or host_target()).cpu}")
    log.debug("%s: optimised in %.3f s, object emitted in %.3f s (%d bytes of IR, %d of object code)",
              name, t1 - t0, t2 - t1, len(text), len(obj))
    return obj, (asm if want_asm else None)


def optimized_ir(text: str, target: HostTarget | None = None) -> str:
    """The module after the O3 pipeline, as text (for dumps and tests)."""
    with _llvm_lock:
        tm = target_machine(target)
        mod = parse_module(text, target)
        optimize(mod, tm)
        return str(mod)


def register_symbol(name: str, address: int) -> None:
    """Make `name` resolve to `address` for objects loaded afterwards (MCJIT looks up
    undefined symbols in LLVM's process-wide symbol table)."""
    with _llvm_lock:
        llvm.add_symbol(name, address)


class JitModule:
    """Machine code loaded into the process: one MCJIT engine holding one object.

    Keep it alive as long as any function pointer from it may be called."""

    def __init__(self, obj: bytes, target: HostTarget | None = None) -> None:
        load_gomp()
        target = target or host_target()
        observe.current().stage("load machine code")
        with _llvm_lock:
            tm = target_machine(target)
            empty = llvm.parse_assembly("")
            empty.triple = target.triple
            empty.data_layout = str(tm.target_data)
            # MCJIT takes ownership of the target machine it is given: give it its own.
            own_tm = new_target_machine(target)
            self._engine = llvm.create_mcjit_compiler(empty, own_tm)
            try:
                self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
                self._engine.finalize_object()
            except Exception as e:
                raise CompileError(f"could not load generated object code: {e}") from None
        self.object_bytes = len(obj)

    def address(self, name: str) -> int:
        with _llvm_lock:
            addr = self._engine.get_function_address(name)
        if not addr:
            raise CompileError(f"internal: symbol {name!r} not found in the compiled object")
        return addr

    def global_address(self, name: str) -> int:
        with _llvm_lock:
            addr = self._engine.get_global_value_address(name)
        if not addr:
            raise CompileError(f"internal: global {name!r} not found in the compiled object")
        return addr
