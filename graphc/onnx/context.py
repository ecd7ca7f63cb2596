"""What an op converter sees: one ONNX node, its inputs as graph values, its attributes.

Converters are plain functions `convert(ctx) -> list of output values` registered per ONNX
op type with `@converter("Relu", ...)`. They build registry ops through `ctx.b` (an
Emitter that stamps every node with the ONNX node's location) and refuse what they cannot
import with `ctx.unsupported(reason)`, which the importer collects over the whole model.

Versions: an op's meaning can change between opsets (Split's sizes moved from an attribute
to an input, Softmax stopped flattening to 2-D), so a converter declares the range of
default-domain opsets it handles, `@converter("Slice", since=1, until=9)`, as ONNX Runtime
keeps one kernel per opset range. The importer picks, for the model's opset, the narrowest
range that holds it; a plain `@converter("Relu")` covers MIN_OPSET and every later opset.
A converter for an old form can hand the node on in its new form (`ctx.delegate`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import numpy as np

from ..ir import dtypes
from ..ir.emitter import Emitter
from ..ir.graph import Graph, Value
from ..ir.loc import Loc

Converter = Callable[["NodeContext"], "list[Value | None]"]

# The oldest default-domain opset a converter covers unless it says otherwise: opset 7 is
# where elementwise ops took numpy broadcasting (older ones had `broadcast`/`axis`).
MIN_OPSET = 7

_MISSING = object()
# The largest tensor the importer computes itself (a ConstantOfShape, a Range, a folded
# constant subgraph): 2**28 elements, 1 GiB of f32.
MAX_CONSTANT_ELEMENTS = 2**28


@dataclass(frozen=True)
class Registration:
    """One converter for one op over the opsets since..until (None: every later one);
    `needs` names ops it delegates to, without which it converts nothing."""
    since: int
    until: int | None
    fn: Converter
    needs: tuple[str, ...] = ()

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    @property
    def width(self) -> float:
        return float("inf") if self.until is None else self.until - self.since

    def usable(self) -> bool:
        """Every op it delegates to has a converter of its own (not this one)."""
        return all(any(r.fn is not self.fn for r in CONVERTERS.get(n, ())) for n in self.needs)


# ONNX op type -> its converters, filled as the ops_* modules import (an explicit registry).
CONVERTERS: dict[str, list[Registration]] = {}


def converter(*op_types: str, since: int = MIN_OPSET, until: int | None = None,
              needs: tuple[str, ...] = ()) -> Callable[[Converter], Converter]:
    """Register `fn` for `op_types` at the default-domain opsets since..until (inclusive).
    Ranges of one op may nest (the narrower one wins: an old form's converter inside a
    general one) but not cross or repeat."""
    def register(fn: Converter) -> Converter:
        new = Registration(since, until, fn, tuple(needs))
        for op in op_types:
            for old in CONVERTERS.get(op, []):
                if _conflict(old, new):
                    raise AssertionError(f"ONNX op {op} has two converters for opsets "
                                         f"{_span(old)} and {_span(new)}")
            CONVERTERS.setdefault(op, []).append(new)
        return fn
    return register


def _span(r: Registration) -> str:
    return f"{r.since}..{'' if r.until is None else r.until}"


def _conflict(a: Registration, b: Registration) -> bool:
    """Two ranges that overlap without one holding the other (or that are the same)."""
    end = lambda r: r.until if r.until is not None else 1 << 30  # noqa: E731
    if max(a.since, b.since) > min(end(a), end(b)):
        return False
    nested = (a.since <= b.since and end(b) <= end(a)) or (b.since <= a.since and end(a) <= end(b))
    return not nested or (a.since, end(a)) == (b.since, end(b))


def converter_for(op: str, opset: int) -> Converter | None:
    """The converter for `op` in a model of this default-domain opset, or None."""
    fits = [r for r in CONVERTERS.get(op, ()) if r.covers(opset) and r.usable()]
    return min(fits, key=lambda r: r.width).fn if fits else None


def supported_at(opset: int) -> list[str]:
    """The op types a model of this default-domain opset can use."""
    return sorted(op for op in CONVERTERS if converter_for(op, opset) is not None)


class Unsupported(Exception):
    """Raised by a converter for an attribute value or input it cannot import."""


class NeedsValue(Unsupported):
    """A shape, axes, sizes or pads operand that is computed at run time. The importer
    traces it back to the graph inputs it comes from: those are then specialised by value
    (importer.DynamicModel), since graphc compiles static shapes."""

    def __init__(self, what: str, index: int, value: Value) -> None:
        self.what, self.index, self.value = what, index, value
        super().__init__(f"{what} (input {index}) must be known when compiling (graphc "
                         "compiles static shapes), but it is computed at run time")


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
    def __init__(self, graph: Graph, node: Any, loc: Loc, inputs: list[Value | None],
                 opset: int = 0) -> None:
        self.graph = graph
        self.node = node
        self.op = node.op_type
        self.loc = loc
        self.inputs = inputs
        self.opset = opset  # the model's default-domain opset
        self.b = Emitter(graph, loc)
        self._attrs = {a.name: a for a in node.attribute}

    def delegate(self, op: str, opset: int, inputs: list[Value | None] | None = None,
                 attrs: dict[str, Any] | None = None, drop: tuple[str, ...] = ()) -> list:
        """Convert this node as `op` of a later opset (an old form rewritten into its new
        one: Scatter-9 is ScatterElements-11, TopK-1's k attribute becomes TopK-10's
        input): new inputs, attributes set (`attrs`) or removed (`drop`)."""
        from onnx import NodeProto, helper
        fn = converter_for(op, opset)
        if fn is None:
            raise Unsupported(f"{self.op} at opset {self.opset} is {op} of opset {opset}, "
                              f"which graphc does not import")
        node = NodeProto()
        node.CopyFrom(self.node)
        node.op_type = op
        gone = set(drop) | set(attrs or {})
        keep = [a for a in node.attribute if a.name not in gone]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.extend(helper.make_attribute(k, v) for k, v in (attrs or {}).items())
        return fn(NodeContext(self.graph, node, self.loc,
                              self.inputs if inputs is None else inputs, opset))

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
            raise NeedsValue(what, i, v)
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
