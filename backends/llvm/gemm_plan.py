"""Which `Gemm` statements the generated GEMM library runs (the one switch point) and the
workspace they need, placed after the arena plan (see codegen.py, "GEMM")."""
from __future__ import annotations

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType
from .irtypes import I32, I64, PTR, VOID
from .options import CodegenOptions

WORKSPACE = "<gemm workspace>"  # pseudo-buffer: GEMM packing space after the arena plan
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


def gemm_workspace(program: K.Program, options: CodegenOptions) -> tuple[int, int]:
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


def gemm_lds(g: K.Gemm) -> tuple[int, int, int]:
    lda = g.lda or (g.m if g.trans_a else g.k)
    ldb = g.ldb or (g.k if g.trans_b else g.n)
    ldc = g.ldc or g.n
    return lda, ldb, ldc
