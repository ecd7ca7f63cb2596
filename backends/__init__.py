"""Backends: each turns what the pipeline gives it into an Executable.

A backend registers a factory under its name, with what it needs from the compiler as data
(`Needs`: its graph passes, whether it runs a kernel-IR program and how that program must be
lowered, whether batch split applies); graphc/pipeline.py reads it, runs the passes and the
lowering, and calls the factory. Backends only render and run: nothing here imports
passes/ or graphc/, and the frontend holds no list of backends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..ir.errors import GraphcError
from .executable import Executable

BackendFactory = Callable[..., Executable]


@dataclass(frozen=True)
class Needs:
    """What a backend needs from the compiler before it renders a program.

    graph_passes: graph passes (passes/manager.py) it wants after the standard ones.
    program: it runs a kernel-IR Program (False: it interprets the graph itself).
    nested_gemm: its kernels may call a GEMM inside a loop nest (else such ops decompose).
    inplace_updates: parameter updates may overwrite the parameters (False where a failing
        call cannot stop before them, e.g. asynchronous launches).
    gemm_panels: () -> {dtype name: panel width} of its GEMM, so lowerings can hand it
        operands already packed; None: row-major operands.
    batch_parts: (backend options) -> how many independent copies of a program it can run
        at once over slices of a batch (passes/batch_split.py); None: batch split does not
        apply.
    """
    graph_passes: tuple[str, ...] = ()
    program: bool = True
    nested_gemm: bool = True
    inplace_updates: bool = True
    gemm_panels: Callable[[], dict[str, int]] | None = None
    batch_parts: Callable[[dict[str, Any]], int] | None = None


_BACKENDS: dict[str, Callable[[], BackendFactory]] = {}
_NEEDS: dict[str, Needs] = {}
_PROBES: dict[str, Callable[[], str | None]] = {}
_status: dict[str, str | None] = {}  # explicit cache: a probe's answer, once per process


def register_backend(name: str, loader: Callable[[], BackendFactory], needs: Needs = Needs(),
                     probe: Callable[[], str | None] = lambda: None) -> None:
    """`loader` imports the backend lazily, so optional dependencies load only when used.
    `probe()` says why the backend cannot run on this machine, or None when it can."""
    _BACKENDS[name] = loader
    _NEEDS[name] = needs
    _PROBES[name] = probe
    _status.pop(name, None)


def _known(name: str) -> None:
    if name not in _BACKENDS:
        raise GraphcError(f"unknown backend {name!r}; backends: {', '.join(registered_backends())}")


def backend_needs(name: str) -> Needs:
    _known(name)
    return _NEEDS[name]


def backend_factory(name: str) -> BackendFactory:
    _known(name)
    return _BACKENDS[name]()


def backend_graph_passes(name: str) -> tuple[str, ...]:
    return backend_needs(name).graph_passes


def registered_backends() -> list[str]:
    """Every backend graphc has, runnable here or not (code generation works without the
    device: `graphc dump --format cuda` renders CUDA C on a machine with no GPU)."""
    return sorted(_BACKENDS)


def backend_status() -> dict[str, str | None]:
    """{backend: None if it runs on this machine, else why not}."""
    for name, probe in _PROBES.items():
        if name not in _status:
            try:
                _status[name] = probe()
            except Exception as e:  # noqa: BLE001  (a probe that breaks says why)
                _status[name] = f"{type(e).__name__}: {e}"
    return {name: _status[name] for name in sorted(_BACKENDS)}


def available_backends() -> list[str]:
    """The backends that can run here (backend_status() says why the others cannot)."""
    return [name for name, why in backend_status().items() if why is None]


def _reference() -> BackendFactory:
    from .reference import ReferenceExecutable

    def factory(graph, program=None, *, params=None, single_output=False, num_threads=None,
                check_numerics=False, **_: Any) -> Executable:
        return ReferenceExecutable(graph, params=params, single_output=single_output,
                                   check_numerics=check_numerics)
    return factory


def _llvm() -> BackendFactory:
    from .llvm import factory
    return factory


def _llvm_panels() -> dict[str, int]:
    from .llvm import gemm_panels
    return gemm_panels()


def _llvm_parts(options: dict[str, Any]) -> int:
    from .llvm.split import max_parts
    return max_parts(options.get("num_threads"), options.get("options"))


def _cuda() -> BackendFactory:
    from .cuda import factory
    return factory


def _llvm_probe() -> str | None:
    try:
        import llvmlite.binding  # noqa: F401
    except ImportError as e:
        return f"llvmlite is not installed ({e})"
    return None


def _cuda_probe() -> str | None:
    """pycuda, a driver with a device, and nvcc: what running a CUDA program needs."""
    from .cuda.nvcc import find_nvcc
    from .cuda.runtime import CudaUnavailable, device
    try:
        device()
    except CudaUnavailable as e:
        return str(e).splitlines()[0]
    if find_nvcc() is None:
        return "nvcc not found (set GRAPHC_NVCC or CUDA_HOME, or put nvcc on PATH)"
    return None


register_backend("reference", _reference, Needs(program=False))
register_backend("llvm", _llvm, Needs(graph_passes=("winograd", "legalize", "fusion"),
                                      gemm_panels=_llvm_panels, batch_parts=_llvm_parts),
                 probe=_llvm_probe)
register_backend("cuda", _cuda, Needs(graph_passes=("legalize_flat", "fusion"), nested_gemm=False,
                                      inplace_updates=False), probe=_cuda_probe)

__all__ = ["Executable", "Needs", "register_backend", "available_backends", "registered_backends",
           "backend_status", "backend_needs", "backend_factory", "backend_graph_passes"]
