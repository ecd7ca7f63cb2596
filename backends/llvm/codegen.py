"""Kernel IR `Program` -> one LLVM module (llvmlite.ir) with one entry function.

What the generated code does, all of it:

Module layout
    * One `internal noinline` function per `Kernel`, named `<program>.k<idx>_<kernel name>`,
      taking one pointer per buffer its body touches. Not inlined into the entry: with
      every kernel inlined into one huge function, LLVM's loop vectoriser became quadratic
      (measured: 50 -> 200 kernels took 10x the vectoriser time inlined, 4x as separate
      functions; a 100-kernel program compiles in ~0.45 s instead of ~0.75 s CPU). The
      call costs nanoseconds per kernel, and `noalias` on the parameters says at least as
      much as the scoped-alias metadata inlining would produce.
    * `void <program>_entry(ptr args)`: `args` holds one data pointer per buffer of
      `Program.external()` (inputs, params, consts, outputs, in that order), then the arena
      base (64-byte aligned). It computes every buffer's address and calls the kernels in
      order. Temps live at `arena + Program.arena[name]` (bytes). An alias `(base, off)` is
      `address(base) + off * itemsize(base)`; aliases chain.
    * `void <program>_pyentry(ptr slots)` (when `CodegenOptions.py_data_offset` is set): the
      same, but `slots[i]` holds the *address of the numpy array object* (Python's `id()`)
      and the data pointer is read at `PyArrayObject.data` (offset 16 on CPython; the
      runtime checks the offset before using it). The last slot is the raw arena pointer.
      This saves ~2 us per array per call over `ndarray.ctypes.data` in Python.
    * `i32 @<program>_num_threads` (a global, default 0 = libgomp's default): the team size
      for parallel loops. The runtime sets it (GRAPHC_NUM_THREADS or os.cpu_count()).
    * With `CodegenOptions.profile`, `i64 @<program>_kernel_cycles[n_kernels]`: the entry
      adds each kernel's `llvm.readcyclecounter` (rdtsc) delta to its counter.
    * With `CodegenOptions.check_numerics`, after kernel k the entry scans each buffer of
      `backends.numerics.check_plan(program)[k]` with `<program>.nonfinite_<dtype>(ptr, n)`
      (a vectorised loop: the largest `bits & exponent mask` equals the mask iff some
      element is NaN or +-inf) and, if one is, stores `len(Program.errors) + 1 + k` into
      the status flag and returns: the call stops after the first kernel that went
      non-finite, as after a kernel error. Without the option nothing of this is emitted.

Buffers
    Buffer pointers are kernel parameters with `noalias` when no other buffer of the same
    kernel overlaps it in memory while either is written (aliases and arena temps placed on
    top of each other by the memory plan lose it), `dereferenceable(bytes)`, and `align 64`
    for arena temps at 64-byte multiples. Loads and stores use natural alignment. Memory
    types: f16 -> half, bool -> i8 (numpy's 1-byte bool); register (compute) types: f16 ->
    float (load = fpext, store = fptrunc, round to nearest even), bool -> i1.

Loops
    `For` becomes a canonical rotated loop (phi i64 from 0, step 1, `add nuw nsw`) with a
    distinct `llvm.loop` ID carrying `llvm.loop.mustprogress`, plus
    `llvm.loop.vectorize.enable` for `vectorize` loops and `llvm.loop.unroll.enable` for
    `unroll` loops. Extent-0 loops are not emitted.
    `reduce` loops: floating-point add/sub/mul/fma and min/max in `Assign` statements
    inside them carry the fast-math flags `reassoc contract`, which lets LLVM vectorise the
    accumulation (lane-wise partial sums combined at the end, and FMA contraction). The sum
    order therefore differs from a sequential loop: results agree with a sequential sum to
    within the usual floating-point summation bound (n * eps * sum|x|, in practice better,
    as the partial sums behave like a pairwise sum of depth log2(lanes)), and are not
    bitwise identical across vector widths. Nothing else gets fast-math flags: elementwise
    arithmetic rounds exactly as numpy does (no FMA contraction).
    Locals (`Declare`/`Assign`) are allocas in the entry block, promoted to SSA by SROA.

Parallel loops
    A `parallel` loop at the top level of a kernel is outlined: a chunk function
    `(buffers..., captured locals..., i64 lo, i64 hi)` runs iterations [lo, hi), and an
    OpenMP body `(ptr data)` reads the captured values from a struct, takes the static
    contiguous chunk `[tid*c, min((tid+1)*c, extent))` with `c = ceil(extent/nthreads)`
    (rounded up to a multiple of 16 when over 64) and calls the chunk function. The kernel
    calls `GOMP_parallel(body, &data, num_threads, 0)`, or the chunk function directly
    over the whole range when `num_threads == 1` or when the loop's estimated work (scalar
    operations other than address arithmetic, transcendental functions counting 8, a GEMM
    2mnk) is below `CodegenOptions.parallel_min_work` (default 2**22, about 40-150 us of
    vectorised work on one znver3 core). Measured on the 2-core development machine: a
    GOMP_parallel fork/join with 2 threads costs ~2.5 us over a direct call when the
    worker is spinning and the second core is free, ~13 us with passive (sleeping)
    workers, which graphc selects (see engine.load_gomp), and one scheduler time slice
    (~8 ms) when the worker spins but other processes hold the cores; a parallel loop pays
    off once its serial time exceeds about twice the fork/join cost. Under the shared
    machine's usual load the passive wake-up took 25-30 us: with the earlier 2**19 the
    ONNX ResNet-18-style model ran 0.61 ms on 2 threads against 0.42 ms on one (about 25
    regions of 20-40 us each), with 2**21 0.45 ms and with 2**24 0.41 ms. MobileNetV2 on 2
    threads, interleaved: 0.311 ms with 2**21 and address arithmetic counted (a 10 us
    depthwise layer was forked), 0.247 ms with 2**22 and addresses not counted; ResNet,
    the digits CNN train step and the MLP train step unchanged. Locals declared
    outside the loop are captured by value; assigning them inside a parallel loop is
    rejected (it would race). `parallel` marks on nested loops run serially. The chunk
    functions and kernels are `noinline`, so the serial and the OpenMP paths share code.

Scalar semantics (numpy's, as the reference interpreter computes them)
    * Operands are converted to the expression's dtype first (`Cast` rules below).
    * add/sub/mul: IEEE for floats, wrapping for ints, or/and for bools.
    * div: floats IEEE; ints floor division (Python's //) with x // 0 = 0 and
      INT_MIN // -1 = INT_MIN (wrapping), never a trap.
    * mod: Python semantics: the result has the divisor's sign; ints x % 0 = 0; floats
      x % 0 = nan, and a zero result takes the divisor's sign.
    * pow: floats via the math library; ints by repeated squaring (negative exponents give
      0 except for bases 1 and -1, where numpy raises).
    * max/min: NaN-propagating like numpy.maximum/minimum (select on `oge`/`ole` or the
      first operand being NaN); ints signed; bools or/and.
    * and/or: logical on bools, bitwise on ints. not: logical on bools, bitwise on ints.
    * Compare: ordered float compares except `ne` (unordered: NaN != NaN is true); signed
      int compares; bools unsigned.
    * neg, abs (llvm.fabs / select), sign (-1, 0, 1; 0 for +-0, NaN for NaN), sqrt
      (llvm.sqrt, vectorises), exp/log/tanh/sigmoid/erf/sin/cos/rsqrt/pow through
      `_math()` (backends.llvm.mathlib's vectorisable implementations when present,
      llvm intrinsics or libm otherwise).
    * Cast: float->float fpext/fptrunc (to f16: round to half precision, kept in float;
      f64 -> f16 rounds once, through float with round-to-odd, as LLVM would otherwise
      call compiler-rt's __truncdfhf2, which is not in the process);
      float->int fptosi (truncation toward zero) with selects that saturate out-of-range
      values and map NaN to 0 (ir.dtypes.float_to_int, as CUDA's cvt.rzi); int->float sitofp; int->int sext/trunc; x->bool is
      `x != 0` (NaN -> true); bool->x zext/uitofp.

GEMM
    `Gemm` statements go through `uses_gemm_library`: graphc's generated BLIS-style GEMM
    (backends.llvm.gemm) for f32/f64 problems with m*n*k >= GEMM_MIN_MNK, otherwise a loop
    nest in kernel IR (i, j, reduce k with a local accumulator; or, for float rows of
    n >= 8 with k <= 64 and no epilogue, i, k, then C[i, :] += A[i, k] * B[k, :]
    vectorised over j, as in depthwise convolutions), parallel over the batch or
    row loop when the statement is at a kernel's top level. The library GEMM is called as
    the external symbol `graphc_gemm_<f32|f64>`: the runtime compiles it once per process
    (disk-cached like programs; ~0.5 s per dtype cold) and registers its address with
    LLVM before loading a program (`CodegenOptions.gemm_in_module` defines it in the
    module instead, for AOT). A top-level single matrix above the parallel threshold runs
    on the whole team (each thread its share, `graphc_gemm(..., tid, nthreads)`); a
    top-level batch runs one matrix per iteration of a parallel batch loop; a GEMM nested
    in loops runs on its thread alone. Each thread packs into its own region of the
    workspace, which the ABI places after the arena plan (`gemm_workspace`). An epilogue
    becomes an internal function `<kernel>.epiN(ctx, row, col, rows, cols, tile, ldc)` that
    the library calls on each MR x NR tile of C as soon as it is final (still in L1), with
    a stack struct of the buffers, enclosing loop variables and locals it reads as `ctx`;
    the loop-nest GEMM applies it as it stores each element. Either way the epilogue is
    evaluated per element with `LocalRef("acc")` bound to the accumulated value and
    `Var("i")`, `Var("j")` to the row and column. Leading dimensions of 0 mean the dense
    default (k or m for A, n or k for B, n for C).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType, bool_, f32, i64
from ...ir.errors import GraphcError


class CodegenError(GraphcError):
    """The kernel IR cannot be rendered (malformed program or unsupported construct)."""


# -- types ---------------------------------------------------------------------------------

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F16 = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

_CTYPE = {"f16": F32, "f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I1}
_MTYPE = {"f16": F16, "f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I8}


def ctype(dt: DType) -> ir.Type:
    """Register type of a dtype."""
    return _CTYPE[dt.name]


def mtype(dt: DType) -> ir.Type:
    """Memory type of a dtype."""
    return _MTYPE[dt.name]


def _compute_dtype(dt: DType) -> DType:
    return f32 if dt.name == "f16" else dt


MATH_FUNCS = ("exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt", "pow")
_TRANSCENDENTAL_COST = 8


@dataclass(frozen=True)
class CodegenOptions:
    """Knobs that change the generated code (all enter the compile cache key)."""
    parallel: bool = True               # emit GOMP_parallel regions for parallel loops
    parallel_min_work: int = 1 << 22    # estimated scalar ops below which parallel loops run serially
    py_data_offset: int = 16            # offset of PyArrayObject.data; 0: no Python entry
    max_threads: int = 0                # for GEMM workspace sizing; 0: os.cpu_count()
    gemm_in_module: bool = False        # define graphc_gemm_* in the module (AOT) instead of
                                        # calling the shared, separately compiled library
    profile: bool = False               # count cycles per kernel into <program>_kernel_cycles
    check_numerics: bool = False        # stop with a status code at the first non-finite kernel

    def key(self) -> str:
        return repr(self)

    @property
    def threads(self) -> int:
        """max_threads resolved (0 = GRAPHC_NUM_THREADS or os.cpu_count())."""
        return self.max_threads if self.max_threads > 0 else default_num_threads()

    @staticmethod
    def from_env(**overrides) -> "CodegenOptions":
        kw = {}
        if os.environ.get("GRAPHC_PARALLEL_MIN_WORK"):
            kw["parallel_min_work"] = int(os.environ["GRAPHC_PARALLEL_MIN_WORK"])
        kw["max_threads"] = default_num_threads()
        kw.update(overrides)
        return CodegenOptions(**kw)


def default_num_threads() -> int:
    env = os.environ.get("GRAPHC_NUM_THREADS") or ""
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    return os.cpu_count() or 1


@dataclass
class GeneratedModule:
    module: ir.Module
    entry: str                 # void entry(ptr args)
    py_entry: str | None       # void py_entry(ptr slots)
    num_threads_global: str    # i32 global
    external: list[str]        # ABI order of args
    arena_bytes: int           # bytes the runtime must provide at the arena base
    kernel_functions: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return str(self.module)


@dataclass(frozen=True)
class ABI:
    """What the runtime needs to call a generated module, computable without generating it
    (so that a cache hit skips code generation)."""
    entry: str
    py_entry: str | None
    num_threads_global: str
    external: list[str]
    arena_bytes: int
    gemm_dtypes: tuple[str, ...] = ()   # library GEMMs the module calls (external symbols)
    profile_global: str | None = None   # i64[len(kernels)] cycle counters (options.profile)


def abi(program: K.Program, options: CodegenOptions) -> ABI:
    prefix = _sanitize(program.name)
    ws_off, ws_bytes = gemm_workspace(program, options)
    arena = ws_off + ws_bytes if ws_bytes else program.arena_bytes
    return ABI(f"{prefix}_entry", f"{prefix}_pyentry" if options.py_data_offset else None,
               f"{prefix}_num_threads", program.external(), arena,
               () if options.gemm_in_module else library_gemm_dtypes(program),
               f"{prefix}_kernel_cycles" if options.profile else None)


def library_gemm_dtypes(program: K.Program) -> tuple[str, ...]:
    dtypes = {n: b.dtype for n, b in program.buffers.items()}
    out = {dtypes[g.c].name for k in program.kernels for g, _ in _walk_gemms(k.body)
           if uses_gemm_library(g, dtypes)}
    return tuple(sorted(out))


def gemm_function_type() -> ir.FunctionType:
    """void graphc_gemm_<T>(M, N, K, A, lda, transA, B, ldb, transB, C, ldc, accumulate,
    workspace, thread_id, num_threads, epilogue, epilogue_ctx) (see backends/llvm/gemm.py)."""
    return ir.FunctionType(VOID, [I64, I64, I64, PTR, I64, I32, PTR, I64, I32, PTR, I64, I32,
                                  PTR, I64, I64, PTR, PTR])


# -- loop metadata ---------------------------------------------------------------------------

class _LoopID(ir.values.MDValue):
    """A distinct, self-referential `llvm.loop` node (llvmlite cannot express one)."""

    def descr(self, buf):
        ops = [self.get_reference()] + [op.get_reference() for op in self.operands]
        buf += ("distinct !{" + ", ".join(ops) + "}", "\n")

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return s or "_"


# -- analysis helpers --------------------------------------------------------------------------

def _expr_children(e) -> list:
    if isinstance(e, K.Unary) or isinstance(e, K.Cast):
        return [e.x]
    if isinstance(e, (K.Binary, K.Compare)):
        return [e.a, e.b]
    if isinstance(e, K.Select):
        return [e.cond, e.a, e.b]
    if isinstance(e, K.Load):
        return [e.index]
    if isinstance(e, (_GemmEpilogue, _EpilogueUse)):
        return [e.expr]
    return []


def _walk_expr(e, seen=None):
    """Every node of an expression DAG once (by identity)."""
    stack = [e]
    seen = set() if seen is None else seen
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        stack.extend(_expr_children(x))


WORKSPACE = "<gemm workspace>"  # pseudo-buffer: GEMM packing space after the arena plan


def _local_refs(e):
    """LocalRefs an expression reads (a GEMM epilogue's `acc` is its accumulator)."""
    if isinstance(e, K.LocalRef):
        yield e
    elif isinstance(e, (_GemmEpilogue, _EpilogueUse)):
        if isinstance(e, _GemmEpilogue):
            yield e.acc
        for y in _local_refs(e.expr):
            if y.name != "acc":
                yield y
    else:
        for c in _expr_children(e):
            yield from _local_refs(c)


def _stmt_exprs(s) -> list:
    if isinstance(s, _GemmCall):  # the library calls the epilogue on finished tiles
        out = [o for o in (s.g.offset_a, s.g.offset_b, s.g.offset_c) if not isinstance(o, int)]
        return out + ([_EpilogueUse(s.g.epilogue)] if s.g.epilogue is not None else [])
    if isinstance(s, K.Store):
        return [s.index, s.value]
    if isinstance(s, K.Declare):
        return [s.init]
    if isinstance(s, K.Assign):
        return [s.value]
    if isinstance(s, K.Gemm):  # its epilogue's `acc` is the GEMM's own, not a local around it
        out = [o for o in (s.offset_a, s.offset_b, s.offset_c) if not isinstance(o, int)]
        if s.epilogue is not None:
            out.append(_EpilogueUse(s.epilogue))
        return out
    return []


def _walk_stmts(stmts):
    for s in stmts:
        yield s
        if isinstance(s, K.For):
            yield from _walk_stmts(s.body)


def buffers_used(stmts) -> tuple[list[str], set[str]]:
    """(buffers referenced in order of first use, buffers written)."""
    used: dict[str, None] = {}
    written: set[str] = set()
    for s in _walk_stmts(stmts):
        if isinstance(s, K.Store):
            used.setdefault(s.buffer)
            written.add(s.buffer)
        if isinstance(s, (K.Gemm, _GemmCall)):
            g = s if isinstance(s, K.Gemm) else s.g
            for b in (g.a, g.b, g.c, WORKSPACE):
                used.setdefault(b)
            written.add(g.c)
            written.add(WORKSPACE)
        for e in _stmt_exprs(s):
            for x in _walk_expr(e):
                if isinstance(x, K.Load):
                    used.setdefault(x.buffer)
    return list(used), written


def _expr_cost(e) -> int:
    """Operations of e, a Load's index not counted: address arithmetic is strength-reduced
    out of the loops (counted, a depthwise convolution's divisions and modulos of plane
    numbers made its estimate 3-5x its work, and 10 us kernels were forked)."""
    c = 0
    stack, seen = [e], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if not isinstance(x, K.Load):
            stack.extend(_expr_children(x))
        if isinstance(x, K.Unary) and x.op in MATH_FUNCS:
            c += _TRANSCENDENTAL_COST
        elif isinstance(x, K.Binary) and x.op in ("pow", "div", "mod"):
            c += _TRANSCENDENTAL_COST if x.op == "pow" else 4
        elif isinstance(x, (K.Const, K.Var, K.LocalRef)):
            pass
        else:
            c += 1
    return max(c, 1)


# Loops of fewer iterations are not forced to vectorise. LLVM 22 (llvmlite 0.50) rejects a
# forced two-iteration loop ("value that could not be identified as reduction is used
# outside the loop", then "unable to perform the requested transformation" on stderr) and
# then unrolls it fully and the SLP vectoriser packs it anyway (x + 1 on f32[4] split over
# two threads: one <2 x float> fadd either way); a one-iteration loop has nothing to vectorise.
MIN_FORCED_VECTOR_TRIPS = 3


def _vectorizable(body) -> bool:
    """Whether forcing vectorisation of a loop with this body can succeed: innermost (no
    nested loop or GEMM) and no scalar library calls (fallback math, integer pow)."""
    have_mathlib = _mathlib() is not None
    for st in _walk_stmts(body):
        if isinstance(st, (K.For, K.Gemm, _GemmLoops, _GemmCall)):
            return False
        for e in _stmt_exprs(st):
            for x in _walk_expr(e):
                if isinstance(x, K.Unary) and x.op in MATH_FUNCS and not have_mathlib:
                    return False
                if isinstance(x, K.Binary) and x.op == "pow" and (not have_mathlib or not x.dtype.is_float):
                    return False
    return True


def estimate_work(stmts) -> int:
    """Rough scalar-operation count of a statement list (static: extents are constants)."""
    w = 0
    for s in stmts:
        if isinstance(s, K.For):
            w += s.extent * estimate_work(s.body)
        elif isinstance(s, K.Gemm):
            w += 2 * s.batch * s.m * s.n * s.k
        elif isinstance(s, _GemmCall):
            w += 2 * s.g.m * s.g.n * s.g.k
        elif isinstance(s, K.Store):  # the store, and the value (not the address)
            w += 1 + _expr_cost(s.value)
        else:
            w += sum(_expr_cost(e) for e in _stmt_exprs(s))
    return w


# -- GEMM: the generated library (backends.llvm.gemm) or loops ------------------------------

GEMM_MIN_MNK = 4096  # smaller products run as plain loops (packing would dominate)


def _gemm_lib():
    try:
        from . import gemm
    except ImportError:
        return None
    return gemm if hasattr(gemm, "declare_gemm") else None


_gemm_target_cache: list = []


def _gemm_target():
    if not _gemm_target_cache:
        _gemm_target_cache.append(_gemm_lib().GemmTarget.for_host())
    return _gemm_target_cache[0]


def uses_gemm_library(g: K.Gemm, dtypes: dict[str, DType]) -> bool:
    """The one switch point for GEMM: the generated BLIS-style kernel for f32/f64 problems
    of some size, the kernel-IR loop nest otherwise (also for B panels of another width
    than the library's NR, e.g. a program lowered for another CPU)."""
    dt = dtypes[g.c]
    return (_gemm_lib() is not None and dt.name in ("f32", "f64") and dtypes[g.a] == dt
            and dtypes[g.b] == dt and g.k > 0 and g.m * g.n * g.k >= GEMM_MIN_MNK
            and g.a != g.c and g.b != g.c
            and g.b_panels in (0, _gemm_target().blocking(dt.name).nr))


def _walk_gemms(stmts, top: bool = True):
    for s in stmts:
        if isinstance(s, K.Gemm):
            yield s, top
        elif isinstance(s, K.For):
            yield from _walk_gemms(s.body, False)


def gemm_workspace(program: K.Program, options: "CodegenOptions") -> tuple[int, int]:
    """(byte offset, bytes) of the GEMM workspace, placed after the arena plan. GEMMs run
    one at a time, so they share it; each holds max_threads per-thread regions."""
    dtypes = {n: b.dtype for n, b in program.buffers.items()}
    need = 0
    nt = options.threads
    for k in program.kernels:
        for g, top in _walk_gemms(k.body):
            if not uses_gemm_library(g, dtypes):
                continue
            lib = _gemm_lib()
            dt = dtypes[g.c].name
            per = lib.workspace_elements(g.m, g.n, g.k, 1, _gemm_target(), dt)
            full = lib.workspace_elements(g.m, g.n, g.k, nt, _gemm_target(), dt)
            need = max(need, max(per * nt, full) * dtypes[g.c].itemsize)
    off = -(-program.arena_bytes // 64) * 64
    return off, need


@dataclass
class _GemmCall:
    """Internal statement: one matrix of a GEMM through the library, on this thread alone
    (batch index `vb` or None)."""
    g: K.Gemm
    vb: K.Var | None


# -- GEMM dimension defaults -------------------------------------------------------------------

def gemm_lds(g: K.Gemm) -> tuple[int, int, int]:
    lda = g.lda or (g.m if g.trans_a else g.k)
    ldb = g.ldb or (g.k if g.trans_b else g.n)
    ldc = g.ldc or g.n
    return lda, ldb, ldc


def _c64(v: int) -> K.Const:
    return K.Const(int(v), i64)


def _add(a, b):
    if isinstance(a, int):
        a = _c64(a)
    if isinstance(b, int):
        b = _c64(b)
    if isinstance(a, K.Const) and a.value == 0:
        return b
    if isinstance(b, K.Const) and b.value == 0:
        return a
    return K.Binary("add", a, b, i64)


def _mul(a, b):
    if isinstance(b, int):
        if b == 1:
            return a
        b = _c64(b)
    if isinstance(a, K.Const) and isinstance(b, K.Const):
        return _c64(a.value * b.value)
    return K.Binary("mul", a, b, i64)


def gemm_loops(g: K.Gemm, parallel: bool, tag: str) -> list:
    """The GEMM as a kernel-IR loop nest (the portable fallback); built at emit time, when
    the buffer dtypes are known."""
    lda, ldb, ldc = gemm_lds(g)
    vb = K.Var(f"_gb{tag}")
    vi = K.Var(f"_gi{tag}")
    vj = K.Var(f"_gj{tag}")
    vk = K.Var(f"_gk{tag}")
    bvar = vb if g.batch > 1 else _c64(0)
    base_a = _add(g.offset_a, _mul(bvar, g.stride_a)) if g.stride_a else _add(g.offset_a, 0)
    base_b = _add(g.offset_b, _mul(bvar, g.stride_b)) if g.stride_b else _add(g.offset_b, 0)
    base_c = _add(g.offset_c, _mul(bvar, g.stride_c)) if g.stride_c else _add(g.offset_c, 0)
    ia = _add(base_a, _add(_mul(vk, lda), vi) if g.trans_a else _add(_mul(vi, lda), vk))
    if g.b_panels:
        w = g.b_panels
        panel = K.Binary("div", vj, _c64(w), i64)
        ib = _add(base_b, _add(_mul(panel, g.k * w), _add(_mul(vk, w), K.Binary("mod", vj, _c64(w), i64))))
    else:
        ib = _add(base_b, _add(_mul(vj, ldb), vk) if g.trans_b else _add(_mul(vk, ldb), vj))
    ic = _add(base_c, _add(_mul(vi, ldc), vj))
    return [_GemmLoops(g, vb, vi, vj, vk, ia, ib, ic, parallel)]


@dataclass
class _GemmLoops:
    """Internal statement: the fallback GEMM (needs buffer dtypes, so built at emit time)."""
    g: K.Gemm
    vb: K.Var
    vi: K.Var
    vj: K.Var
    vk: K.Var
    ia: object
    ib: object
    ic: object
    parallel: bool

    def build(self, dtypes: dict[str, DType]) -> list:
        g = self.g
        da, db, dc = dtypes[g.a], dtypes[g.b], dtypes[g.c]
        acc_dt = _compute_dtype(dc)
        if acc_dt.is_bool:
            acc_dt = i64
        acc = K.LocalRef(f"_acc_{self.vi.name}", acc_dt)

        def conv(e, d):
            return e if d == acc_dt else K.Cast(e, acc_dt)

        prod = K.Binary("mul", conv(K.Load(g.a, self.ia, da), da), conv(K.Load(g.b, self.ib, db), db),
                        acc_dt)
        init = conv(K.Load(g.c, self.ic, dc), dc) if g.accumulate else K.Const(0, acc_dt)
        result: object = acc
        if g.epilogue is not None:
            result = _GemmEpilogue(g.epilogue, acc, self.vi, self.vj)
        if self._row_update(acc_dt, dc):
            # C[i, :] += A[i, k] * B[k, :] for each k: unit-stride rows, vectorised over j
            # (a short k would leave the dot-product order below with little to vectorise).
            row: list = []
            if not g.accumulate:
                row.append(K.For(self.vj, g.n, [K.Store(g.c, self.ic, K.Const(0, dc))], "vectorize"))
            upd = K.Binary("add", K.Load(g.c, self.ic, dc), prod, dc)
            row.append(K.For(self.vk, g.k, [K.For(self.vj, g.n, [K.Store(g.c, self.ic, upd)],
                                                  "vectorize")], "serial"))
            iloop = K.For(self.vi, g.m, row, "serial")
        else:
            kloop = K.For(self.vk, g.k, [K.Assign(acc, K.Binary("add", acc, prod, acc_dt))], "reduce")
            jloop = K.For(self.vj, g.n, [K.Declare(acc, init), kloop, K.Store(g.c, self.ic, result)],
                          "serial")
            iloop = K.For(self.vi, g.m, [jloop], "serial")
        if g.batch > 1:
            outer = K.For(self.vb, g.batch, [iloop], "parallel" if self.parallel else "serial")
        else:
            if self.parallel:
                iloop.mark = "parallel"
            outer = iloop
        return [outer]


    def _row_update(self, acc_dt: DType, dc: DType) -> bool:
        """Whether the row-update order fits: B's rows contiguous, rows long enough to
        vectorise, no epilogue, and C's dtype is the accumulator's (no rounding per step)."""
        g = self.g
        return (not g.trans_b and not g.b_panels and g.epilogue is None and acc_dt == dc and dc.is_float
                and g.n >= 8 and g.k <= 64)


@dataclass(frozen=True)
class _EpilogueUse:
    """Internal expression: what a library GEMM's epilogue reads (buffers, locals other
    than its accumulator), for the analyses of the statement that calls it."""
    expr: object


@dataclass(frozen=True)
class _GemmEpilogue:
    """Internal expression: a GEMM epilogue with acc/i/j bound."""
    expr: object
    acc: K.LocalRef
    vi: K.Var
    vj: K.Var

    @property
    def dtype(self):
        return self.expr.dtype


# -- the generator -----------------------------------------------------------------------------

class _ModuleGen:
    def __init__(self, program: K.Program, options: CodegenOptions) -> None:
        self.p = program
        self.opt = options
        self.prefix = _sanitize(program.name)
        self.module = ir.Module(name=self.prefix)
        self.decls: dict[str, ir.Function] = {}
        self.nthreads_gv = ir.GlobalVariable(self.module, I32, f"{self.prefix}_num_threads")
        self.nthreads_gv.initializer = ir.Constant(I32, 0)
        self.nthreads_gv.linkage = ""
        self._md_cache: dict[str, ir.values.MDValue] = {}
        self._counter = 0
        self.dtypes = {n: b.dtype for n, b in program.buffers.items()}
        self._check_program()
        self.storage = {n: self._storage(n, 0) for n in program.buffers}
        self.ws_offset, self.ws_bytes = gemm_workspace(program, options)
        self.storage[WORKSPACE] = ("<arena>", self.ws_offset)

    # .. program checks and buffer storage ..
    def _check_program(self) -> None:
        p = self.p
        for k in p.kernels:
            used, _ = buffers_used(k.body)
            for b in used:
                if b not in p.buffers and b != WORKSPACE:
                    raise CodegenError(f"kernel {k.name!r} uses unknown buffer {b!r}"
                                       + (f" (computes {k.source})" if k.source else ""))
        for name, b in p.buffers.items():
            if b.kind not in K.BUFFER_KINDS:
                raise CodegenError(f"buffer {name!r} has unknown kind {b.kind!r}")
            if b.kind == "temp" and name not in p.aliases:
                if name not in p.arena:
                    raise CodegenError(f"temp buffer {name!r} has no arena offset")
                off = p.arena[name]
                if off < 0 or off + b.size * b.dtype.itemsize > p.arena_bytes:
                    raise CodegenError(f"temp buffer {name!r} at byte {off} (+{b.size * b.dtype.itemsize}) "
                                       f"is outside the arena of {p.arena_bytes} bytes")
        for name, (base, off) in p.aliases.items():
            if base not in p.buffers:
                raise CodegenError(f"alias {name!r} of unknown buffer {base!r}")

    def _storage(self, name: str, depth: int) -> tuple[str, int]:
        """(root, byte offset): root is an external buffer name or '<arena>'."""
        if depth > 64:
            raise CodegenError(f"alias cycle through buffer {name!r}")
        p = self.p
        if name in p.aliases:
            base, off = p.aliases[name]
            root, boff = self._storage(base, depth + 1)
            return root, boff + int(off) * p.buffers[base].dtype.itemsize
        b = p.buffers[name]
        if b.kind == "temp":
            return "<arena>", p.arena[name]
        return name, 0

    def byte_range(self, name: str) -> tuple[str, int, int]:
        root, off = self.storage[name]
        if name == WORKSPACE:
            return root, off, off + self.ws_bytes
        b = self.p.buffers[name]
        return root, off, off + b.size * b.dtype.itemsize

    # .. declarations ..
    def intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.decls.get(name)
        if fn is None:
            fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
        self.decls[name] = fn
        return fn

    def md(self, *ops) -> ir.values.MDValue:
        return self.module.add_metadata(list(ops))

    def loop_id(self, mark: str) -> ir.values.MDValue:
        ops = [self.md("llvm.loop.mustprogress")]
        if mark == "vectorize":
            ops.append(self.md("llvm.loop.vectorize.enable", ir.Constant(I1, 1)))
        elif mark == "unroll":
            ops.append(self.md("llvm.loop.unroll.enable"))
        return _LoopID(self.module, ops, name=str(len(self.module.metadata)))

    def gemm_function(self, dt: DType) -> ir.Function:
        lib = _gemm_lib()
        if self.opt.gemm_in_module:
            return lib.declare_gemm(self.module, dt.name, _gemm_target())
        return self.intrinsic(lib.gemm_name(dt.name), VOID, list(gemm_function_type().args))

    def fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    # .. top level ..
    def generate(self) -> GeneratedModule:
        p = self.p
        ext = p.external()
        kfuncs = []
        kernels = []
        for idx, k in enumerate(p.kernels):
            used, written = buffers_used(k.body)
            fname = f"{self.prefix}.k{idx}_{_sanitize(k.name)}"
            fn = self.kernel_function(fname, used, written, k)
            kernels.append((fn, used, p.status is not None and p.status in written))
            kfuncs.append(fname)
        # entry
        entry_name = f"{self.prefix}_entry"
        entry = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=entry_name)
        entry.attributes.add("nounwind")
        entry.args[0].name = "args"
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        ptrs: dict[str, ir.Value] = {}
        for i, name in enumerate(ext):
            slot = b.gep(entry.args[0], [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
            ptrs[name] = b.load(slot, name=_sanitize(name), typ=PTR, align=8)
        slot = b.gep(entry.args[0], [ir.Constant(I64, len(ext))], inbounds=True, source_etype=PTR)
        arena = b.load(slot, name="arena", typ=PTR, align=8)

        def address(name: str) -> ir.Value:
            root, off = self.storage[name]  # includes WORKSPACE
            base = arena if root == "<arena>" else ptrs[root]
            if off == 0:
                return base
            return b.gep(base, [ir.Constant(I64, off)], inbounds=True, source_etype=I8)

        checks = self.numerics_plan()
        counters = None
        if self.opt.profile:
            arr_t = ir.ArrayType(I64, max(len(kernels), 1))
            counters = ir.GlobalVariable(self.module, arr_t, f"{self.prefix}_kernel_cycles")
            counters.initializer = ir.Constant(arr_t, None)
            counters.type = PTR  # opaque, so GEP with source_etype yields element pointers
            clock = self.intrinsic("llvm.readcyclecounter", I64, [])
        for k, (fn, used, reports) in enumerate(kernels):
            args = [address(n) for n in used]
            if counters is None:
                b.call(fn, args)
            else:
                t0 = b.call(clock, [])
                b.call(fn, args)
                t1 = b.call(clock, [])
                slot = b.gep(counters, [ir.Constant(I64, 0), ir.Constant(I64, k)], inbounds=True,
                             source_etype=arr_t)
                b.store(b.add(b.load(slot, typ=I64), b.sub(t1, t0)), slot)
            if reports:  # a failing call stops here (Program.status)
                code = b.load(address(p.status), typ=I32, align=4)
                failed = b.icmp_signed("!=", code, ir.Constant(I32, 0))
                with b.if_then(failed, likely=False):
                    b.ret_void()
            if checks and checks[k]:
                self.emit_numerics_check(b, address, checks[k], len(p.errors) + 1 + k)
        b.ret_void()
        py_entry = None
        if self.opt.py_data_offset:
            py_entry = f"{self.prefix}_pyentry"
            pf = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=py_entry)
            pf.attributes.add("nounwind")
            pb = ir.IRBuilder(pf.append_basic_block("entry"))
            n = len(ext) + 1
            args = pb.alloca(PTR, size=ir.Constant(I64, n), name="args")
            for i in range(n):
                src = pb.gep(pf.args[0], [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
                obj = pb.load(src, typ=PTR, align=8)
                if i < len(ext):
                    dp = pb.gep(obj, [ir.Constant(I64, self.opt.py_data_offset)], inbounds=True,
                                source_etype=I8)
                    val = pb.load(dp, typ=PTR, align=8)
                else:
                    val = obj
                dst = pb.gep(args, [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
                pb.store(val, dst, align=8)
            pb.call(entry, [args])
            pb.ret_void()
        a = abi(p, self.opt)
        assert (a.entry, a.py_entry, a.num_threads_global) == (entry_name, py_entry, self.nthreads_gv.name)
        return GeneratedModule(self.module, entry_name, py_entry, self.nthreads_gv.name, ext,
                               a.arena_bytes, kfuncs)

    # .. check_numerics ..
    def numerics_plan(self) -> list[tuple[str, ...]] | None:
        if not self.opt.check_numerics:
            return None
        if self.p.status is None:
            raise CodegenError(f"check_numerics needs a status buffer; program {self.p.name!r} has none")
        from ..numerics import check_plan
        return check_plan(self.p)

    def emit_numerics_check(self, b: ir.IRBuilder, address, names: tuple[str, ...], code: int) -> None:
        """status[0] = code and return, when one of the buffers holds NaN or +-inf."""
        flag = None
        for name in names:
            buf = self.p.buffers[name]
            f = b.call(self.nonfinite_function(buf.dtype), [address(name), ir.Constant(I64, buf.size)])
            flag = f if flag is None else b.or_(flag, f)
        with b.if_then(flag, likely=False):
            b.store(ir.Constant(I32, code), address(self.p.status), align=4)
            b.ret_void()

    def nonfinite_function(self, dt: DType) -> ir.Function:
        """i1 <prefix>.nonfinite_<dt>(ptr p, i64 n): some p[0..n) is NaN or +-inf. Integer
        ops on the bits (exact for every float width), an unsigned-max reduction LLVM
        vectorises; no early exit, so the loop streams at memory speed."""
        name = f"{self.prefix}.nonfinite_{dt.name}"
        fn = self.decls.get(name)
        if fn is not None:
            return fn
        width = dt.itemsize * 8
        it = ir.IntType(width)
        mask = {16: 0x7C00, 32: 0x7F800000, 64: 0x7FF0000000000000}[width]
        fn = ir.Function(self.module, ir.FunctionType(I1, [PTR, I64]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        ptr, n = fn.args
        ptr.add_attribute("noalias")
        entry, loop, done = (fn.append_basic_block(x) for x in ("entry", "loop", "done"))
        b = ir.IRBuilder(entry)
        b.branch(loop)
        b.position_at_end(loop)
        i = b.phi(I64, name="i")
        acc = b.phi(it, name="acc")
        i.add_incoming(ir.Constant(I64, 0), entry)
        acc.add_incoming(ir.Constant(it, 0), entry)
        elem = b.load(b.gep(ptr, [i], inbounds=True, source_etype=it), typ=it)
        bits = b.and_(elem, ir.Constant(it, mask))
        nxt_acc = b.select(b.icmp_unsigned(">", bits, acc), bits, acc)
        nxt = b.add(i, ir.Constant(I64, 1), flags=("nuw", "nsw"))
        i.add_incoming(nxt, loop)
        acc.add_incoming(nxt_acc, loop)
        br = b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
        br.set_metadata("llvm.loop", self.loop_id("vectorize"))
        b.position_at_end(done)
        b.ret(b.icmp_unsigned("==", nxt_acc, ir.Constant(it, mask)))
        self.decls[name] = fn
        return fn

    def param_attrs(self, arg: ir.Argument, name: str, used: list[str], written: set[str]) -> None:
        root, lo, hi = self.byte_range(name)
        overlaps = False
        for other in used:
            if other == name:
                continue
            r2, lo2, hi2 = self.byte_range(other)
            if r2 == root and lo2 < hi and lo < hi2 and (name in written or other in written):
                overlaps = True
                break
        if not overlaps:
            arg.add_attribute("noalias")
        if hi > lo:
            arg.attributes.dereferenceable = hi - lo
        if root == "<arena>" and lo % 64 == 0:
            arg.attributes.align = 64

    def kernel_function(self, fname: str, used: list[str], written: set[str], k: K.Kernel) -> ir.Function:
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * len(used)), name=fname)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")  # see "Module layout" in the module docstring
        for arg, name in zip(fn.args, used):
            arg.name = _sanitize(name)
            self.param_attrs(arg, name, used, written)
        fg = _FuncGen(self, fn, dict(zip(used, fn.args)), k)
        fg.emit_body(k.body, top=True)
        fg.finish()
        return fn


class _FuncGen:
    """Emits statements into one LLVM function."""

    def __init__(self, mg: _ModuleGen, fn: ir.Function, bufs: dict[str, ir.Value], kernel: K.Kernel,
                 used: list[str] | None = None) -> None:
        self.mg = mg
        self.fn = fn
        self.kernel = kernel
        self.bufs = bufs
        self.entry_block = fn.append_basic_block("entry")
        self.alloca_builder = ir.IRBuilder(self.entry_block)
        body = fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.vars: dict[str, ir.Value] = {}
        self.locals: dict[str, tuple[ir.Value, DType]] = {}
        self.captured: dict[str, ir.Value] = {}  # read-only locals passed by value
        self.captured_dtypes: dict[str, DType] = {}
        self.reduce_depth = 0
        self.in_loop = 0
        self.fm: tuple = ()
        self._memo: dict[int, ir.Value] = {}

    def finish(self) -> None:
        self.b.ret_void()
        self.alloca_builder.branch(self.fn.blocks[1])

    def error(self, msg: str) -> CodegenError:
        src = f" (computes {self.kernel.source})" if self.kernel.source else ""
        return CodegenError(f"kernel {self.kernel.name!r}{src}: {msg}")

    # .. statements ..
    def emit_body(self, stmts, top: bool = False) -> None:
        for s in stmts:
            self._memo = {}
            if isinstance(s, K.For):
                if top and s.mark == "parallel" and self.mg.opt.parallel and s.extent > 1:
                    self.emit_parallel(s)
                else:
                    self.emit_for(s)
            elif isinstance(s, K.Store):
                self.emit_store(s)
            elif isinstance(s, K.Declare):
                self.emit_declare(s)
            elif isinstance(s, K.Assign):
                self.emit_assign(s)
            elif isinstance(s, K.Gemm):
                self.emit_gemm(s, top)
            elif isinstance(s, _GemmCall):
                self.emit_gemm_call(s)
            elif isinstance(s, _GemmLoops):
                self.emit_body(s.build(self.mg.dtypes), top=top)
            else:
                raise self.error(f"unknown statement {type(s).__name__}")

    def emit_for(self, s: K.For) -> None:
        if s.extent <= 0:
            return
        mark = s.mark
        if mark == "vectorize" and (s.extent < MIN_FORCED_VECTOR_TRIPS or not _vectorizable(s.body)):
            mark = "serial"  # forcing it would only make LLVM print a warning
        self.loop(s.var.name, ir.Constant(I64, 0), ir.Constant(I64, s.extent), mark,
                  lambda: self.emit_body(s.body), nonempty=True)

    def loop(self, var: str, lo: ir.Value, hi: ir.Value, mark: str, body, nonempty: bool) -> None:
        b = self.b
        pre = b.block
        header = self.fn.append_basic_block(f"{_sanitize(var)}.loop")
        exit_ = self.fn.append_basic_block(f"{_sanitize(var)}.end")
        if nonempty:
            b.branch(header)
        else:
            b.cbranch(b.icmp_signed("<", lo, hi), header, exit_)
        b.position_at_end(header)
        phi = b.phi(I64, name=_sanitize(var))
        phi.add_incoming(lo, pre)
        saved = self.vars.get(var)
        self.vars[var] = phi
        self.in_loop += 1
        if mark == "reduce":
            self.reduce_depth += 1
        body()
        if mark == "reduce":
            self.reduce_depth -= 1
        self.in_loop -= 1
        if saved is None:
            self.vars.pop(var, None)
        else:
            self.vars[var] = saved
        nxt = b.add(phi, ir.Constant(I64, 1), name=f"{_sanitize(var)}.next", flags=("nuw", "nsw"))
        phi.add_incoming(nxt, b.block)
        br = b.cbranch(b.icmp_signed("<", nxt, hi), header, exit_)
        br.set_metadata("llvm.loop", self.mg.loop_id(mark))
        b.position_at_end(exit_)
        self._memo = {}

    def emit_store(self, s: K.Store) -> None:
        if s.buffer not in self.bufs:
            raise self.error(f"store to unknown buffer {s.buffer!r}")
        dt = self.mg.dtypes[s.buffer]
        idx = self.index(s.index)
        val = self.expr(s.value)
        val = self.convert(val, s.value.dtype, dt)
        self.store_mem(val, dt, s.buffer, idx)

    def store_mem(self, val: ir.Value, dt: DType, buffer: str, idx: ir.Value) -> None:
        b = self.b
        if dt.name == "f16":
            val = b.fptrunc(val, F16)
        elif dt.is_bool:
            val = b.zext(val, I8)
        ptr = b.gep(self.bufs[buffer], [idx], inbounds=True, source_etype=mtype(dt))
        b.store(val, ptr, align=dt.itemsize)

    def emit_declare(self, s: K.Declare) -> None:
        dt = s.local.dtype
        slot = self.alloca_builder.alloca(ctype(dt), name=_sanitize(s.local.name))
        val = self.convert(self.expr(s.init), s.init.dtype, dt)
        self.b.store(val, slot)
        self.locals[s.local.name] = (slot, dt)
        self.captured.pop(s.local.name, None)

    def emit_assign(self, s: K.Assign) -> None:
        name = s.local.name
        if name not in self.locals:
            if name in self.captured:
                raise self.error(f"local ${name} is declared outside a parallel loop and assigned "
                                 "inside it (a data race); declare it inside the loop")
            raise self.error(f"assignment to undeclared local ${name}")
        slot, dt = self.locals[name]
        self.fm = ("reassoc", "contract") if self.reduce_depth else ()
        try:
            val = self.convert(self.expr(s.value), s.value.dtype, dt)
        finally:
            self.fm = ()
        self.b.store(val, slot)

    # .. parallel loops ..
    def emit_parallel(self, s: K.For) -> None:
        mg = self.mg
        used, written = buffers_used(s.body)
        # locals read inside but declared outside: captured by value
        declared_inside = {x.local.name for x in _walk_stmts(s.body) if isinstance(x, K.Declare)}
        reads: dict[str, DType] = {}
        for st in _walk_stmts(s.body):
            if isinstance(st, K.Assign) and st.local.name not in declared_inside:
                raise self.error(f"local ${st.local.name} is declared outside a parallel loop and "
                                 "assigned inside it (a data race); declare it inside the loop")
            for e in _stmt_exprs(st):
                for x in _local_refs(e):
                    if x.name not in declared_inside:
                        if x.name not in self.locals and x.name not in self.captured:
                            raise self.error(f"use of undeclared local ${x.name}")
                        reads[x.name] = x.dtype
        cap_names = list(reads)
        cap_types = [ctype(self.local_dtype(n)) for n in cap_names]
        stem = self.fn.name + ".par"
        cname = mg.fresh(stem)
        # chunk function
        cfn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR] * len(used) + cap_types + [I64, I64]),
                          name=cname)
        cfn.linkage = "internal"
        cfn.attributes.add("nounwind")
        cfn.attributes.add("noinline")  # called from the serial path and the OpenMP body
        for arg, name in zip(cfn.args, used):
            arg.name = _sanitize(name)
            mg.param_attrs(arg, name, used, written)
        sub = _FuncGen(mg, cfn, dict(zip(used, cfn.args[:len(used)])), self.kernel)
        for n, a in zip(cap_names, cfn.args[len(used):len(used) + len(cap_names)]):
            a.name = _sanitize(n)
            sub.captured[n] = a
            sub.captured_dtypes[n] = self.local_dtype(n)
        lo, hi = cfn.args[-2], cfn.args[-1]
        sub.loop(s.var.name, lo, hi, "serial", lambda: sub.emit_body(s.body), nonempty=False)
        sub.finish()
        # values to pass
        vals = [self.bufs[n] for n in used] + [self.local_value(n) for n in cap_names]
        b = self.b
        work = estimate_work([s])
        from .engine import gomp_available
        if work < mg.opt.parallel_min_work or not gomp_available():
            b.call(cfn, vals + [ir.Constant(I64, 0), ir.Constant(I64, s.extent)])
            return
        ext = ir.Constant(I64, s.extent)

        def body(ob, fields, tid, nt):  # this thread's static chunk
            chunk = ob.sdiv(ob.add(ext, ob.sub(nt, ir.Constant(I64, 1))), nt)
            if s.extent > 64:
                rounded = ob.and_(ob.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
                chunk = ob.select(ob.icmp_signed(">", chunk, ir.Constant(I64, 64)), rounded, chunk)
            lo_v = ob.mul(tid, chunk)
            lo_v = ob.select(ob.icmp_signed("<", lo_v, ext), lo_v, ext)
            hi_v = ob.add(lo_v, chunk)
            hi_v = ob.select(ob.icmp_signed("<", hi_v, ext), hi_v, ext)
            ob.call(cfn, fields + [lo_v, hi_v])

        self.parallel_region(cname + ".omp", vals,
                             lambda bb: bb.call(cfn, vals + [ir.Constant(I64, 0), ext]), body)

    def parallel_region(self, name: str, vals: list, serial, body) -> None:
        """`serial(builder)` when num_threads == 1, else GOMP_parallel of an outlined
        `void name(ptr data)` that unpacks `vals` from a stack struct and runs
        `body(builder, values, thread_id, num_threads)` (i64 ids) on every thread."""
        mg = self.mg
        b = self.b
        st_t = ir.LiteralStructType([v.type for v in vals])
        ofn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR]), name=name)
        ofn.linkage = "internal"
        ofn.attributes.add("nounwind")
        ob = ir.IRBuilder(ofn.append_basic_block("entry"))
        fields = []
        for i, t in enumerate(st_t.elements):
            fp = ob.gep(ofn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                        source_etype=st_t)
            fields.append(ob.load(fp, typ=t))
        tid = ob.sext(ob.call(mg.intrinsic("omp_get_thread_num", I32, []), []), I64)
        nt = ob.sext(ob.call(mg.intrinsic("omp_get_num_threads", I32, []), []), I64)
        body(ob, fields, tid, nt)
        ob.ret_void()
        # the call site
        ntv = b.load(mg.nthreads_gv, typ=I32)
        serial_bb = self.fn.append_basic_block("par.serial")
        par_bb = self.fn.append_basic_block("par.fork")
        done_bb = self.fn.append_basic_block("par.done")
        b.cbranch(b.icmp_signed("==", ntv, ir.Constant(I32, 1)), serial_bb, par_bb)
        b.position_at_end(serial_bb)
        serial(b)
        b.branch(done_bb)
        b.position_at_end(par_bb)
        data = _opaque_alloca(self.alloca_builder, st_t, "par.data")
        for i, v in enumerate(vals):
            fp = b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True, source_etype=st_t)
            b.store(v, fp)
        gomp = mg.intrinsic("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
        b.call(gomp, [ofn, data, ntv, ir.Constant(I32, 0)])
        b.branch(done_bb)
        b.position_at_end(done_bb)

    def local_dtype(self, name: str) -> DType:
        if name in self.locals:
            return self.locals[name][1]
        return self.captured_dtypes[name]

    def local_value(self, name: str) -> ir.Value:
        if name in self.locals:
            slot, dt = self.locals[name]
            return self.b.load(slot, typ=ctype(dt))
        return self.captured[name]

    # .. GEMM ..
    def emit_gemm(self, g: K.Gemm, top: bool) -> None:
        for n in (g.a, g.b, g.c):
            if n not in self.bufs:
                raise self.error(f"gemm uses unknown buffer {n!r}")
        if min(g.m, g.n, g.batch) <= 0:
            return
        tag = self.mg.fresh("")
        parallel = top and self.mg.opt.parallel
        if not uses_gemm_library(g, self.mg.dtypes):
            self.emit_body(gemm_loops(g, parallel, tag), top=top)
            return
        work = 2 * g.batch * g.m * g.n * g.k
        threaded = parallel and work >= self.mg.opt.parallel_min_work
        if g.batch == 1 and threaded:
            self.emit_gemm_team(g)
        elif g.batch == 1:
            self.emit_gemm_call(_GemmCall(g, None))
        else:
            vb = K.Var(f"_gb{tag}")
            loop = K.For(vb, g.batch, [_GemmCall(g, vb)], "parallel" if threaded else "serial")
            self.emit_body([loop], top=top)

    def gemm_epilogue_callback(self, g: K.Gemm) -> tuple[ir.Value, ir.Value]:
        """(function, context) arguments of graphc_gemm for g's epilogue (nulls without
        one): an internal function that applies the epilogue to a finished tile of C, and a
        stack struct of the buffers, enclosing loop variables and locals it reads."""
        mg = self.mg
        null = ir.Constant(PTR, None)
        if g.epilogue is None:
            return null, null
        bufs: list[str] = []
        loop_vars: list[str] = []
        locs: list[str] = []
        for x in _walk_expr(g.epilogue):
            if isinstance(x, K.Load) and x.buffer not in bufs:
                bufs.append(x.buffer)
            elif isinstance(x, K.Var) and x.name not in ("i", "j") and x.name not in loop_vars:
                loop_vars.append(x.name)
            elif isinstance(x, K.LocalRef) and x.name != "acc" and x.name not in locs:
                locs.append(x.name)
        for n in bufs:
            if n not in self.bufs:
                raise self.error(f"gemm epilogue reads unknown buffer {n!r}")
        for n in loop_vars:
            if n not in self.vars:
                raise self.error(f"gemm epilogue uses loop variable {n!r} outside its loop")
        vals = [self.bufs[n] for n in bufs] + [self.vars[n] for n in loop_vars] + \
            [self.local_value(n) for n in locs]
        st_t = ir.LiteralStructType([v.type for v in vals] or [I8])
        data = _opaque_alloca(self.alloca_builder, st_t, "epi.data")
        for i, v in enumerate(vals):
            self.b.store(v, self.b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                                       source_etype=st_t))
        fn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR, I64, I64, I64, I64, PTR, I64]),
                         name=mg.fresh(self.fn.name + ".epi"))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        ctx, row, col, rows, cols, ctile, ldc = fn.args
        # C never overlaps what the epilogue reads (its operands are live inputs of the
        # kernel, and GEMM kernels never run in place): no runtime overlap checks
        ctile.add_attribute("noalias")
        dc = mg.dtypes[g.c]
        tile = f"<gemm tile {dc.name}>"  # pseudo-buffer: the tile handed to the epilogue
        mg.dtypes[tile] = dc
        sub = _FuncGen(mg, fn, {tile: ctile}, self.kernel)
        fields = [sub.b.load(sub.b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                                       source_etype=st_t), typ=v.type) for i, v in enumerate(vals)]
        sub.bufs.update(zip(bufs, fields))
        sub.vars.update(zip(loop_vars, fields[len(bufs):]))
        for n, v in zip(locs, fields[len(bufs) + len(loop_vars):]):
            sub.captured[n] = v
            sub.captured_dtypes[n] = self.local_dtype(n)
        sub.vars.update({"_ep_row": row, "_ep_col": col, "_ep_ldc": ldc})
        vi, vj = K.Var("_ep_i"), K.Var("_ep_j")
        idx = K.Binary("add", K.Binary("mul", K.Binary("sub", vi, K.Var("_ep_row"), i64), K.Var("_ep_ldc"), i64),
                       K.Binary("sub", vj, K.Var("_ep_col"), i64), i64)
        acc = K.LocalRef("_ep_acc", _compute_dtype(dc))
        body = [K.Declare(acc, K.Load(tile, idx, dc)), K.Store(tile, idx, _GemmEpilogue(g.epilogue, acc, vi, vj))]
        row_end = sub.b.add(row, rows)

        def tile(width: ir.Value) -> None:
            col_end = sub.b.add(col, width)
            sub.loop(vi.name, row, row_end, "serial",
                     lambda: sub.loop(vj.name, col, col_end, "vectorize", lambda: sub.emit_body(body),
                                      nonempty=False), nonempty=False)
        # Nearly every tile is NR columns wide: a constant trip count vectorises fully.
        nr = ir.Constant(I64, _gemm_target().blocking(dc.name).nr)
        with sub.b.if_else(sub.b.icmp_signed("==", cols, nr), likely=True) as (full, edge):
            with full:
                tile(nr)
            with edge:
                tile(cols)
        sub.finish()
        return fn, data

    def gemm_args(self, g: K.Gemm, vb, b: ir.IRBuilder | None = None) -> list:
        """Pointer and size arguments of graphc_gemm for one matrix (up to the workspace)."""
        b = b or self.b
        lda, ldb, ldc = gemm_lds(g)
        dtv = self.mg.dtypes[g.c]
        et = mtype(dtv)

        def ptr(buf, off, stride):
            idx = self.index(off) if not isinstance(off, int) else ir.Constant(I64, off)
            if stride and vb is not None:
                idx = b.add(idx, b.mul(self.vars[vb.name], ir.Constant(I64, stride)))
            return b.gep(self.bufs[buf], [idx], inbounds=True, source_etype=et)

        c64 = lambda v: ir.Constant(I64, v)  # noqa: E731
        c32 = lambda v: ir.Constant(I32, int(v))  # noqa: E731
        return [c64(g.m), c64(g.n), c64(g.k),
                ptr(g.a, g.offset_a, g.stride_a), c64(lda), c32(g.trans_a),
                ptr(g.b, g.offset_b, g.stride_b), c64(ldb), c32(2 if g.b_panels else g.trans_b),
                ptr(g.c, g.offset_c, g.stride_c), c64(ldc), c32(g.accumulate)]

    def emit_gemm_call(self, st: _GemmCall) -> None:
        """One matrix on this thread: its own workspace region (omp_get_thread_num() is 0
        outside a parallel region, and a part's index, below max_threads, when a batch
        split runs this program inside its own team: backends/llvm/split.py)."""
        g = st.g
        mg = self.mg
        lib = _gemm_lib()
        dt = mg.dtypes[g.c]
        fn = mg.gemm_function(dt)
        per = lib.workspace_elements(g.m, g.n, g.k, 1, _gemm_target(), dt.name)
        b = self.b
        tid = b.sext(b.call(mg.intrinsic("omp_get_thread_num", I32, []), []), I64)
        ws = b.gep(self.bufs[WORKSPACE], [b.mul(tid, ir.Constant(I64, per))], inbounds=True,
                   source_etype=mtype(dt))
        epi = list(self.gemm_epilogue_callback(g))
        b.call(fn, self.gemm_args(g, st.vb) + [ws, ir.Constant(I64, 0), ir.Constant(I64, 1)] + epi)

    def emit_gemm_team(self, g: K.Gemm) -> None:
        """One large matrix split across the team by the library (each thread its share)."""
        mg = self.mg
        lib = _gemm_lib()
        dt = mg.dtypes[g.c]
        fn = mg.gemm_function(dt)
        args = self.gemm_args(g, None) + [self.bufs[WORKSPACE]]
        epi = list(self.gemm_epilogue_callback(g))
        self.parallel_region(mg.fresh(self.fn.name + ".gemm"), args + epi,
                             lambda bb: bb.call(fn, args + [ir.Constant(I64, 0), ir.Constant(I64, 1)] + epi),
                             lambda ob, vals, tid, nt: ob.call(fn, list(vals[:-2]) + [tid, nt] + list(vals[-2:])))

    # .. expressions ..
    def index(self, e) -> ir.Value:
        v = self.expr(e)
        if e.dtype.is_bool:
            return self.b.zext(v, I64)
        if v.type == I32:
            return self.b.sext(v, I64)
        if e.dtype.is_float:
            raise self.error(f"floating-point index expression {e}")
        return v

    def expr(self, e) -> ir.Value:
        hit = self._memo.get(id(e))
        if hit is not None:
            return hit[0]
        v = self._expr(e)
        self._memo[id(e)] = (v, e)  # holding e keeps its id() unique
        return v

    def _expr(self, e) -> ir.Value:
        b = self.b
        if isinstance(e, K.Const):
            return self.const(e.value, e.dtype)
        if isinstance(e, K.Var):
            v = self.vars.get(e.name)
            if v is None:
                raise self.error(f"loop variable {e.name!r} used outside its loop")
            return self.convert(v, i64, e.dtype) if e.dtype != i64 else v
        if isinstance(e, K.LocalRef):
            if e.name in self.locals:
                slot, dt = self.locals[e.name]
                v = b.load(slot, typ=ctype(dt))
            elif e.name in self.captured:
                dt = self.captured_dtypes[e.name]
                v = self.captured[e.name]
            else:
                raise self.error(f"use of undeclared local ${e.name}")
            return self.convert(v, dt, e.dtype)
        if isinstance(e, K.Load):
            if e.buffer not in self.bufs:
                raise self.error(f"load from unknown buffer {e.buffer!r}")
            dt = self.mg.dtypes[e.buffer]
            ptr = b.gep(self.bufs[e.buffer], [self.index(e.index)], inbounds=True, source_etype=mtype(dt))
            v = b.load(ptr, typ=mtype(dt), align=dt.itemsize)
            if dt.name == "f16":
                v = b.fpext(v, F32)
            elif dt.is_bool:
                v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
            return self.convert(v, dt, e.dtype)
        if isinstance(e, K.Cast):
            return self.convert(self.expr(e.x), e.x.dtype, e.dtype)
        if isinstance(e, K.Unary):
            x = self.convert(self.expr(e.x), e.x.dtype, e.dtype)
            return self.unary(e.op, x, e.dtype)
        if isinstance(e, K.Binary):
            a = self.convert(self.expr(e.a), e.a.dtype, e.dtype)
            bb = self.convert(self.expr(e.b), e.b.dtype, e.dtype)
            return self.binary(e.op, a, bb, e.dtype, e.contract)
        if isinstance(e, K.Compare):
            dt = e.a.dtype
            if e.b.dtype != dt:
                dt = _promote(e.a.dtype, e.b.dtype)
            a = self.convert(self.expr(e.a), e.a.dtype, dt)
            bb = self.convert(self.expr(e.b), e.b.dtype, dt)
            return self.compare(e.op, a, bb, dt)
        if isinstance(e, K.Select):
            c = self.convert(self.expr(e.cond), e.cond.dtype, bool_)
            a = self.convert(self.expr(e.a), e.a.dtype, e.dtype)
            bb = self.convert(self.expr(e.b), e.b.dtype, e.dtype)
            return b.select(c, a, bb)
        if isinstance(e, _GemmEpilogue):
            saved = {n: self.vars.get(n) for n in ("i", "j")}
            self.vars["i"] = self.vars[e.vi.name]
            self.vars["j"] = self.vars[e.vj.name]
            saved_local = self.locals.get("acc")
            self.locals["acc"] = self.locals[e.acc.name]
            memo = self._memo
            self._memo = {}
            try:
                return self.expr(e.expr)
            finally:
                self._memo = memo
                for n, v in saved.items():
                    if v is None:
                        self.vars.pop(n, None)
                    else:
                        self.vars[n] = v
                if saved_local is None:
                    self.locals.pop("acc", None)
                else:
                    self.locals["acc"] = saved_local
        raise self.error(f"unknown expression {type(e).__name__}")

    def const(self, value, dt: DType) -> ir.Value:
        if dt.is_bool:
            return ir.Constant(I1, 1 if value else 0)
        if dt.is_float:
            v = float(value)
            if dt.name == "f16":
                v = float(np.float16(v))
            return ir.Constant(ctype(dt), v)
        v = int(value)
        bits = 32 if dt.name == "i32" else 64
        v = ((v + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))  # wrap like numpy casts
        return ir.Constant(ctype(dt), v)

    def convert(self, v: ir.Value, src: DType, dst: DType) -> ir.Value:
        """Cast semantics (see the module docstring)."""
        if src == dst:
            return v
        b = self.b
        st, dt_ = ctype(src), ctype(dst)
        if dst.is_bool:
            if src.is_float:
                return b.fcmp_unordered("!=", v, ir.Constant(st, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(st, 0))
        if src.is_bool:
            return b.uitofp(v, dt_) if dst.is_float else b.zext(v, dt_)
        if src.is_float and dst.is_float:
            if dst.name == "f16":
                return self.round_to_half(v)
            if st == dt_:
                return v
            return b.fpext(v, dt_) if dt_ == F64 else b.fptrunc(v, dt_)
        if src.is_float:  # saturating, NaN -> 0 (ir.dtypes.float_to_int); selects vectorise
            hi = float(2 ** (dt_.width - 1))
            out = b.fptosi(v, dt_)
            out = b.select(b.fcmp_ordered(">=", v, ir.Constant(st, hi)),
                           ir.Constant(dt_, 2 ** (dt_.width - 1) - 1), out)
            out = b.select(b.fcmp_ordered("<", v, ir.Constant(st, -hi)),
                           ir.Constant(dt_, -(2 ** (dt_.width - 1))), out)
            return b.select(b.fcmp_unordered("uno", v, v), ir.Constant(dt_, 0), out)
        if dst.is_float:
            v = b.sitofp(v, dt_)
            # |ints| < 2**24 convert to f32 exactly; larger ones are inf in f16 either way
            return self.round_to_half(v) if dst.name == "f16" else v
        if st == dt_:
            return v
        return b.sext(v, dt_) if dt_.width > st.width else b.trunc(v, dt_)

    def round_to_half(self, v: ir.Value) -> ir.Value:
        """Round a float or double to half precision (nearest even), kept as float.

        double -> half goes through float with round-to-odd (exact: float has more than
        11 + 2 bits), because LLVM lowers a direct fptrunc double -> half to a call of
        compiler-rt's __truncdfhf2, which the process does not provide."""
        b = self.b
        if v.type == F64:
            r = b.fptrunc(v, F32)
            bits = b.bitcast(r, I32)
            back = b.fpext(r, F64)
            fabs = self.mg.intrinsic("llvm.fabs.f64", F64, [F64])
            inexact = b.fcmp_ordered("!=", back, v)
            away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [v]))
            toward_zero = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
            odd = b.or_(toward_zero, ir.Constant(I32, 1))
            v = b.bitcast(b.select(inexact, odd, bits), F32)
        return b.fpext(b.fptrunc(v, F16), F32)

    def compare(self, op: str, a: ir.Value, bb: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.get(op)
        if sym is None:
            raise self.error(f"unknown compare op {op!r}")
        if dt.is_float:
            if op == "ne":
                return b.fcmp_unordered("!=", a, bb)
            return b.fcmp_ordered(sym, a, bb)
        if dt.is_bool:
            return b.icmp_unsigned(sym, a, bb)
        return b.icmp_signed(sym, a, bb)

    def unary(self, op: str, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        t = x.type
        if dt.is_float:
            if op == "neg":
                return b.fneg(x)
            if op == "abs":
                return b.call(self.mg.intrinsic(f"llvm.fabs.{_fsuf(t)}", t, [t]), [x])
            if op == "sign":
                one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
                s = b.select(b.fcmp_ordered(">", x, zero), one,
                             b.select(b.fcmp_ordered("<", x, zero), ir.Constant(t, -1.0), zero))
                return b.select(b.fcmp_unordered("uno", x, x), x, s)
            if op == "sqrt":
                return b.call(self.mg.intrinsic(f"llvm.sqrt.{_fsuf(t)}", t, [t]), [x])
            if op in MATH_FUNCS:
                return self.math(op, [x], dt)
            if op == "not":
                return b.fcmp_ordered("==", x, ir.Constant(t, 0.0))
        elif dt.is_bool:
            if op == "not":
                return b.xor(x, ir.Constant(I1, 1))
            if op in ("abs",):
                return x
            if op == "neg":
                return x
            if op == "sign":
                return x
        else:
            if op == "neg":
                return b.sub(ir.Constant(t, 0), x)
            if op == "abs":
                return b.select(b.icmp_signed("<", x, ir.Constant(t, 0)), b.sub(ir.Constant(t, 0), x), x)
            if op == "sign":
                pos = b.zext(b.icmp_signed(">", x, ir.Constant(t, 0)), t)
                neg = b.zext(b.icmp_signed("<", x, ir.Constant(t, 0)), t)
                return b.sub(pos, neg)
            if op == "not":
                return b.xor(x, ir.Constant(t, -1))
        raise self.error(f"unary {op} is not defined for {dt}")

    def binary(self, op: str, a: ir.Value, bb: ir.Value, dt: DType, contract: bool = False) -> ir.Value:
        b = self.b
        t = a.type
        fm = self.fm + ("contract",) if contract and "contract" not in self.fm else self.fm
        if dt.is_float:
            if op == "add":
                return b.fadd(a, bb, flags=fm)
            if op == "sub":
                return b.fsub(a, bb, flags=fm)
            if op == "mul":
                return b.fmul(a, bb, flags=fm)
            if op == "div":
                return b.fdiv(a, bb)
            if op == "pow":
                return self.math("pow", [a, bb], dt)
            if op in ("max", "min"):
                return self.fminmax(op, a, bb)
            if op == "mod":
                zero = ir.Constant(t, 0.0)
                r = b.frem(a, bb)
                fix = b.and_(b.fcmp_ordered("!=", r, zero),
                             b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", bb, zero)))
                r = b.select(fix, b.fadd(r, bb), r)
                cs = self.mg.intrinsic(f"llvm.copysign.{_fsuf(t)}", t, [t, t])
                return b.select(b.fcmp_ordered("==", r, zero), b.call(cs, [zero, bb]), r)
            if op in ("and", "or"):
                za = b.fcmp_unordered("!=", a, ir.Constant(t, 0.0))
                zb = b.fcmp_unordered("!=", bb, ir.Constant(t, 0.0))
                r = b.and_(za, zb) if op == "and" else b.or_(za, zb)
                return b.uitofp(r, t)
        elif dt.is_bool:
            if op in ("add", "or", "max"):
                return b.or_(a, bb)
            if op in ("mul", "and", "min"):
                return b.and_(a, bb)
            if op == "sub":
                return b.xor(a, bb)
        else:
            if op == "add":
                return b.add(a, bb)
            if op == "sub":
                return b.sub(a, bb)
            if op == "mul":
                return b.mul(a, bb)
            if op in ("div", "mod"):
                return self.int_divmod(op, a, bb)
            if op == "max":
                return b.select(b.icmp_signed(">", a, bb), a, bb)
            if op == "min":
                return b.select(b.icmp_signed("<", a, bb), a, bb)
            if op == "and":
                return b.and_(a, bb)
            if op == "or":
                return b.or_(a, bb)
            if op == "pow":
                return b.call(_ipow(self.mg, t), [a, bb])
        raise self.error(f"binary {op} is not defined for {dt}")

    def fminmax(self, op: str, a: ir.Value, bb: ir.Value) -> ir.Value:
        """NaN-propagating max/min (numpy.maximum/minimum)."""
        b = self.b
        if self.fm:  # inside a reduction: the intrinsic the vectoriser recognises
            name = "maximum" if op == "max" else "minimum"
            fn = self.mg.intrinsic(f"llvm.{name}.{_fsuf(a.type)}", a.type, [a.type, a.type])
            return b.call(fn, [a, bb])
        # b beats a only when strictly better and ordered: x86's maxps/minps (b, a), which
        # also passes a NaN a through. A NaN b is then OR-ed into the bits (any bits OR a
        # NaN's are a NaN); the term is zero otherwise. When b is loop-invariant (a relu or
        # clip bound) the term is hoisted, or folded away for a constant: one or two
        # instructions where testing a cost four. (As a select on b's NaN test, LLVM merged
        # it into the comparison's mask and unswitched the loop on it: five per vector.)
        t = b.select(b.fcmp_ordered(">" if op == "max" else "<", bb, a), bb, a)
        it = ir.IntType(64 if a.type == F64 else 32)
        nan_bits = b.select(b.fcmp_unordered("uno", bb, bb), b.bitcast(bb, it), ir.Constant(it, 0))
        return b.bitcast(b.or_(b.bitcast(t, it), nan_bits), a.type)

    def int_divmod(self, op: str, a: ir.Value, bb: ir.Value) -> ir.Value:
        """Floor division / Python modulo with x/0 = 0, x%0 = 0 and no INT_MIN/-1 trap."""
        b = self.b
        t = a.type
        zero, one, mone = ir.Constant(t, 0), ir.Constant(t, 1), ir.Constant(t, -1)
        bad = b.or_(b.icmp_signed("==", bb, zero), b.icmp_signed("==", bb, mone))
        d = b.select(bad, one, bb)
        q = b.sdiv(a, d)
        r = b.srem(a, d)
        adj = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, bb), zero))
        if op == "div":
            q = b.select(adj, b.sub(q, one), q)
            special = b.select(b.icmp_signed("==", bb, zero), zero, b.sub(zero, a))
            return b.select(bad, special, q)
        r = b.select(adj, b.add(r, bb), r)
        return b.select(bad, zero, r)

    def math(self, name: str, args: list[ir.Value], dt: DType) -> ir.Value:
        fn = math_function(self.mg, name, _compute_dtype(dt))
        return self.b.call(fn, args)


def _opaque_alloca(b: ir.IRBuilder, typ: ir.Type, name: str) -> ir.Value:
    """An alloca whose value is an opaque `ptr` (llvmlite types allocas as typed pointers,
    which its GEP with `source_etype` then propagates to the element addresses)."""
    a = b.alloca(typ, name=name)
    a.type = PTR
    return a


def _fsuf(t: ir.Type) -> str:
    return "f64" if t == F64 else "f32"


def _promote(a: DType, b: DType) -> DType:
    order = ["bool", "i32", "i64", "f16", "f32", "f64"]
    return a if order.index(a.name) >= order.index(b.name) else b


# -- math functions ---------------------------------------------------------------------------

def _mathlib():
    try:
        from . import mathlib
    except ImportError:
        return None
    return getattr(mathlib, "declare_math", None)


def math_function(mg: _ModuleGen, name: str, dt: DType) -> ir.Function:
    """The one switch point for transcendental functions: graphc's vectorisable mathlib
    when present, intrinsics/libm otherwise. Returns a function of ctype(dt) arguments."""
    declare = _mathlib()
    if declare is not None:
        return declare(mg.module, name, dt.name)
    return _fallback_math(mg, name, dt)


def _fallback_math(mg: _ModuleGen, name: str, dt: DType) -> ir.Function:
    t = ctype(dt)
    suf = _fsuf(t)
    key = f"graphc.fallback.{name}.{suf}"
    fn = mg.module.globals.get(key)
    if fn is not None:
        return fn
    nargs = 2 if name == "pow" else 1
    fn = ir.Function(mg.module, ir.FunctionType(t, [t] * nargs), name=key)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x = fn.args[0]
    one = ir.Constant(t, 1.0)

    def intr(n, *a):
        return b.call(mg.intrinsic(f"llvm.{n}.{suf}", t, [t] * len(a)), list(a))

    def libm(n, *a):
        cname = n + ("f" if t == F32 else "")
        return b.call(mg.intrinsic(cname, t, [t] * len(a)), list(a))

    if name in ("exp", "log", "sin", "cos"):
        r = intr(name, x)
    elif name == "pow":
        r = intr("pow", x, fn.args[1])
    elif name == "rsqrt":
        r = b.fdiv(one, intr("sqrt", x))
    elif name == "sigmoid":
        r = b.fdiv(one, b.fadd(one, intr("exp", b.fneg(x))))
    elif name in ("tanh", "erf"):
        r = libm(name, x)
    else:
        raise CodegenError(f"unknown math function {name}")
    b.ret(r)
    return fn


def _ipow(mg: _ModuleGen, t: ir.Type) -> ir.Function:
    key = f"graphc.ipow.i{t.width}"
    fn = mg.module.globals.get(key)
    if fn is not None:
        return fn
    fn = ir.Function(mg.module, ir.FunctionType(t, [t, t]), name=key)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    base, exp_ = fn.args
    entry = fn.append_basic_block("entry")
    neg = fn.append_basic_block("neg")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
    b.cbranch(b.icmp_signed("<", exp_, zero), neg, loop)
    b.position_at_end(neg)
    # numpy raises for negative integer powers; 1 and -1 have exact answers, others give 0
    is_one = b.icmp_signed("==", base, one)
    is_mone = b.icmp_signed("==", base, ir.Constant(t, -1))
    odd = b.trunc(exp_, I1)
    r_m1 = b.select(odd, ir.Constant(t, -1), one)
    b.ret(b.select(is_one, one, b.select(is_mone, r_m1, zero)))
    b.position_at_end(loop)
    acc = b.phi(t)
    bs = b.phi(t)
    e = b.phi(t)
    acc.add_incoming(one, entry)
    bs.add_incoming(base, entry)
    e.add_incoming(exp_, entry)
    cont = b.icmp_signed("!=", e, zero)
    body = fn.append_basic_block("body")
    b.cbranch(cont, body, done)
    b.position_at_end(body)
    odd = b.trunc(e, I1)
    acc2 = b.select(odd, b.mul(acc, bs), acc)
    bs2 = b.mul(bs, bs)
    e2 = b.ashr(e, one)
    acc.add_incoming(acc2, body)
    bs.add_incoming(bs2, body)
    e.add_incoming(e2, body)
    b.branch(loop)
    b.position_at_end(done)
    b.ret(acc)
    return fn


# -- public API -------------------------------------------------------------------------------

def generate(program: K.Program, options: CodegenOptions | None = None) -> GeneratedModule:
    """Render a kernel-IR program as one LLVM module (see the module docstring)."""
    options = options or CodegenOptions.from_env()
    return _ModuleGen(program, options).generate()


def program_key(program: K.Program) -> str:
    """Everything about a program that its machine code depends on, as text.

    `str(program)` omits GEMM leading dimensions, strides and offsets and the arena plan,
    so the full dataclass reprs of the kernels are used as well."""
    p = program
    parts = [str(p), repr(p.kernels), repr(sorted(p.arena.items())), str(p.arena_bytes),
             repr(sorted(p.aliases.items())), repr(p.external())]
    return "\n".join(parts)
