"""The CUDA backend: kernel IR -> CUDA C -> cubin (nvcc) -> launches through pycuda.

    codegen.render(program) -> CudaModule      the translation unit and its launches
    analysis                                   which loops may run as independent threads
    gemm / gemm_templates                      tiled SIMT and tensor-core (WMMA) GEMMs
    prelude                                    numpy scalar semantics, group reductions
    nvcc.compile_cuda(source, arch)            cubin or PTX; the CI check compiles with it
    runtime.CudaExecutable(graph, program)     device arena, resident parameters, one stream

Code generation needs neither pycuda nor a GPU (the CI renders and compiles every op and
example model with nvcc); running needs the `cuda` extra (pycuda), a device and nvcc.
`factory` is what `graphc.compile(..., backend="cuda")` calls (registered in
graphc/backends/__init__.py); it lowers the graph with passes.lower.lower.
"""
from __future__ import annotations

from typing import Any, Mapping


def lower_for_cuda(graph, plan: bool = True):
    """The kernel-IR program this backend compiles for an optimised graph: no op whose kernel
    nests a GEMM in a loop (each GEMM is a launch of its own), and parameter updates in
    output buffers of their own (launches are asynchronous: a failing call cannot stop
    before an in-place update)."""
    from ...passes.lower import lower  # the lowering lives in passes/ (lazy: no cycle)
    return lower(graph, fuse_ops=None, plan=plan, nested_gemm=False, donate=False)


def factory(graph, params: Mapping[str, Any] | None = None, single_output: bool = False,
            **options: Any):
    """graph -> CudaExecutable. Options: cache (False, or a CompileCache), options (a
    codegen.CodegenOptions), device_outputs (return pycuda GPUArrays), check_numerics
    (scan every kernel's results for NaN/inf; NumericsError names the node)."""
    from dataclasses import replace

    from .codegen import CodegenOptions
    from .runtime import CudaExecutable
    opt_level = options.pop("opt_level", 2)  # gc.compile's pass pipeline already ran (and fused)
    if options.pop("check_numerics", False):
        options["options"] = replace(options.get("options") or CodegenOptions(), check_numerics=True)
    options.pop("donate", None)  # a permission to overwrite inputs, not an obligation
    program = lower_for_cuda(graph, plan=opt_level >= 1)
    return CudaExecutable(graph, program, params=params, single_output=single_output, **options)


__all__ = ["factory", "lower_for_cuda"]
