"""What an op converter sees: one ONNX node, its inputs as graph values, its attributes.

Converters are plain functions `convert(ctx) -> list of output values` registered per ONNX
op type with `@converter("Relu", ...)`. They build registry ops through `ctx.b` (an
Emitter that stamps every node with the ONNX node's location) and refuse what they cannot
import with `ctx.unsupported(reason)`, which the importer collects over the whole model.
"""
from __future__ import annotations

from typing import Any, Callable, NoReturn

import numpy as np

from ..ir import dtypes
from ..ir.emitter import Emitter
from ..ir.graph import Graph, Value
from ..ir.loc import Loc

Converter = Callable[["NodeContext"], "list[Value | None]"]
CONVERTERS: dict[str, Converter] = {}  # ONNX op type -> converter, filled as modules import

_MISSING = object()
# The largest tensor the importer computes itself (a ConstantOfShape, a Range, a folded
# constant subgraph): 2**28 elements, 1 GiB of f32.
MAX_CONSTANT_ELEMENTS = 2**28


def converter(*op_types: str) -> Callable[[Converter], Converter]:
    def register(fn: Converter) -> Converter:
        for op in op_types:
            if op in CONVERTERS:
                raise AssertionError(f"ONNX op {op} has two converters")
            CONVERTERS[op] = fn
        return fn
    return register


class Unsupported(Exception):
    """Raised by a converter for an attribute value or input it cannot import."""


# ONNX TensorProto element types graphc has; every other type is refused.
ONNX_DTYPES: dict[int, dtypes.DType] = {1: dtypes.f32, 11: dtypes.f64, 10: dtypes.f16,
                                        6: dtypes.i32, 7: dtypes.i64, 9: dtypes.bool_}


def graphc_dtype(elem_type: int, what: str) -> dtypes.DType:
    try:
        return ONNX_DTYPES[elem_type]
    except KeyError:
        from onnx import TensorProto
        name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() \
            else str(elem_type)
        raise Unsupported(f"{what} has element type {name}; graphc supports FLOAT, DOUBLE, "
                          "FLOAT16, INT32, INT64 and BOOL") from None


class NodeContext:
    def __init__(self, graph: Graph, node: Any, loc: Loc, inputs: list[Value | None]) -> None:
        self.graph = graph
        self.node = node
        self.op = node.op_type
        self.loc = loc
        self.inputs = inputs
        self.b = Emitter(graph, loc)
        self._attrs = {a.name: a for a in node.attribute}

    # -- attributes -----------------------------------------------------------------
    def attr(self, name: str, default: Any = _MISSING) -> Any:
        """The attribute's Python value (strings decoded, tensors as numpy arrays)."""
        from onnx import helper, numpy_helper
        a = self._attrs.get(name)
        if a is None:
            if default is _MISSING:
                raise Unsupported(f"required attribute {name!r} is missing")
            return default
        try:  # the onnx package reading the model's data: a damaged value is an OnnxError
            v = helper.get_attribute_value(a)
            if isinstance(v, bytes):
                return v.decode("utf-8")
            if isinstance(v, list) and v and isinstance(v[0], bytes):
                return [s.decode("utf-8") for s in v]
            if hasattr(v, "data_type") and hasattr(v, "dims"):  # a TensorProto
                return numpy_helper.to_array(v)
            return v
        except Exception as e:  # noqa: BLE001
            from .errors import OnnxError
            raise OnnxError(f"{self.op}: attribute {name!r} cannot be read (damaged model?): "
                            f"{type(e).__name__}: {str(e).strip()[:200]}") from None

    def has_attr(self, name: str) -> bool:
        return name in self._attrs

    def only_attrs(self, **allowed: Any) -> None:
        """Refuse attribute values other than the given ones (e.g. only_attrs(ceil_mode=0))."""
        for name, ok in allowed.items():
            if name in self._attrs and self.attr(name) != ok:
                self.unsupported(f"{name}={self.attr(name)!r} (only {ok!r} is supported)")

    # -- inputs and outputs ---------------------------------------------------------
    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def x(self, i: int = 0) -> Value:
        if not self.has_input(i):
            raise Unsupported(f"input {i} is required")
        return self.inputs[i]  # type: ignore[return-value]

    def opt(self, i: int) -> Value | None:
        return self.inputs[i] if self.has_input(i) else None

    def const(self, i: int, what: str) -> np.ndarray:
        """A constant input's data: shapes, axes and pads must be known when importing."""
        v = self.x(i)
        if v.kind != "const":
            raise Unsupported(f"{what} (input {i}) must be a constant or computed from shapes "
                              "only; graphc compiles static shapes")
        return v.data

    def const_ints(self, i: int, what: str) -> list[int]:
        return [int(d) for d in np.asarray(self.const(i, what)).reshape(-1)]

    def ints_from(self, attr: str, i: int, what: str) -> list[int] | None:
        """ints given as an attribute (older opsets) or a constant input (newer ones)."""
        if self.has_attr(attr):
            return [int(d) for d in self.attr(attr)]
        if self.has_input(i):
            return self.const_ints(i, what)
        return None

    @property
    def num_outputs(self) -> int:
        return len(self.node.output)

    def wants_output(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    def unsupported(self, why: str) -> NoReturn:
        raise Unsupported(why)

    def expect_shape(self, v: Value, shape: tuple, what: str) -> None:
        """A broken model, not a coverage gap: the operand's shape contradicts the op's
        definition (None in `shape`: any size; a rank alone as an int)."""
        want = (None,) * shape if isinstance(shape, int) else tuple(shape)
        if v.type.rank != len(want) or any(w is not None and w != d for w, d in zip(want, v.shape)):
            shown = "rank " + str(len(want)) if isinstance(shape, int) else \
                "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            from .errors import OnnxError
            raise OnnxError(f"{self.op}: {what} must have shape {shown}, got {v.type}")

    def check_size(self, shape: Any, what: str) -> tuple[int, ...]:
        """A shape for a tensor the importer builds itself (ConstantOfShape, Range): sizes
        non-negative and the tensor no larger than MAX_CONSTANT_ELEMENTS."""
        from .errors import OnnxError
        dims = tuple(int(d) for d in shape)
        if any(d < 0 for d in dims):
            raise OnnxError(f"{self.op}: {what} {list(dims)} has a negative dimension")
        n = int(np.prod(dims, dtype=object)) if dims else 1
        if n > MAX_CONSTANT_ELEMENTS:
            raise OnnxError(f"{self.op}: {what} {list(dims)} would be a constant of {n} elements; "
                            f"graphc builds constants of at most {MAX_CONSTANT_ELEMENTS} at import")
        return dims

    # -- helpers --------------------------------------------------------------------
    def axis(self, a: int, rank: int) -> int:
        if not -rank <= a < rank:
            raise Unsupported(f"axis {a} is out of range for rank {rank}")
        return a % rank

    def scalar(self, value: float, like: Value) -> Value:
        return self.b.const(np.asarray(value), like.dtype)
