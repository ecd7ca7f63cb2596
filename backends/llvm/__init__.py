"""The LLVM CPU backend: kernel IR -> LLVM IR (llvmlite) -> machine code (MCJIT).

    codegen.generate(program) -> GeneratedModule    one module, one entry function
    engine.optimize_and_emit(text) -> object bytes   host CPU, O3, vectorisers on
    cache.CompileCache                               memory + disk cache of objects
    runtime.compile_program(program) -> CompiledProgram
    runtime.LLVMExecutable(graph, program)           the Executable: one native call per call
    split.BatchSplitExecutable                       an inference graph as one copy per thread

`factory` is what `graphc.compile(..., backend="llvm")` calls (registered in
graphc/backends/__init__.py); it lowers the graph with passes.lower.lower.
"""
from __future__ import annotations

from typing import Any, Mapping


def factory(graph, params: Mapping[str, Any] | None = None, single_output: bool = False,
            **options: Any):
    """graph -> LLVMExecutable (or a BatchSplitExecutable over one, see batch_split).
    Options: num_threads, cache (False, or a CompileCache),
    codegen options (a codegen.CodegenOptions), donate (names of inputs whose arrays the
    compiled code may overwrite), batch_split (default True: an inference graph whose
    nodes are all batch-wise runs as one copy per thread over slices of its batch,
    backends/llvm/split.py), check_numerics (check every kernel's results for NaN/inf;
    turns donation, in-place parameter updates and batch splitting off)."""
    from ...ir.validate import check_lowering, verify_level
    from ...passes.lower import lower  # the lowering lives in passes/ (lazy: no cycle)
    from . import codegen
    from .runtime import LLVMExecutable
    from .split import batch_split_executable
    opt_level = options.pop("opt_level", 2)  # gc.compile's pass pipeline already ran (and fused)
    donate = options.pop("donate", ())
    split = options.pop("batch_split", True)
    check = options.get("check_numerics", False)
    if check:  # a failing call leaves parameters and donated inputs as they were (numerics.py)
        donate, split = (), False

    def lower_graph(g, donated=()):
        program = lower(g, fuse_ops=None, plan=opt_level >= 1, donated_inputs=donated,
                        gemm_panels=gemm_panels(), donate=not check)
        if verify_level() >= 2:  # the program computes what the graph does (ir/validate.py)
            check_lowering(g, program)
        return program
    threads = options.get("num_threads") or codegen.default_num_threads()
    if split and not donate and not params and opt_level >= 1:
        exe, _ = batch_split_executable(graph, threads, single_output, opt_level, lower_graph, **options)
        if exe is not None:
            return exe
    return LLVMExecutable(graph, lower_graph(graph, donate), params=params, single_output=single_output,
                          **options)


def gemm_panels() -> dict[str, int]:
    """{dtype: NR} of the host's GEMM: the panel width in which lowerings may hand it B
    already packed (K.Gemm.b_panels)."""
    from .gemm import GemmTarget
    t = GemmTarget.for_host()
    return {dt: t.blocking(dt).nr for dt in ("f32", "f64")}


def compile_program(program, **kw):
    from .runtime import compile_program as _cp
    return _cp(program, **kw)


__all__ = ["factory", "compile_program", "gemm_panels"]
