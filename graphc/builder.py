"""The define-and-run builder: a Graph used as a context, placeholders, parameters, constants.

`with g:` makes g the graph that new placeholders, parameters and ops go into. The active
graph is held in a context variable (per thread and per asyncio task), not a global.
"""
from __future__ import annotations

import contextvars
from typing import Any, Sequence

import numpy as np

from .args import as_array, as_bool, as_dtype, as_shape
from .ir import dtypes
from .ir.errors import BuildError, GraphcError
from .ir.graph import Graph as IRGraph, Value
from .ir.init import Init
from .ir.loc import capture_loc
from .ir.types import TensorType

_active: contextvars.ContextVar["Graph | None"] = contextvars.ContextVar("graphc_graph", default=None)


class Graph(IRGraph):
    """An ir.Graph that is also the builder's context and remembers layer state updates.

    name: the graph's name (in the text IR, error messages and an artifact's C symbols).
    """

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
        so `gc.compile(g)` and `graphc dump` need no further arguments.

        outputs: a Tensor, a list of them, or {name: Tensor}: the names then stay with the
        values (the text IR prints them, and an exported artifact's outputs go by them);
        calls still return a tuple in the dict's order."""
        from .compile import resolve_outputs, resolve_updates
        try:
            if isinstance(outputs, dict):
                self._name_outputs(outputs)
                outputs = list(outputs.values())
            self.outputs = resolve_outputs(self, outputs)[0]
            self.updates = resolve_updates(self, updates or {})
        except GraphcError as e:
            raise e.attach(loc=capture_loc())

    def _name_outputs(self, named: dict) -> None:
        from .tensor import Tensor
        taken = {v.name for v in self.all_values() if v.name}
        for key, t in named.items():
            if not isinstance(key, str) or not key.isidentifier():
                raise BuildError(f"set_outputs: output name {key!r} must be an identifier",
                                 loc=capture_loc())
            if not isinstance(t, Tensor) or t.graph is not self:
                continue  # resolve_outputs refuses it with the usual message
            if t.value.name == key:
                continue
            if t.value.name is not None:
                raise BuildError(f"set_outputs: output {key!r} is {t.value.kind} {t.value.name!r}, "
                                 "which keeps its own name; use that name", loc=capture_loc())
            if key in taken:
                raise BuildError(f"set_outputs: output name {key!r} is already a name in graph "
                                 f"{self.name!r}", loc=capture_loc())
            t.value.name = key
            taken.add(key)

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
    """The graph of the innermost active `with g:` block (a BuildError outside of one)."""
    g = _active.get()
    if g is None:
        raise BuildError("no active graph: build inside `with gc.Graph(name) as g:`",
                         loc=capture_loc())
    return g


def graph_for_operands(g: Graph) -> Graph:
    """g, the graph an op's tensor operands belong to, checked against the active graph: a
    tensor of graph A used inside `with B:` is an error at the user's line, never an op
    silently added to A. (Outside any `with`, ops go to their operands' graph.)"""
    active = _active.get()
    if active is not None and active is not g:
        raise BuildError(f"a tensor of graph {g.name!r} is used while building graph {active.name!r} "
                         f"(inside `with {active.name}:`); a graph's ops can only use its own "
                         "tensors: build the value in this graph, or feed it as a placeholder",
                         loc=capture_loc())
    return g


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    return as_shape(shape, "shape")


def placeholder(name: str, shape: Sequence[int] | int, dtype: str = "f32"):
    """A graph input called `name` (the executable's keyword argument), of the given shape
    (a tuple of ints, or an int for rank 1) and dtype ('f32', 'i32', np.float64, ...), fed at
    call time."""
    from .tensor import Tensor
    g = current_graph()
    try:
        return Tensor(g.add_input(name, TensorType(_shape(shape), as_dtype(dtype))), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def param(name: str, shape: Sequence[int] | int, dtype: str = "f32", *, init: Init | None = None,
          value: Any = None, trainable: bool = True):
    """A persistent parameter called `name` (its key in `exe.params`), of the given shape and
    dtype, initialised by `init` (a gc.init initialiser) or set to `value` (an array of the
    declared shape). trainable=False keeps it out of the optimisers' default parameter list
    (state such as running statistics)."""
    from .tensor import Tensor
    g = current_graph()
    if init is None and value is None:
        raise BuildError(f"parameter {name!r} needs init=... or value=...", loc=capture_loc())
    if init is not None and value is not None:
        raise BuildError(f"parameter {name!r}: give init or value, not both", loc=capture_loc())
    if init is not None and not isinstance(init, Init):
        raise BuildError(f"parameter {name!r}: init must be a gc.init initialiser (gc.init.zeros(), "
                         f"gc.init.normal(...)), got {init!r}", loc=capture_loc())
    try:
        t = TensorType(_shape(shape), as_dtype(dtype))
        if value is not None:
            value = _checked_data(as_array(value, f"parameter {name!r} value"), t.dtype,
                                  f"parameter {name!r} value")
        return Tensor(g.add_param(name, t, init=init, value=value,
                                  trainable=as_bool(trainable, "trainable")), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def _checked_data(arr: np.ndarray, dt: dtypes.DType, what: str) -> np.ndarray:
    """arr, refused when converting it to dt would change a value's kind or wrap it."""
    k = arr.dtype.kind
    if dt.is_int and k in "fc":
        raise BuildError(f"{what}: {arr.dtype} data for an {dt} tensor would be truncated; "
                         "round or cast it first", loc=capture_loc())
    if dt.is_int and k in "iu" and arr.size:
        info = np.iinfo(dt.np_dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise BuildError(f"{what}: values {arr.min()}..{arr.max()} do not fit {dt}",
                             loc=capture_loc())
    return arr


def constant(value: Any, dtype: str | None = None, name: str | None = None):
    """A constant `value` (a number or array) baked into the graph (and into the text IR),
    optionally called `name`. Without a dtype, Python floats are f32 and ints i32 (i64 when
    they need it); numpy data keeps its dtype."""
    from .tensor import Tensor
    g = current_graph()
    try:
        arr = as_array(value, "constant")
        if dtype is None and not isinstance(value, (np.ndarray, np.generic)):
            dtype = default_dtype(arr)
        dt = as_dtype(dtype) if dtype is not None else None
        if dt is not None:
            arr = _checked_data(arr, dt, "constant")
        return Tensor(g.add_constant(arr, dt, name), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


def default_dtype(arr: np.ndarray) -> str | None:
    """The dtype of Python data (numbers, nested lists) without a tensor to follow: floats
    f32, ints i32 (i64 when a value needs it), bools bool."""
    if arr.dtype.kind == "f":
        return "f32"
    if arr.dtype.kind in "iu":
        fits = not arr.size or (np.iinfo(np.int32).min <= arr.min() and arr.max() <= np.iinfo(np.int32).max)
        return "i32" if fits else "i64"
    return None
