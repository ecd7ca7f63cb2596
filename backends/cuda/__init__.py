"""The CUDA backend: kernel IR -> CUDA C -> cubin (nvcc) -> launches through pycuda.

    codegen.render(program) -> CudaModule      the translation unit and its launches
    analysis                                   which loops may run as independent threads
    gemm / gemm_templates                      tiled SIMT and tensor-core (WMMA) GEMMs
    prelude                                    numpy scalar semantics, group reductions
    nvcc.compile_cuda(source, arch)            cubin or PTX; the CI check compiles with it
    runtime.CudaExecutable(graph, program)     device arena, resident parameters, one stream

Code generation needs neither pycuda nor a GPU (the CI renders and compiles every op and
example model with nvcc); running needs the `cuda` extra (pycuda), a device and nvcc.
`factory` is what graphc/pipeline.py calls with the planned program (lowered as this
backend's `Needs` say: no GEMM nested in a loop, since each GEMM is a launch of its own, and
parameter updates into buffers of their own, since launches are asynchronous and a failing
call cannot stop before an in-place update).
"""
from __future__ import annotations

from typing import Any, Mapping


def factory(graph, program=None, *, params: Mapping[str, Any] | None = None,
            single_output: bool = False, donate=(), **options: Any):
    """(graph, planned kernel program) -> CudaExecutable. Options: cache (False, or a
    CompileCache), options (a codegen.CodegenOptions), device_outputs (return pycuda
    GPUArrays), check_numerics (scan every kernel's results for NaN/inf; NumericsError
    names the node). `donate` is a permission to overwrite inputs, not an obligation."""
    from dataclasses import replace

    from .codegen import CodegenOptions
    from .runtime import CudaExecutable
    options.pop("num_threads", None)
    if options.pop("check_numerics", False):
        options["options"] = replace(options.get("options") or CodegenOptions(), check_numerics=True)
    return CudaExecutable(graph, program, params=params, single_output=single_output, **options)


__all__ = ["factory"]
