"""The define-and-run builder: a Graph used as a context, placeholders, parameters, constants.

`with g:` makes g the graph that new placeholders, parameters and ops go into. The active
graph is held in a context variable (per thread and per asyncio task), not a global.
"""
from __future__ import annotations

import contextvars
from typing import Any, Sequence

import numpy as np

from .ir import dtypes
from .ir.errors import BuildError, GraphcError
from .ir.graph import Graph as IRGraph, Value
from .ir.init import Init
from .ir.loc import capture_loc
from .ir.types import TensorType

_active: contextvars.ContextVar["Graph | None"] = contextvars.ContextVar("graphc_graph", default=None)


class Graph(IRGraph):
    """An ir.Graph that is also the builder's context and remembers layer state updates."""

    def __init__(self, name: str = "main") -> None:
        super().__init__(name)
        self.state_updates: dict[str, Value] = {}  # e.g. batch-norm running statistics
        self._tokens: list[contextvars.Token] = []
        self._name_counts: dict[str, int] = {}
        self._seed = 0

    def __enter__(self) -> "Graph":
        self._tokens.append(_active.set(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        _active.reset(self._tokens.pop())

    def set_outputs(self, outputs, updates=None) -> None:  # type: ignore[override]
        """Record what the graph returns (Tensors) and its parameter updates ({param: new}),
        so `gc.compile(g)` and `graphc dump` need no further arguments."""
        from .compile import resolve_outputs, resolve_updates
        self.outputs = resolve_outputs(self, outputs)[0]
        self.updates = resolve_updates(self, updates or {})

    def unique_name(self, prefix: str) -> str:
        """prefix0, prefix1, ... : names for layers created without one."""
        taken = self.named_values()
        while True:
            i = self._name_counts.get(prefix, 0)
            self._name_counts[prefix] = i + 1
            name = f"{prefix}{i}"
            if not any(k == name or k.startswith(name + ".") for k in taken):
                return name

    def next_seed(self) -> int:
        """Deterministic, distinct seeds for parameters initialised without one."""
        self._seed += 1
        return self._seed


def current_graph() -> Graph:
    g = _active.get()
    if g is None:
        raise BuildError("no active graph: build inside `with gc.Graph(name) as g:`",
                         loc=capture_loc())
    return g


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise BuildError(f"shape {shape!r} is not a sequence of ints", loc=capture_loc()) from None


def placeholder(name: str, shape: Sequence[int] | int, dtype: str = "f32"):
    """A named graph input, fed at call time."""
    from .tensor import Tensor
    g = current_graph()
    try:
        return Tensor(g.add_input(name, TensorType(_shape(shape), dtypes.dtype(dtype))), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def param(name: str, shape: Sequence[int] | int, dtype: str = "f32", *, init: Init | None = None,
          value: Any = None, trainable: bool = True):
    """A named persistent parameter, initialised by `init` or set to `value`."""
    from .tensor import Tensor
    g = current_graph()
    if init is None and value is None:
        raise BuildError(f"parameter {name!r} needs init=... or value=...", loc=capture_loc())
    if init is not None and value is not None:
        raise BuildError(f"parameter {name!r}: give init or value, not both", loc=capture_loc())
    try:
        return Tensor(g.add_param(name, TensorType(_shape(shape), dtypes.dtype(dtype)), init=init,
                                  value=value, trainable=trainable), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def constant(value: Any, dtype: str | None = None, name: str | None = None):
    """A constant baked into the graph (and into the text IR)."""
    from .tensor import Tensor
    arr = np.asarray(value)
    if dtype is None and not isinstance(value, (np.ndarray, np.generic)):
        # Python numbers and lists: floats are f32 and ints i32, as in most DL tools;
        # numpy data keeps its own dtype.
        dtype = {"f": "f32", "i": "i32", "u": "i32"}.get(arr.dtype.kind)
    g = current_graph()
    try:
        return Tensor(g.add_constant(arr, dtype, name), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())
