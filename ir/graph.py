"""The SSA tensor graph: Value, Node, Graph.

A Graph owns named inputs, parameters (persistent state), constants, an ordered node list
(the schedule), outputs and parameter updates. Nodes are created through `Graph.add_node`,
the one place where attributes are checked and output types inferred, so every node in a
graph has been checked against its registry entry.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from . import dtypes
from .errors import GraphcError, VerificationError
from .init import Init
from .loc import Loc
from .registry import get_op
from .types import TensorType

_serial = itertools.count()  # unique ids for debugging text only; never part of semantics

# The text printer and the verifier sit above this module (they read graphs, so they import
# it), yet str(g), g.to_text() and g.verify() are the conveniences users reach for. They go
# through these slots, which ir/text.py and ir/verify.py fill as they load; importing any
# graphc.ir module runs the package __init__, which loads both, so they are never empty.
_VIEWS: dict[str, Callable[..., Any]] = {}


def provide_view(name: str, fn: Callable[..., Any]) -> None:
    """Install the implementation of a Graph view ("text" or "verify")."""
    _VIEWS[name] = fn


def _view(name: str) -> Callable[..., Any]:
    try:
        return _VIEWS[name]
    except KeyError:  # only if a module of graphc.ir was loaded bypassing the package
        raise GraphcError(f"internal: graph view {name!r} is not installed; import graphc.ir") from None


class Value:
    """An SSA value: a graph input, parameter, constant, or a node output."""

    __slots__ = ("type", "kind", "name", "producer", "index", "data", "init", "trainable", "uid")

    def __init__(self, type: TensorType, kind: str, name: str | None = None, *,
                 producer: "Node | None" = None, index: int = 0,
                 data: np.ndarray | None = None, init: Init | None = None,
                 trainable: bool = True) -> None:
        self.type = type
        self.kind = kind  # "input" | "param" | "const" | "node"
        self.name = name
        self.producer = producer
        self.index = index
        self.data = data
        self.init = init
        self.trainable = trainable
        self.uid = next(_serial)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> dtypes.DType:
        return self.type.dtype

    def ref(self) -> str:
        return f"%{self.name}" if self.name else f"%v{self.uid}"

    def __repr__(self) -> str:
        return f"{self.ref()}: {self.type}"


class Node:
    """One op application: inputs, attributes, outputs and the user's source line."""

    __slots__ = ("op", "inputs", "attrs", "outputs", "loc", "group")

    def __init__(self, op: str, inputs: list[Value], attrs: dict[str, Any], loc: Loc | None) -> None:
        self.op = op
        self.inputs = inputs
        self.attrs = attrs
        self.outputs: list[Value] = []
        self.loc = loc
        # Fusion group: nodes sharing a number lower to one kernel (set by passes/fusion.py).
        self.group: int | None = None

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise GraphcError(f"op {self.op} has {len(self.outputs)} outputs, not one", node=self)
        return self.outputs[0]

    def describe(self) -> str:
        args = ", ".join(repr(v) for v in self.inputs)
        attrs = ""
        if self.attrs:
            attrs = " {" + ", ".join(f"{k}={v!r}" for k, v in self.attrs.items()) + "}"
        outs = ", ".join(v.ref() for v in self.outputs) or "?"
        return f"node {outs} = {self.op}({args}){attrs}"

    def __repr__(self) -> str:
        return self.describe()


class Graph:
    """A whole program: the unit that passes transform and backends compile."""

    def __init__(self, name: str = "main") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.params: list[Value] = []
        self.constants: list[Value] = []
        self.nodes: list[Node] = []
        self.outputs: list[Value] = []
        self.updates: dict[str, Value] = {}
        self.param_values: dict[str, np.ndarray] = {}  # explicit initial values (external)

    # -- construction ---------------------------------------------------------------
    def _check_name(self, name: str, what: str) -> None:
        if not isinstance(name, str) or not name or not (name[0].isalpha() or name[0] == "_") \
                or not all(c.isalnum() or c in "_." for c in name):
            raise GraphcError(f"{what} name {name!r} must start with a letter or '_' and hold "
                              "only letters, digits, '_' and '.'")
        if name in self.named_values():
            raise GraphcError(f"graph {self.name!r} already has a value named {name!r}")

    def add_input(self, name: str, type: TensorType) -> Value:
        self._check_name(name, "input")
        v = Value(type, "input", name)
        self.inputs.append(v)
        return v

    def add_param(self, name: str, type: TensorType, *, init: Init | None = None,
                  value: np.ndarray | None = None, trainable: bool = True) -> Value:
        self._check_name(name, "parameter")
        if value is not None:
            arr = np.asarray(value)
            if arr.shape != type.shape:
                raise GraphcError(f"parameter {name!r}: value has shape {arr.shape}, "
                                  f"declared {type.shape}")
            self.param_values[name] = np.array(arr, dtype=type.dtype.np_dtype, order="C")
        v = Value(type, "param", name, init=init, trainable=trainable)
        self.params.append(v)
        return v

    def add_constant(self, data: np.ndarray, dtype: "dtypes.DType | str | None" = None,
                     name: str | None = None) -> Value:
        if name is not None and (not isinstance(name, str) or not name or name in self.named_values()):
            # Constant names are free-form (ONNX initialisers), but unique like all names.
            raise GraphcError(f"constant name {name!r} is empty or already taken in graph "
                              f"{self.name!r}")
        arr = np.asarray(data)
        dt = dtypes.dtype(dtype) if dtype is not None else dtypes.from_numpy(arr.dtype)
        arr = np.array(arr, dtype=dt.np_dtype, order="C")
        arr.setflags(write=False)
        v = Value(TensorType(arr.shape, dt), "const", name, data=arr)
        self.constants.append(v)
        return v

    def add_node(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None,
                 loc: Loc | None = None) -> Node:
        """Check attributes, infer output types and append a node to the schedule."""
        opdef = get_op(op, loc=loc)
        inputs = list(inputs)
        for i, v in enumerate(inputs):
            if not isinstance(v, Value):
                raise GraphcError(f"input {i} of {op} is {type(v).__name__}, not a graph value",
                                  loc=loc)
        node = Node(op, inputs, {}, loc)
        try:
            node.attrs = opdef.check_attrs(attrs or {})
            out_types = opdef.infer_types([v.type for v in inputs], node.attrs)
        except GraphcError as e:
            raise e.attach(node, loc)
        node.outputs = [Value(t, "node", producer=node, index=i) for i, t in enumerate(out_types)]
        self.nodes.append(node)
        return node

    def set_outputs(self, outputs: Iterable[Value]) -> None:
        self.outputs = list(outputs)

    # -- queries --------------------------------------------------------------------
    def named_values(self) -> dict[str, Value]:
        return {v.name: v for v in itertools.chain(self.inputs, self.params, self.constants)
                if v.name}

    def param(self, name: str) -> Value:
        for p in self.params:
            if p.name == name:
                return p
        raise GraphcError(f"graph {self.name!r} has no parameter {name!r}; it has "
                          f"{[p.name for p in self.params]}")

    def initial_param_value(self, p: Value) -> np.ndarray:
        if p.name in self.param_values:
            return self.param_values[p.name]
        if p.init is None:
            raise GraphcError(f"parameter {p.name!r} has no initialiser and no value; pass "
                              "params={...} to compile")
        return p.init.materialize(p.type)

    def all_values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.params
        yield from self.constants
        for n in self.nodes:
            yield from n.outputs

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {v: [] for v in self.all_values()}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def __str__(self) -> str:
        return _view("text")(self)

    def to_text(self) -> str:
        return _view("text")(self)

    def verify(self) -> None:
        _view("verify")(self)

    def copy(self) -> "Graph":
        """A deep structural copy (new Values and Nodes; constant arrays are shared)."""
        g = Graph(self.name)
        mapping: dict[Value, Value] = {}
        for v in self.inputs:
            mapping[v] = g.add_input(v.name, v.type)
        for v in self.params:
            mapping[v] = g.add_param(v.name, v.type, init=v.init, trainable=v.trainable)
        g.param_values = dict(self.param_values)
        for v in self.constants:
            c = Value(v.type, "const", v.name, data=v.data)
            g.constants.append(c)
            mapping[v] = c
        for n in self.nodes:
            try:
                ins = [mapping[v] for v in n.inputs]
            except KeyError:
                raise VerificationError("node uses a value defined nowhere before it", node=n)
            m = Node(n.op, ins, dict(n.attrs), n.loc)
            m.group = n.group
            m.outputs = [Value(v.type, "node", v.name, producer=m, index=v.index) for v in n.outputs]
            mapping.update(zip(n.outputs, m.outputs))
            g.nodes.append(m)
        g.outputs = [mapping[v] for v in self.outputs]
        g.updates = {k: mapping[v] for k, v in self.updates.items()}
        return g
