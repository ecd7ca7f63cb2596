"""The functional builder API: `gc.relu(x)`, `gc.conv2d(x, w, stride=2)`, ...

Each function turns user-friendly arguments (negative axes, `None` for all axes, ints for
pairs, Python scalars, `-1` in shapes) into the canonical attributes of one registry op and
emits it into the tensors' graph, recording the user's source line.
"""
from __future__ import annotations

import builtins
import math
from typing import Any, Sequence

import numpy as np

from .args import as_array, as_bool, as_float, as_int, as_ints, as_shape, is_int
from .builder import Graph, current_graph, default_dtype, graph_for_operands
from .ir.errors import BuildError, GraphcError
from .ir.graph import Value
from .ir.loc import capture_loc
from .ir.registry import get_op
from .passes.autodiff import grad as _grad
from .tensor import Tensor

TensorLike = Any  # "Tensor", a Python number, or a numpy array

__all__ = ["neg", "abs", "sign", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "relu",
           "erf", "sin", "cos", "stop_gradient", "logical_not", "leaky_relu", "gelu", "add",
           "sub", "mul", "div", "pow", "maximum", "minimum", "equal", "not_equal", "less",
           "less_equal", "greater", "greater_equal", "logical_and", "logical_or", "where",
           "cast", "square", "clip", "sum", "mean", "max", "min", "argmax", "reshape",
           "transpose", "broadcast_to", "expand_dims", "squeeze", "concat", "pad", "take",
           "gather", "matmul", "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
           "softmax", "log_softmax", "one_hot", "softmax_cross_entropy", "batch_norm",
           "batch_norm_inference", "layer_norm", "grad", "emit"]


# --- emission --------------------------------------------------------------------------

def _graph_of(args: Sequence[Any]) -> Graph:
    graphs = {id(a.graph): a.graph for a in args if isinstance(a, Tensor)}
    if len(graphs) > 1:
        names = ", ".join(repr(g.name) for g in graphs.values())
        raise BuildError(f"operands come from different graphs ({names})", loc=capture_loc())
    return graph_for_operands(next(iter(graphs.values()))) if graphs else current_graph()


def _index_dtype(arr: np.ndarray, python: bool) -> str | None:
    """The dtype of a non-tensor index, label or mask operand: integers stay integers (i32
    or i64, as given; other widths take the narrowest of those that holds them), bools stay
    bool. Floats keep their kind, so the op's shape rule refuses them: an index is never
    truncated from a float."""
    k = arr.dtype.kind
    if k in "iu":
        if arr.dtype in (np.dtype(np.int32), np.dtype(np.int64)) and not python:
            return None
        dt = default_dtype(arr)
        if dt == "i64" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise BuildError(f"index values up to {arr.max()} do not fit i64", loc=capture_loc())
        return dt
    return default_dtype(arr) if python else None


def _lift(x: TensorLike, g: Graph, like: "Value | None", *, index: bool = False) -> Value:
    """A graph value for x: Tensors as they are, numbers and arrays as constants.

    The dtype of a number or array follows its role in the op. Index-like operands (the
    registry's `nondiff_inputs`: indices, labels, masks) keep their own integer or bool
    dtype. Data operands take the dtype of the op's (first) data tensor when that loses no
    kind: ints into float or int tensors, floats into float tensors (weak typing, as in
    JAX). Without a data tensor, Python floats become f32 and ints i32; numpy data keeps its
    dtype.
    """
    if isinstance(x, Tensor):
        return x.value
    arr = as_array(x, "operand")
    python = not isinstance(x, (np.ndarray, np.generic))
    if index:
        return g.add_constant(arr, _index_dtype(arr, python))
    if like is None:
        return g.add_constant(arr, default_dtype(arr) if python else None)
    t = like.dtype
    fits = ((t.is_float and arr.dtype.kind in "fiu") or (t.is_int and arr.dtype.kind in "iu")
            or (t.is_bool and arr.dtype.kind == "b"))
    if t.is_int and fits and arr.size:
        info = np.iinfo(t.np_dtype)
        fits = info.min <= arr.min() and arr.max() <= info.max
    if not fits:
        raise BuildError(f"cannot combine {arr.dtype} value {_short(x)} with a {like.type} tensor "
                         "without losing information; cast explicitly", loc=capture_loc())
    return g.add_constant(arr, t)


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def emit(op: str, *args: TensorLike, **attrs: Any) -> Any:
    """Append one registry op (by name) to the operands' graph: args are its operands, attrs
    its attributes (`graphc ops` lists both); returns a Tensor (or a tuple).

    Non-tensor operands become constants of the dtype their role needs (see `_lift`); the
    roles come from the registry entry, so no op names are listed here."""
    loc = capture_loc()
    try:
        opdef = get_op(op, loc)
        g = _graph_of(args)
        index = set(opdef.nondiff_inputs)
        like = next((a.value for i, a in enumerate(args) if isinstance(a, Tensor) and i not in index),
                    None)
        values = [_lift(a, g, None if i in index else like, index=i in index)
                  for i, a in enumerate(args)]
        node = g.add_node(op, values, attrs, loc)
    except GraphcError as e:
        raise e.attach(loc=loc)
    outs = tuple(Tensor(v, g) for v in node.outputs)
    return outs[0] if len(outs) == 1 else outs


def _data_operands(*xs: TensorLike) -> list[Tensor]:
    """Operands of one op that must share a dtype, as Tensors: numbers and arrays among
    them take the dtype of the first Tensor (as `emit` does for its data operands)."""
    tensors = [x for x in xs if isinstance(x, Tensor)]
    g = _graph_of(xs)
    like = tensors[0].value if tensors else None
    try:
        return [x if isinstance(x, Tensor) else Tensor(_lift(x, g, like), g) for x in xs]
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


# --- argument canonicalisation ---------------------------------------------------------

def _axes(axis: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(rank))
    out = []
    for a in as_ints(axis, "axis"):
        if not -rank <= a < rank:
            raise BuildError(f"axis {a} is out of range for rank {rank}", loc=capture_loc())
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise BuildError(f"axis {axis} repeats an axis", loc=capture_loc())
    return tuple(sorted(out))


def _axis(axis: int, rank: int) -> int:
    a = as_int(axis, "axis")
    if not -rank <= a < rank:
        raise BuildError(f"axis {a} is out of range for rank {rank}", loc=capture_loc())
    return a % rank


def _rank(x: TensorLike) -> int:
    return x.ndim if isinstance(x, Tensor) else np.ndim(as_array(x, "operand"))


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    t = as_ints(v, what)
    if len(t) == 1:
        return t[0], t[0]
    if len(t) != 2:
        raise BuildError(f"{what} must be an int or a pair, got {v!r}", loc=capture_loc())
    return t  # type: ignore[return-value]


def _is_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.ndim >= 1)


def _padding4(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, ...]:
    """(top, bottom, left, right) from an int, an (h, w) pair, four ints (top, bottom, left,
    right), the nested pairs ((top, bottom), (left, right)), 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            th, tw = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    elif _is_seq(padding) and len(padding) == 2 and all(_is_seq(p) for p in padding):
        (t, b), (l, r) = (_pair_strict(p, "padding") for p in padding)
        return (t, b, l, r)
    elif is_int(padding) or (_is_seq(padding) and not any(_is_seq(p) for p in padding)):
        t4 = as_ints(padding, "padding")
        if len(t4) in (1, 2, 4):
            return (t4 * 4 if len(t4) == 1 else (t4[0], t4[0], t4[1], t4[1]) if len(t4) == 2
                    else t4)
    raise BuildError("padding must be an int, an (h, w) pair, four ints (top, bottom, left, "
                     f"right), ((top, bottom), (left, right)), 'same' or 'valid'; got {padding!r}",
                     loc=capture_loc())


def _pair_strict(v: Any, what: str) -> tuple[int, int]:
    t = as_ints(v, what, scalar=False)
    if len(t) != 2:
        raise BuildError(f"{what}: each nested item must be a (before, after) pair, got {v!r}",
                         loc=capture_loc())
    return t  # type: ignore[return-value]


def _t(x: TensorLike) -> Tensor:
    if isinstance(x, Tensor):
        return x
    g = current_graph()
    try:
        return Tensor(_lift(x, g, None), g)
    except GraphcError as e:
        raise e.attach(loc=capture_loc())


# --- elementwise -----------------------------------------------------------------------

def neg(x: TensorLike) -> Tensor:
    """-x, elementwise."""
    return emit("neg", x)


def abs(x: TensorLike) -> Tensor:  # noqa: A001
    """|x|, elementwise."""
    return emit("abs", x)


def sign(x: TensorLike) -> Tensor:
    """-1, 0 or 1 by the sign of x, elementwise (0 for 0)."""
    return emit("sign", x)


def exp(x: TensorLike) -> Tensor:
    """e**x, elementwise."""
    return emit("exp", x)


def log(x: TensorLike) -> Tensor:
    """The natural logarithm of x, elementwise (-inf at 0, NaN below)."""
    return emit("log", x)


def sqrt(x: TensorLike) -> Tensor:
    """The square root of x, elementwise (NaN below 0)."""
    return emit("sqrt", x)


def rsqrt(x: TensorLike) -> Tensor:
    """1 / sqrt(x), elementwise."""
    return emit("rsqrt", x)


def tanh(x: TensorLike) -> Tensor:
    """The hyperbolic tangent of x, elementwise."""
    return emit("tanh", x)


def sigmoid(x: TensorLike) -> Tensor:
    """1 / (1 + exp(-x)), elementwise."""
    return emit("sigmoid", x)


def relu(x: TensorLike) -> Tensor:
    """max(x, 0), elementwise."""
    return emit("relu", x)


def erf(x: TensorLike) -> Tensor:
    """The Gauss error function of x, elementwise."""
    return emit("erf", x)


def sin(x: TensorLike) -> Tensor:
    """sin(x), elementwise (llvm: accurate for |x| <= 1e5 in f32, see backends/llvm/mathlib.py)."""
    return emit("sin", x)


def cos(x: TensorLike) -> Tensor:
    """cos(x), elementwise (llvm: accurate for |x| <= 1e5 in f32, see backends/llvm/mathlib.py)."""
    return emit("cos", x)


def stop_gradient(x: TensorLike) -> Tensor:
    """x itself, but gc.grad treats it as a constant: no gradient flows through it."""
    return emit("stop_gradient", x)


def logical_not(x: TensorLike) -> Tensor:
    """not x, elementwise, for a bool tensor x."""
    return emit("logical_not", x)


def leaky_relu(x: TensorLike, alpha: float = 0.01) -> Tensor:
    """x where x > 0, else alpha * x, elementwise."""
    return emit("leaky_relu", x, alpha=alpha)


def gelu(x: TensorLike, approximate: bool | str = False) -> Tensor:
    """GELU of x, elementwise; approximate=True (or 'tanh') uses the tanh form, False (or
    'none') the erf one."""
    modes = {"tanh": "tanh", "none": "none"}
    if isinstance(approximate, (bool, np.bool_)):
        mode = "tanh" if approximate else "none"
    elif isinstance(approximate, str) and approximate in modes:
        mode = modes[approximate]
    else:
        raise BuildError(f"gelu: approximate must be True, False, 'tanh' or 'none', got "
                         f"{approximate!r}", loc=capture_loc())
    return emit("gelu", x, approximate=mode)


def add(a: TensorLike, b: TensorLike) -> Tensor:
    """a + b, elementwise with numpy broadcasting."""
    return emit("add", a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    """a - b, elementwise with numpy broadcasting."""
    return emit("sub", a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    """a * b, elementwise with numpy broadcasting."""
    return emit("mul", a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    """a / b, elementwise with numpy broadcasting (integers: floor division, 0 where b is 0)."""
    return emit("div", a, b)


def pow(a: TensorLike, b: TensorLike) -> Tensor:  # noqa: A001
    """a ** b, elementwise with numpy broadcasting."""
    return emit("pow", a, b)


def maximum(a: TensorLike, b: TensorLike) -> Tensor:
    """The larger of a and b, elementwise with broadcasting (NaN if either is NaN)."""
    return emit("maximum", a, b)


def minimum(a: TensorLike, b: TensorLike) -> Tensor:
    """The smaller of a and b, elementwise with broadcasting (NaN if either is NaN)."""
    return emit("minimum", a, b)


def equal(a: TensorLike, b: TensorLike) -> Tensor:
    """a == b, elementwise with broadcasting; a bool tensor."""
    return emit("equal", a, b)


def not_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """a != b, elementwise with broadcasting; a bool tensor."""
    return emit("not_equal", a, b)


def less(a: TensorLike, b: TensorLike) -> Tensor:
    """a < b, elementwise with broadcasting; a bool tensor."""
    return emit("less", a, b)


def less_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """a <= b, elementwise with broadcasting; a bool tensor."""
    return emit("less_equal", a, b)


def greater(a: TensorLike, b: TensorLike) -> Tensor:
    """a > b, elementwise with broadcasting; a bool tensor."""
    return emit("greater", a, b)


def greater_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """a >= b, elementwise with broadcasting; a bool tensor."""
    return emit("greater_equal", a, b)


def logical_and(a: TensorLike, b: TensorLike) -> Tensor:
    """a and b, elementwise with broadcasting, for bool tensors."""
    return emit("logical_and", a, b)


def logical_or(a: TensorLike, b: TensorLike) -> Tensor:
    """a or b, elementwise with broadcasting, for bool tensors."""
    return emit("logical_or", a, b)


def where(cond: TensorLike, x: TensorLike, y: TensorLike) -> Tensor:
    """x where cond else y. A non-tensor condition becomes a bool constant; numbers and
    arrays for x or y take the dtype of the other (tensor) one."""
    return emit("where", cond, x, y)


def cast(x: TensorLike, dtype: Any) -> Tensor:
    """x converted to `dtype` ('f32', np.int64, ...); float to int truncates toward zero."""
    return emit("cast", x, to=dtype)


def square(x: TensorLike) -> Tensor:
    """x * x, elementwise."""
    return emit("mul", x, x)


def clip(x: TensorLike, lo: TensorLike | None = None, hi: TensorLike | None = None) -> Tensor:
    """max(min(x, hi), lo); bounds are numbers or tensors (broadcast), None for no bound."""
    out = x
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return _t(out)


# --- reductions -------------------------------------------------------------------------

def _reduce(op: str, x: TensorLike, axis: Any, keepdims: bool) -> Tensor:
    x = _t(x)
    return emit(op, x, axes=_axes(axis, x.ndim), keepdims=keepdims)


def sum(x: TensorLike, axis: int | Sequence[int] | None = None,  # noqa: A001
        keepdims: bool = False) -> Tensor:
    """The sum of x over `axis` (an int, a tuple of ints, or None: all axes); keepdims keeps
    the reduced axes as size 1, as numpy."""
    return _reduce("sum", x, axis, keepdims)


def mean(x: TensorLike, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
    """The mean of x over `axis` (an int, a tuple of ints, or None: all axes); keepdims keeps
    the reduced axes as size 1, as numpy."""
    return _reduce("mean", x, axis, keepdims)


def max(x: TensorLike, axis: int | Sequence[int] | None = None,  # noqa: A001
        keepdims: bool = False) -> Tensor:
    """The largest element of x over `axis` (an int, a tuple of ints, or None: all axes);
    keepdims keeps the reduced axes as size 1, as numpy."""
    return _reduce("max", x, axis, keepdims)


def min(x: TensorLike, axis: int | Sequence[int] | None = None,  # noqa: A001
        keepdims: bool = False) -> Tensor:
    """The smallest element of x over `axis` (an int, a tuple of ints, or None: all axes);
    keepdims keeps the reduced axes as size 1, as numpy."""
    return _reduce("min", x, axis, keepdims)


def argmax(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the largest element of x along axis (of the flattened tensor when axis is None;
    keepdims then keeps every axis as size 1, as numpy)."""
    x = _t(x)
    if axis is None:
        flat = emit("argmax", reshape(x, (-1,)), axis=0, keepdims=False)
        return reshape(flat, (1,) * x.ndim) if as_bool(keepdims, "keepdims") else flat
    return emit("argmax", x, axis=_axis(axis, x.ndim), keepdims=keepdims)


# --- layout -----------------------------------------------------------------------------

def reshape(x: TensorLike, shape: Sequence[int] | int) -> Tensor:
    """x with a new shape, same elements in row-major order; one dimension may be -1."""
    x = _t(x)
    dims = list(as_ints(shape, "shape"))
    if dims.count(-1) > 1:
        raise BuildError(f"reshape: at most one -1 in {tuple(dims)}", loc=capture_loc())
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known <= 0 or x.size % known:
            raise BuildError(f"reshape: cannot reshape {x.type} to {tuple(dims)}", loc=capture_loc())
        dims[dims.index(-1)] = x.size // known
    return emit("reshape", x, shape=tuple(dims))


def transpose(x: TensorLike, axes: Sequence[int] | None = None) -> Tensor:
    """x with its axes permuted: output axis i is input axis axes[i]; None reverses them."""
    x = _t(x)
    if axes is None:
        perm = tuple(reversed(range(x.ndim)))
    else:
        perm = tuple(_axis(a, x.ndim) for a in as_ints(axes, "axes", scalar=False))
    return emit("transpose", x, perm=perm)


def broadcast_to(x: TensorLike, shape: Sequence[int] | int) -> Tensor:
    """x repeated to `shape` by numpy's broadcasting rules."""
    return emit("broadcast_to", x, shape=as_shape(shape))


def expand_dims(x: TensorLike, axis: int | Sequence[int]) -> Tensor:
    """x with new size-1 axes at the positions `axis` (an int or several) of the result."""
    x = _t(x)
    items = as_ints(axis, "axis")
    return emit("expand_dims", x, axes=_axes(items, x.ndim + len(items)))


def squeeze(x: TensorLike, axis: int | Sequence[int] | None = None) -> Tensor:
    """x without the size-1 axes `axis` (None: every size-1 axis)."""
    x = _t(x)
    axes = tuple(i for i, d in enumerate(x.shape) if d == 1) if axis is None else _axes(axis, x.ndim)
    return emit("squeeze", x, axes=axes)


def concat(xs: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join the tensors xs (a list or tuple) along an existing axis."""
    if isinstance(xs, Tensor) or not isinstance(xs, (list, tuple)):
        raise BuildError(f"concat takes a list or tuple of tensors, got {type(xs).__name__}",
                         loc=capture_loc())
    xs = list(xs)
    if not xs:
        raise BuildError("concat needs at least one tensor", loc=capture_loc())
    return emit("concat", *xs, axis=_axis(axis, _rank(xs[0])))


def pad(x: TensorLike, pad_width: Sequence[Sequence[int]] | Sequence[int] | int,
        value: float = 0.0) -> Tensor:
    """x padded with `value` (a constant); numpy-style pad_width: an int, one (before,
    after) pair for every axis, or one pair per axis."""
    x = _t(x)
    if is_int(pad_width) or (_is_seq(pad_width) and not any(_is_seq(p) for p in pad_width)):
        flat = as_ints(pad_width, "pad_width")
        if len(flat) not in (1, 2):
            raise BuildError(f"pad: pad_width {pad_width!r} must be an int, a (before, after) "
                             "pair, or one pair per axis", loc=capture_loc())
        pairs = [(flat[0], flat[-1])] * x.ndim
    elif _is_seq(pad_width):
        pairs = [_pair_strict(p, f"pad_width[{i}]") for i, p in enumerate(pad_width)]
        if len(pairs) == 1:
            pairs = pairs * x.ndim
    else:
        raise BuildError(f"pad: pad_width must be an int or (before, after) pairs, got "
                         f"{pad_width!r}", loc=capture_loc())
    if len(pairs) != x.ndim:
        raise BuildError(f"pad: need one (before, after) pair per axis of {x.type}", loc=capture_loc())
    return emit("pad", x, low=tuple(p[0] for p in pairs), high=tuple(p[1] for p in pairs),
                interior=(0,) * x.ndim, value=as_float(value, "pad value"))


def take(x: TensorLike, indices: TensorLike, axis: int = 0) -> Tensor:
    """Gather slices of x at integer indices along axis (embedding lookup). numpy indices
    keep their integer dtype (i32 or i64); float indices are an error, never truncated."""
    x = _t(x)
    return emit("gather", x, indices, axis=_axis(axis, x.ndim))


gather = take


def getitem(x: Tensor, key: Any) -> Tensor:
    """Basic numpy indexing: ints, slices with positive steps, None, Ellipsis; an integer
    tensor (or array, or list of ints) indexes axis 0."""
    if isinstance(key, Tensor) or (isinstance(key, (np.ndarray, list)) and _int_array(key)):
        return take(x, key, 0)
    key = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, (Tensor, np.ndarray, list)) for k in key):
        raise BuildError("advanced indexing is supported only as x[indices] on axis 0 with "
                         "integer indices; use gc.take(x, indices, axis)", loc=capture_loc())
    n_ell = builtins.sum(k is Ellipsis for k in key)
    if n_ell > 1:
        raise BuildError("an index can only have one Ellipsis", loc=capture_loc())
    used = builtins.sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > x.ndim:
        raise BuildError(f"too many indices ({used}) for {x.type}", loc=capture_loc())
    if n_ell:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (x.ndim - used) + key[i + 1:]
    else:
        key = key + (slice(None),) * (x.ndim - used)
    starts, stops, steps, drop, new_axes = [], [], [], [], []
    axis = 0
    out_pos = 0
    for k in key:
        if k is None:
            new_axes.append(out_pos)
            out_pos += 1
            continue
        d = x.shape[axis]
        if is_int(k):
            i = int(k)
            if not -d <= i < d:
                raise BuildError(f"index {i} is out of range for axis {axis} of size {d}",
                                 loc=capture_loc())
            i %= d
            starts.append(i), stops.append(i + 1), steps.append(1)
            drop.append(axis)
        elif isinstance(k, slice):
            for part in (k.start, k.stop, k.step):
                if part is not None and not is_int(part):
                    if isinstance(part, Tensor):
                        part.__index__()  # a ConcretizationError that says why
                    raise BuildError(f"slice bounds must be ints or None, got {k!r}",
                                     loc=capture_loc())
            lo, hi, st = k.indices(d)
            if st < 1:
                raise BuildError("slices with negative steps are not supported", loc=capture_loc())
            starts.append(lo), stops.append(builtins.max(hi, lo)), steps.append(st)
            out_pos += 1
        else:
            why = " (a bool is a mask in numpy; graphc does not index by masks)" \
                if isinstance(k, (bool, np.bool_)) else ""
            raise BuildError(f"unsupported index {k!r}{why}", loc=capture_loc())
        axis += 1
    out = x
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        out = emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if drop:
        out = emit("squeeze", out, axes=tuple(drop))
    if new_axes:
        out = emit("expand_dims", out, axes=tuple(new_axes))
    return out


def _int_array(key: Any) -> bool:
    try:
        return np.asarray(key).dtype.kind in "iu"
    except (TypeError, ValueError):
        return False


# --- contraction ------------------------------------------------------------------------

def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """a @ b with numpy.matmul semantics, including 1-D operands and batch broadcasting."""
    a, b = _data_operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise BuildError(f"matmul: operands must have rank >= 1, got {a.type} @ {b.type} (use * "
                         "for scalars)", loc=capture_loc())
    va, vb = a.ndim == 1, b.ndim == 1
    if va:
        a = emit("reshape", a, shape=(1,) + a.shape)
    if vb:
        b = emit("reshape", b, shape=b.shape + (1,))
    out = emit("matmul", a, b)
    if va or vb:
        drop = tuple(i for i, flag in ((out.ndim - 2, va), (out.ndim - 1, vb)) if flag)
        out = emit("squeeze", out, axes=drop)
    return out


# --- nn ---------------------------------------------------------------------------------

def conv2d(x: TensorLike, w: TensorLike, bias: TensorLike | None = None,
           stride: int | Sequence[int] = 1, padding: Any = 0,
           dilation: int | Sequence[int] = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW input x with (K, C/groups, KH, KW) weights w; bias of shape
    (K,) or None; groups splits the channels into that many independent convolutions.

    stride and dilation: an int or an (h, w) pair. padding: an int (all sides), an (h, w)
    pair (symmetric, as torch's padding=(ph, pw)), four ints (top, bottom, left, right),
    the nested pairs ((top, bottom), (left, right)), 'valid' (none) or 'same' (the output
    keeps the input's size at stride 1; odd totals put the extra row/column at the bottom
    and right). ONNX's pads=[top, left, bottom, right] orders them differently: write
    ((top, bottom), (left, right)) to be explicit. Negative padding is refused.
    """
    x, w = _data_operands(x, w)
    dil = _pair(dilation, "dilation")
    out = emit("conv2d", x, w, strides=_pair(stride, "stride"),
               padding=_padding4(padding, (w.shape[2], w.shape[3]) if w.ndim == 4 else (1, 1), dil),
               dilations=dil, groups=groups)
    if bias is not None:
        (b,) = _data_operands(out, bias)[1:]
        out = out + reshape(b, (1, -1, 1, 1))
    return out


def max_pool2d(x: TensorLike, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Any = 0) -> Tensor:
    """Max over kernel windows of NCHW x; stride defaults to the kernel; padding as for
    conv2d (padded positions never win)."""
    k = _pair(kernel, "kernel")
    return emit("max_pool2d", x, kernel=k, strides=_pair(stride if stride is not None else k, "stride"),
                padding=_padding4(padding, k, (1, 1)))


def avg_pool2d(x: TensorLike, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Any = 0, count_include_pad: bool = True) -> Tensor:
    """Mean over kernel windows of NCHW x; stride defaults to the kernel; padding as for
    conv2d; count_include_pad=True divides by the whole window, False by its unpadded part."""
    k = _pair(kernel, "kernel")
    return emit("avg_pool2d", x, kernel=k, strides=_pair(stride if stride is not None else k, "stride"),
                padding=_padding4(padding, k, (1, 1)), count_include_pad=count_include_pad)


def global_avg_pool2d(x: TensorLike, keepdims: bool = False) -> Tensor:
    """Mean over H and W of an NCHW tensor x (keepdims keeps them as size 1): a `mean`
    reduction, so fusion sees a reduction."""
    return mean(x, axis=(2, 3), keepdims=keepdims)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along `axis`, computed stably (max subtracted first)."""
    x = _t(x)
    return emit("softmax", x, axis=_axis(axis, x.ndim))


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """log(softmax(x)) along `axis`, computed stably (x - max - log-sum-exp)."""
    x = _t(x)
    return emit("log_softmax", x, axis=_axis(axis, x.ndim))


def one_hot(labels: TensorLike, depth: int, dtype: Any = "f32") -> Tensor:
    """A (..., depth) tensor of `dtype`: 1 at each integer label of labels, 0 elsewhere."""
    return emit("one_hot", labels, depth=depth, dtype=dtype)


def softmax_cross_entropy(logits: TensorLike, labels: TensorLike, reduction: str = "mean") -> Tensor:
    """Cross-entropy of softmax(logits) (N, C) against integer labels (N,); reduction
    'mean' (default), 'sum' or 'none'. numpy labels keep their integer dtype."""
    return emit("softmax_cross_entropy", logits, labels, reduction=reduction)


def batch_norm(x: TensorLike, gamma: TensorLike, beta: TensorLike, *, eps: float = 1e-5,
               axis: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch norm of x over every axis but `axis` (channels), scaled by gamma and
    shifted by beta (shape (C,)), with eps added to the variance: returns (y, batch_mean,
    batch_var). gc.nn.BatchNorm keeps the running statistics."""
    x, gamma, beta = _data_operands(x, gamma, beta)
    return emit("batch_norm", x, gamma, beta, axis=_axis(axis, x.ndim), eps=eps)


def batch_norm_inference(x: TensorLike, gamma: TensorLike, beta: TensorLike, mean: TensorLike,
                         var: TensorLike, *, eps: float = 1e-5, axis: int = 1) -> Tensor:
    """Inference-mode batch norm: (x - mean) / sqrt(var + eps) * gamma + beta, with the
    per-channel (`axis`) statistics given."""
    x, gamma, beta, mean, var = _data_operands(x, gamma, beta, mean, var)
    return emit("batch_norm_inference", x, gamma, beta, mean, var, axis=_axis(axis, x.ndim), eps=eps)


def layer_norm(x: TensorLike, gamma: TensorLike, beta: TensorLike, *,
               axis: int | Sequence[int] | None = -1, eps: float = 1e-5) -> Tensor:
    """Normalise x over the trailing axes `axis` (which must be the last ones; None: all),
    then scale by gamma and shift by beta; eps is added to the variance."""
    x, gamma, beta = _data_operands(x, gamma, beta)
    axes = _axes(axis, x.ndim)
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
        raise BuildError(f"layer_norm normalises trailing axes; got {axis} for rank {x.ndim}",
                         loc=capture_loc())
    return emit("layer_norm", x, gamma, beta, axes=axes, eps=eps)


# --- autodiff ---------------------------------------------------------------------------

def grad(y: Tensor, xs: Tensor | Sequence[Tensor], seed: Tensor | None = None) -> Any:
    """Gradients of scalar y (or of sum(seed * y)) with respect to each of xs.

    Appends the backward graph; returns one Tensor per x (a single Tensor if xs is one).
    """
    single = isinstance(xs, Tensor)
    if not isinstance(y, Tensor):
        raise BuildError(f"grad: y must be a Tensor, got {type(y).__name__}", loc=capture_loc())
    if not single and not isinstance(xs, (list, tuple)):
        raise BuildError(f"grad: xs must be a Tensor or a list of Tensors, got {type(xs).__name__}",
                         loc=capture_loc())
    xs_list = [xs] if single else list(xs)
    for i, x in enumerate(xs_list):
        if not isinstance(x, Tensor):
            raise BuildError(f"grad: xs[{i}] is a {type(x).__name__}, not a Tensor",
                             loc=capture_loc())
    if seed is not None and not isinstance(seed, Tensor):
        raise BuildError(f"grad: seed must be a Tensor or None, got {type(seed).__name__}",
                         loc=capture_loc())
    g = _graph_of([y, *xs_list] + ([seed] if seed is not None else []))
    loc = capture_loc()
    try:
        out = _grad(g, y.value, [x.value for x in xs_list], seed.value if seed is not None else None,
                    loc=loc)
    except GraphcError as e:
        raise e.attach(loc=loc)
    tensors = [Tensor(v, g) for v in out]
    return tensors[0] if single else tensors
