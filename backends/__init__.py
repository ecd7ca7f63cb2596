"""Backends: each turns an ir.Graph into an Executable.

A backend registers a factory under its name; `graphc.compile(..., backend=name)` looks it
up here, so the frontend holds no list of backends.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from ..ir.errors import GraphcError
from ..ir.graph import Graph
from .executable import Executable

BackendFactory = Callable[..., Executable]
_BACKENDS: dict[str, Callable[[], BackendFactory]] = {}
_GRAPH_PASSES: dict[str, tuple[str, ...]] = {}


def register_backend(name: str, loader: Callable[[], BackendFactory],
                     graph_passes: tuple[str, ...] = ()) -> None:
    """`loader` imports the backend lazily, so optional dependencies load only when used.
    `graph_passes` names the graph passes (passes/manager.py) the backend wants before it
    compiles a graph, e.g. legalisation and fusion."""
    _BACKENDS[name] = loader
    _GRAPH_PASSES[name] = tuple(graph_passes)


def backend_graph_passes(name: str) -> tuple[str, ...]:
    if name not in _BACKENDS:
        raise GraphcError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    return _GRAPH_PASSES[name]


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def compile_graph(graph: Graph, backend: str, params: Mapping[str, Any] | None = None,
                  single_output: bool = False, opt_level: int = 2,
                  donate: Sequence[str] = (), check_numerics: bool = False) -> Executable:
    """opt_level 0 runs no optimisation passes in the backend; 2 (the default) runs all.
    donate: names of graph inputs whose arrays the backend may overwrite. check_numerics:
    the program checks every kernel's results for NaN/inf and raises NumericsError
    (backends/numerics.py); backends get the option only when it is on."""
    if backend not in _BACKENDS:
        raise GraphcError(f"unknown backend {backend!r}; available: {', '.join(available_backends())}")
    extra = {"check_numerics": True} if check_numerics else {}
    return _BACKENDS[backend]()(graph, params=params, single_output=single_output,
                                opt_level=opt_level, donate=tuple(donate), **extra)


def _reference() -> BackendFactory:
    from .reference import ReferenceExecutable

    def factory(graph: Graph, *, params=None, single_output=False, opt_level=2, donate=(),
                check_numerics=False) -> Executable:
        return ReferenceExecutable(graph, params=params, single_output=single_output,
                                   check_numerics=check_numerics)
    return factory


register_backend("reference", _reference)
register_backend("llvm", lambda: __import__(__name__ + ".llvm", fromlist=["factory"]).factory,
                 graph_passes=("winograd", "legalize", "fusion"))
register_backend("cuda", lambda: __import__(__name__ + ".cuda", fromlist=["factory"]).factory,
                 graph_passes=("legalize_flat", "fusion"))

__all__ = ["Executable", "register_backend", "available_backends", "backend_graph_passes",
           "compile_graph"]
