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

# The generator, split by idea (this module is its public entry and its documentation):
#   irtypes.py    LLVM types, loop-ID metadata, small IR helpers
#   options.py    CodegenOptions
#   module.py     the module, its entry, status and numerics checks (_ModuleGen)
#   function.py   one function's emitter state (_FuncGen), combining
#     loops.py      statements, loop nests, parallel outlining (through omp.py)
#     gemm_call.py  GEMM statements: library calls, epilogue callbacks
#     scalar.py     scalar expressions; casts.py constants and conversions
#   analysis.py   walks and work estimates; gemm_plan.py the GEMM switch and workspace;
#   gemm_loops.py the fallback GEMM loop nest; mathcall.py transcendental functions;
#   nodes.py      the generator's internal statement and expression nodes

from ...ir import kernel as K
from .analysis import MIN_FORCED_VECTOR_TRIPS, _walk_stmts, buffers_used, estimate_work
from .gemm_plan import (GEMM_MIN_MNK, WORKSPACE, _gemm_target, gemm_function_type, gemm_lds,
                        gemm_workspace, library_gemm_dtypes, uses_gemm_library)
from .irtypes import MATH_FUNCS, CodegenError, ctype, mtype
from .module import ABI, GeneratedModule, _ModuleGen, abi
from .options import CodegenOptions, default_num_threads

__all__ = ["generate", "program_key", "CodegenOptions", "CodegenError", "GeneratedModule", "ABI",
           "abi", "default_num_threads", "estimate_work", "buffers_used", "gemm_lds",
           "gemm_workspace", "gemm_function_type", "library_gemm_dtypes", "uses_gemm_library",
           "GEMM_MIN_MNK", "WORKSPACE", "MATH_FUNCS", "MIN_FORCED_VECTOR_TRIPS", "ctype", "mtype",
           "_walk_stmts", "_gemm_target"]  # (the last two: runtime.py reads them here)


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
