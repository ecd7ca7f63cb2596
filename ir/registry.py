"""The op registry: one entry per op, read by every pass and backend.

An entry holds the attribute schema, type inference, a numpy reference implementation, the
vector-Jacobian product (built from other registry ops through an Emitter), the fusion
class, a cost estimate, and (for elementwise ops) the scalar expression used by code
generators. Passes and backends never keep their own lists of op names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from . import dtypes
from .errors import AttrError, GraphcError, UnknownOpError
from .types import TensorType


class Fusion(enum.Enum):
    ELEMENTWISE = "elementwise"
    BROADCAST = "broadcast"
    REDUCTION = "reduction"
    CONTRACTION = "contraction"
    LAYOUT = "layout"
    OPAQUE = "opaque"


_REQUIRED = object()
_INT64_MIN, _INT64_MAX = -2**63, 2**63 - 1
ATTR_KINDS = ("int", "float", "bool", "str", "ints", "floats", "dtype")


@dataclass(frozen=True)
class Attr:
    kind: str
    default: Any = _REQUIRED
    choices: tuple | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def _coerce(name: str, spec: Attr, value: Any) -> Any:
    def bad(why: str) -> AttrError:
        return AttrError(f"attribute {name}={value!r}: {why}")

    k = spec.kind
    if k == "int":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise bad("expected an int")
        out: Any = int(value)
        if not _INT64_MIN <= out <= _INT64_MAX:  # kernels index and print attributes as int64
            raise bad("does not fit in 64 bits")
    elif k == "float":
        if isinstance(value, (bool, np.bool_, complex, np.complexfloating)) or \
                not isinstance(value, (int, float, np.number)):
            raise bad("expected a real number")
        try:
            out = float(value)
        except OverflowError:
            raise bad("too large for a float") from None
    elif k == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise bad("expected true or false")
        out = bool(value)
    elif k == "str":
        if not isinstance(value, str):
            raise bad("expected a string")
        out = value
    elif k in ("ints", "floats"):
        if not isinstance(value, (list, tuple, np.ndarray)) or getattr(value, "ndim", 1) != 1:
            raise bad("expected a flat list")
        item = Attr("int" if k == "ints" else "float")
        out = tuple(_coerce(name, item, v) for v in value)
    elif k == "dtype":
        try:
            if value is None or isinstance(value, (bool, int, float, np.bool_)):
                raise TypeError  # numpy reads None as float64 and some ints as type codes
            out = dtypes.dtype(value)
        except (GraphcError, TypeError, ValueError):
            raise bad(f"expected one of {', '.join(dtypes.BY_NAME)}") from None
    else:  # pragma: no cover - schema typo
        raise AssertionError(k)
    if spec.choices is not None and out not in spec.choices:
        raise bad(f"expected one of {', '.join(map(str, spec.choices))}")
    return out


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int


InferFn = Callable[[list[TensorType], dict[str, Any]], "TensorType | list[TensorType]"]
RefFn = Callable[..., "np.ndarray | tuple[np.ndarray, ...]"]
VjpFn = Callable[..., "list[Any]"]


def _elementwise_cost(flops_per_element: int) -> Callable[[list[TensorType], list[TensorType], dict], Cost]:
    def cost(ins: list[TensorType], outs: list[TensorType], attrs: dict) -> Cost:
        n = sum(t.size for t in outs)
        return Cost(flops_per_element * n, sum(t.nbytes for t in ins) + sum(t.nbytes for t in outs))
    return cost


@dataclass
class OpDef:
    """Everything graphc knows about one op."""

    name: str
    fusion: Fusion
    infer: InferFn
    reference: RefFn
    arity: int | None  # number of tensor inputs; None = variadic (at least one)
    attrs: dict[str, Attr] = field(default_factory=dict)
    vjp: VjpFn | None = None
    cost: Callable[[list[TensorType], list[TensorType], dict], Cost] = _elementwise_cost(1)
    num_outputs: int = 1
    doc: str = ""
    # Inputs through which no gradient flows (indices, labels, masks): the VJP returns None.
    nondiff_inputs: tuple[int, ...] = ()
    # Code generation hooks. `scalar(xs, attrs, out_dtype) -> kernel Expr` gives an
    # elementwise op's value from its operands' scalar values. `lower(ctx, node)` emits
    # kernel IR for ops the lowering handles directly. `decompose(b, node) -> outputs`
    # rebuilds a composite op (softmax, conv2d, batch_norm...) from other registry ops, the
    # way a VJP does, for backends without a dedicated kernel for it.
    scalar: Callable[..., Any] | None = None
    lower: Callable[..., Any] | None = None
    decompose: Callable[..., Any] | None = None
    # For reductions that fold their operand along `axes` with one associative operation:
    # how ("sum", "mean", "max", "min"). Fusion puts such a reduction in a loop nest with
    # the elementwise ops around it.
    combine: str | None = None
    # `lower_epilogue(ctx, node, out, epilogue)` lowers a contraction whose elementwise
    # consumers fuse into its kernel: `epilogue(batch_coords)` gives the kernel-IR
    # expression applied to each result element (see ir/kernel.py's Gemm), and the result
    # is written to `out`'s buffer.
    lower_epilogue: Callable[..., Any] | None = None
    # The result's elements as the GEMMs computing them see them, (batch..., rows,
    # columns), when that is not the result's own shape: conv2d's (N, K, OH, OW) is
    # (N, groups, K/groups, OH*OW). Epilogues index their operands over this shape.
    gemm_shape: Callable[[Any], tuple[int, ...]] | None = None
    # The output is the input's elements in the same order under a new shape (reshape,
    # squeeze, expand_dims): lowered as a view; fusion looks through it.
    view: bool = False
    # The `lower` hook calls GEMM inside a loop nest beside other statements (a CPU-style
    # per-image loop). Code generators that launch every GEMM as a kernel of its own (CUDA)
    # decompose such an op instead (passes/legalize.py: has_flat_kernel).
    lower_nests_gemm: bool = False
    # `batch_split(node, batched, rows) -> attrs | None`: whether each index of axis 0 is
    # computed from that index alone, and the attributes for a batch of `rows` (ir/batch.py;
    # elementwise ops and reductions have a default there). None: the op is not batch-wise.
    batch_split: Callable[..., Any] | None = None
    # `rounding(attrs) -> eps units`: the float error one application may add, relative to
    # the magnitude of its inputs, where counting terms underestimates it (a transform
    # with large coefficients: ir/tolerance.py). None: the default estimate there.
    rounding: Callable[[dict], float] | None = None

    @property
    def differentiable(self) -> bool:
        return self.vjp is not None

    def check_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Validate against the schema, fill defaults, coerce to canonical Python values."""
        unknown = sorted(set(attrs) - set(self.attrs))
        if unknown:
            raise AttrError(f"op {self.name} has no attribute {', '.join(unknown)}; "
                            f"its attributes are {', '.join(self.attrs) or 'none'}")
        out: dict[str, Any] = {}
        for name, spec in self.attrs.items():
            if name in attrs:
                out[name] = _coerce(name, spec, attrs[name])
            elif spec.required:
                raise AttrError(f"op {self.name} needs attribute {name} ({spec.kind})")
            else:
                out[name] = _coerce(name, spec, spec.default)
        return out

    def infer_types(self, in_types: Sequence[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        if self.arity is not None and len(in_types) != self.arity:
            raise GraphcError(f"op {self.name} takes {self.arity} inputs, got {len(in_types)}")
        if self.arity is None and not in_types:
            raise GraphcError(f"op {self.name} needs at least one input")
        out = self.infer(list(in_types), attrs)
        outs = [out] if isinstance(out, TensorType) else list(out)
        if len(outs) != self.num_outputs:  # a registry bug, reported like any other error
            raise GraphcError(f"internal: shape rule of {self.name} gave {len(outs)} results, "
                              f"the op declares {self.num_outputs}")
        return outs

    def estimate_cost(self, in_types: list[TensorType], out_types: list[TensorType],
                      attrs: dict[str, Any]) -> Cost:
        return self.cost(in_types, out_types, attrs)


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise AssertionError(f"op {opdef.name} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str, loc: Any = None) -> OpDef:
    if not isinstance(name, str):
        raise UnknownOpError(f"an op name is a string, not {type(name).__name__} {name!r}", loc=loc)
    try:
        return _REGISTRY[name]
    except KeyError:
        import difflib
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownOpError(f"unknown op {name!r}{hint}", loc=loc) from None


def all_ops() -> dict[str, OpDef]:
    """Every registered op by name. The op library registers itself when graphc.ir loads
    (its __init__ imports ir/ops), so this module never imports the ops it indexes."""
    return dict(sorted(_REGISTRY.items()))


def elementwise_cost(flops_per_element: int):
    return _elementwise_cost(flops_per_element)
