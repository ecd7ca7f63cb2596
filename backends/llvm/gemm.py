"""Generated BLIS-style GEMM for the LLVM backend (llvmlite IR, no BLAS, no C compiler).

`declare_gemm(module, dtype, target)` adds (or reuses by name) to an `llvmlite.ir.Module`

    void graphc_gemm_<f32|f64>(i64 M, i64 N, i64 K,
                               T* A, i64 lda, i32 transA,
                               T* B, i64 ldb, i32 transB,
                               T* C, i64 ldc, i32 accumulate,
                               T* workspace, i64 thread_id, i64 num_threads,
                               void (*epilogue)(i8* ctx, i64 row, i64 col, i64 rows,
                                                i64 cols, T* c, i64 ldc),
                               i8* epilogue_ctx)

computing this thread's share of ``C = op(A) @ op(B)`` (``+ C`` when ``accumulate != 0``)
for row-major matrices. ``op(A)`` is M x K: A is stored M x K (``A[i*lda + p]``), or K x M
when ``transA`` (``A[p*lda + i]``); likewise ``op(B)`` is K x N, stored N x K when
``transB``. Leading dimensions are in elements and may exceed the row length (views).
``transB == 2`` says B is already packed: column panels of NR (zero-padded), each holding
all K rows, ``op(B)[p, j]`` at ``B[(j // NR)*K*NR + p*NR + j % NR]`` (ldb unused): a
producer that writes B this way (convolution columns) spares the packing copy.

Algorithm (Goto/BLIS): five loops around a register-blocked microkernel::

    for jc in [n0, n1) step NC:                    # this thread's columns (or all)
      for pc in [0, K) step KC:
        pack op(B)[pc:pc+kc, jc:jc+nc] -> KC x NR panels (zero-padded)   # L3-resident
        for ic in [m0, m1) step MC:
          pack op(A)[ic:ic+mc, pc:pc+kc] -> MR x KC panels (zero-padded) # L2-resident
          for jr in [0, nc) step NR:                                     # B panel in L1
            for ir in [0, mc) step MR:
              microkernel: MR x NR tile += A panel @ B panel  (kc rank-1 updates)

The microkernel keeps the MR x NR tile in vector registers (AVX2 f32: 6 x 16 = 12 ymm
accumulators, two vector loads of B and six broadcasts of A per k, `llvm.fma`), unrolls
the k loop by `target.unroll`, and writes a full tile straight to C (loading C only when
accumulating, so garbage/NaN in C never leaks into a non-accumulating result). Edge tiles
(mr < MR or nr < NR) go through a small MR x NR temp tile in the workspace and a scalar
copy, so the kernel always computes full, zero-padded tiles.

Threading contract. The caller runs the function once per thread with ``thread_id`` in
``[0, num_threads)``; each call computes a disjoint part of C, so no synchronisation is
needed and the calls may run concurrently. The split is over N (in units of NR columns)
or over M (in units of MR rows), chosen at run time by a small cost model (padded tile
work of the largest share + redundant packing of the operand each thread must pack in
full); every thread evaluates the same model, so the shares always tile C exactly. The
arithmetic for each element is the same for every thread count and split (one FMA chain
per KC block, blocks added in order), so results are bitwise identical for any
``num_threads``. `emit_parallel_gemm_entry` generates a ready-made OpenMP (libgomp)
entry that does this through `emit_parallel_region`, the backend's one OpenMP outliner
(omp.py), which kernel parallel loops and the batch-split trampoline use as well.

Workspace. ``workspace`` must hold ``workspace_elements(M, N, K, num_threads, target,
dtype)`` elements of T; each thread uses its own region (base ``workspace + thread_id *
region``, rounded up to 64 bytes inside the function), so the same buffer serves all
threads. Only element alignment is required of A, B, C and workspace. A, B, C must not
overlap the workspace; C must not overlap A or B.

Batched GEMM is the caller's loop: for b in batch, call the function with
``A + b*stride_a``, ``B + b*stride_b``, ``C + b*stride_c`` (stride 0 broadcasts an
operand), the same workspace and thread arguments. The function is kept per-matrix so a
caller can parallelise over the batch instead when the matrices are small: worker w calls
it with ``thread_id=0, num_threads=1`` and workspace ``ws + w * workspace_elements(M, N,
K, 1, target, dtype)``.

Calling it from generated code. ``declare_gemm`` once per module and dtype (it defines
internal helpers ``graphc_gemm_<dt>_{ukernel,pack_a,pack_b}`` beside it), then either
call it inside your own outlined parallel region with the team's (thread_id,
num_threads) -- `emit_parallel_region` does the outlining -- or call
``graphc_gemm_<dt>_parallel`` (from `emit_parallel_gemm_entry`), which opens its own
team. Do not open a team from inside a team (nested GOMP_parallel runs serially). The
process must have libgomp loaded before the module is finalised (`engine.load_gomp`); an AOT
shared library must list libgomp.so.1 as a dependency. libgomp reads OMP_WAIT_POLICY and
GOMP_SPINCOUNT when it is loaded: its default (spin ~300k iterations before sleeping) gives
~1 us per parallel call on an idle machine; passive waiting (what engine.load_gomp chooses
unless the user set either variable) costs ~10 us per call but degrades far less when other
processes compete for the cores. Compiled on its own for tests and benchmarks:
tests/backends/gemm_support.py (CompiledGemm).

Fused epilogue. When ``epilogue`` is not null, each MR x NR tile of C is handed to it as
soon as its last KC block is accumulated, while the tile is still in L1:
``epilogue(epilogue_ctx, row, col, rows, cols, &C[row*ldc + col], ldc)`` may rewrite those
``rows x cols`` elements in place (bias, activation, residual add: the caller's generated
code). Every element of C goes through it exactly once, on the thread that computed it;
when K == 0 it gets the thread's whole share at once. A null ``epilogue`` leaves C as the
product (alpha is not part of this function: fold it into an operand or the epilogue).
"""
from __future__ import annotations

import llvmlite.ir as ir

# The emitters, split by idea: gemm_target.py (target, blocking, workspace sizes),
# gemm_kernel.py (the microkernel and shared state), gemm_pack.py (packing),
# gemm_driver.py (the five loops), gemm_ir.py (IR helpers); OpenMP outlining is omp.py.
from .gemm_driver import DIRECT_A_COLS, GemmDriver
from .gemm_kernel import GemmKernel
from .gemm_pack import GemmPacking
from .gemm_target import I8P, I32, I64, VOID, GemmBlocking, GemmTarget, gemm_name, workspace_elements
from .omp import declare_omp_thread_info, emit_parallel_region

__all__ = [
    "GemmBlocking", "GemmTarget", "declare_gemm", "workspace_elements", "gemm_name",
    "emit_parallel_gemm_entry", "emit_parallel_region",
    "declare_omp_thread_info", "epilogue_fnty", "DIRECT_A_COLS",
]


class _Gen(GemmDriver, GemmPacking, GemmKernel):
    """Emits one dtype's GEMM functions into a module."""


def epilogue_fnty(T) -> ir.FunctionType:
    """void epilogue(i8* ctx, i64 row, i64 col, i64 rows, i64 cols, T* c, i64 ldc)."""
    return ir.FunctionType(VOID, [I8P, I64, I64, I64, I64, T.as_pointer(), I64])


def _gemm_fnty(T) -> ir.FunctionType:
    TP = T.as_pointer()
    return ir.FunctionType(VOID, [I64, I64, I64, TP, I64, I32, TP, I64, I32, TP, I64, I32,
                                  TP, I64, I64, epilogue_fnty(T).as_pointer(), I8P])


def declare_gemm(module: ir.Module, dtype: str, target: GemmTarget) -> ir.Function:
    """Define ``graphc_gemm_<dtype>`` (and its internal helpers) in `module`, or return the
    existing definition. See the module docstring for the contract."""
    name = gemm_name(dtype)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    gen = _Gen(module, dtype, target)
    fn = ir.Function(module, _gemm_fnty(gen.T), name)
    gen.emit_driver(fn)
    return fn


def emit_parallel_gemm_entry(module: ir.Module, dtype: str, target: GemmTarget) -> ir.Function:
    """Define ``void graphc_gemm_<dtype>_parallel(M, N, K, A, lda, transA, B, ldb, transB,
    C, ldc, accumulate, workspace, i64 num_threads)``: runs the GEMM on an OpenMP team of
    `num_threads` (0 = OpenMP default) threads, each computing its share. The workspace
    must be sized for the team size actually obtained, which is at most `num_threads`
    (or the default team size when 0)."""
    name = gemm_name(dtype) + "_parallel"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    gemm = declare_gemm(module, dtype, target)
    T = gemm.function_type.args[3]
    fty = ir.FunctionType(VOID, [I64, I64, I64, T, I64, I32, T, I64, I32, T, I64, I32, T,
                                 I64])
    fn = ir.Function(module, fty, name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    no_epi = ir.Constant(gemm.function_type.args[15], None)

    def body(ob, vals, tid, nt):
        ob.call(gemm, list(vals) + [tid, nt, no_epi, ir.Constant(I8P, None)])

    emit_parallel_region(b, module, name + ".omp_fn", fn.args[:13], body, fn.args[13])
    b.ret_void()
    return fn
