"""The LLVM CPU backend: kernel IR -> LLVM IR (llvmlite) -> machine code (MCJIT).

    codegen.generate(program) -> GeneratedModule    one module, one entry function
    engine.optimize_and_emit(text) -> object bytes   host CPU, O3, vectorisers on
    cache.CompileCache                               memory + disk cache of objects
    runtime.compile_program(program) -> CompiledProgram
    runtime.LLVMExecutable(graph, program)           the Executable: one native call per call
    split.BatchSplitExecutable                       an inference graph as one copy per thread

`factory` is what graphc/pipeline.py calls with the planned program (or a batch split).
"""
from __future__ import annotations

from typing import Any, Mapping


def factory(graph, program=None, *, params: Mapping[str, Any] | None = None,
            single_output: bool = False, split=None, donate=(), **options: Any):
    """(graph, planned kernel program) -> LLVMExecutable; with `split` (a
    graphc.pipeline.BatchSplit), a BatchSplitExecutable running its part on every slice.
    Options: num_threads, cache (False, or a CompileCache), options (a
    codegen.CodegenOptions), check_numerics (check every kernel's results for NaN/inf).
    `donate` is already in the program (its in-place plan); nothing more to do here."""
    from .runtime import LLVMExecutable
    if split is not None:
        from .split import batch_split_executable
        exe = batch_split_executable(graph, split, single_output, **options)
        if exe is not None:
            return exe
        program = split.whole()
    return LLVMExecutable(graph, program, params=params, single_output=single_output, **options)


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
