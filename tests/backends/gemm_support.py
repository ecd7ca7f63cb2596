"""The generated GEMM compiled on its own and callable on numpy arrays, for the GEMM tests
(tests/backends/test_llvm_gemm.py) and benchmarks/gemm.py: not part of the product, which
links the GEMM into programs (backends/llvm/runtime.py) or AOT modules. It goes through
the product's engine: the same target machine, O3 pipeline and libgomp loader."""
from __future__ import annotations

import ctypes

import llvmlite.ir as ir
import numpy as np

from graphc.backends.llvm import engine
from graphc.backends.llvm.gemm import (GemmTarget, declare_gemm, emit_parallel_gemm_entry, gemm_name,
                                       workspace_elements)


class CompiledGemm:
    """JIT-compiled GEMMs (f32 and f64, per-thread and OpenMP entries) callable on numpy
    arrays. For tests, benchmarks and as a reference for how generated code calls it."""

    _ARGS = (ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
             ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p,
             ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p)

    def __init__(self, target: GemmTarget | None = None, dtypes=("f32", "f64"),
                 openmp: bool = True):
        import llvmlite.binding as llvm
        self.target = target or GemmTarget.for_host()
        host = engine.host_target()
        self.tm = engine.new_target_machine(host)  # MCJIT takes ownership of it
        if openmp and not engine.load_gomp():
            raise RuntimeError("cannot load libgomp")
        module = ir.Module(name="graphc_gemm")
        for dt in dtypes:
            declare_gemm(module, dt, self.target)
            if openmp:
                emit_parallel_gemm_entry(module, dt, self.target)
        self.llvm_ir = str(module)
        llmod = engine.parse_module(self.llvm_ir, host)  # the product's parse, pipeline
        engine.optimize(llmod, self.tm)
        self.optimized_ir = str(llmod)
        self.engine = llvm.create_mcjit_compiler(llmod, self.tm)
        self.engine.finalize_object()
        self.kernels, self.parallel = {}, {}
        for dt in dtypes:
            self.kernels[dt] = ctypes.CFUNCTYPE(None, *self._ARGS, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(
                self.engine.get_function_address(gemm_name(dt)))
            if openmp:
                self.parallel[dt] = ctypes.CFUNCTYPE(None, *self._ARGS, ctypes.c_int64)(
                    self.engine.get_function_address(gemm_name(dt) + "_parallel"))
        self._ws: dict[str, object] = {}

    def assembly(self) -> str:
        """Machine code (text) of the optimised module, for inspection."""
        import llvmlite.binding as llvm
        return self.tm.emit_assembly(llvm.parse_assembly(self.optimized_ir))

    @staticmethod
    def operands(a, b, c, trans_a=False, trans_b=False):
        """(M, N, K, lda, ldb, ldc) for 2-D numpy views with unit inner stride."""
        for name, x in (("a", a), ("b", b), ("c", c)):
            if x.ndim != 2 or (x.size and ((x.shape[1] > 1 and x.strides[1] != x.itemsize)
                                           or x.strides[0] % x.itemsize or x.strides[0] < 0)):
                raise ValueError(f"{name} must be a 2-D row-major view with unit column "
                                 f"stride, got strides {x.strides}")
            if x.dtype != c.dtype:
                raise ValueError("a, b, c must share a dtype")
        M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
        Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
        if Kb != K or c.shape != (M, N):
            raise ValueError(f"shape mismatch: op(a) {M}x{K}, op(b) {Kb}x{N}, c {c.shape}")
        ld = [max(x.strides[0] // x.itemsize if x.shape[0] > 1 else 0, x.shape[1], 1)
              for x in (a, b, c)]
        return M, N, K, ld[0], ld[1], ld[2]

    def workspace(self, dtype: str, M, N, K, num_threads):
        n = workspace_elements(M, N, K, num_threads, self.target, dtype)
        ws = self._ws.get(dtype)
        if ws is None or ws.size < n:
            ws = np.empty(n, dtype=np.float32 if dtype == "f32" else np.float64)
            self._ws[dtype] = ws
        return ws

    def args(self, a, b, c, trans_a=False, trans_b=False, accumulate=False, num_threads=1):
        dt = {"float32": "f32", "float64": "f64"}[c.dtype.name]
        M, N, K, lda, ldb, ldc = self.operands(a, b, c, trans_a, trans_b)
        ws = self.workspace(dt, M, N, K, num_threads)
        return dt, (M, N, K, a.ctypes.data, lda, int(trans_a), b.ctypes.data, ldb,
                    int(trans_b), c.ctypes.data, ldc, int(accumulate), ws.ctypes.data)

    def __call__(self, a, b, c, trans_a=False, trans_b=False, accumulate=False,
                 num_threads=1, thread_id=None, openmp=True):
        """c (+)= op(a) @ op(b). With `thread_id` given, computes only that share of a
        `num_threads` split; else all of it, on an OpenMP team when `openmp` and
        num_threads > 1, otherwise sequentially share by share."""
        dt, args = self.args(a, b, c, trans_a, trans_b, accumulate, num_threads)
        if thread_id is not None:
            self.kernels[dt](*args, thread_id, num_threads, None, None)
        elif openmp and num_threads > 1 and dt in self.parallel:
            self.parallel[dt](*args, num_threads)
        else:
            for t in range(num_threads):
                self.kernels[dt](*args, t, num_threads, None, None)
        return c
