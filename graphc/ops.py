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

from .builder import Graph, current_graph
from .ir import dtypes
from .ir.errors import BuildError, GraphcError
from .ir.graph import Value
from .ir.loc import capture_loc
from .passes.autodiff import grad as _grad
from .tensor import Tensor

TensorLike = Any  # Tensor, Python number, or numpy array

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
    return next(iter(graphs.values())) if graphs else current_graph()


def _lift(x: TensorLike, g: Graph, like: "Value | None") -> Value:
    """A graph value for x: Tensors as they are, numbers and arrays as constants.

    Numbers and arrays take the dtype of the tensor they combine with (weak typing, as in
    JAX) when that loses no kind: ints into float or int tensors, floats into float
    tensors. Alone, Python floats become f32 and ints i32; numpy data keeps its dtype.
    """
    if isinstance(x, Tensor):
        return x.value
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise BuildError(f"cannot use {type(x).__name__} as a tensor", loc=capture_loc())
    if like is None:
        python_number = not isinstance(x, (np.ndarray, np.generic))
        dtype = {"f": "f32", "i": "i32", "u": "i32"}.get(arr.dtype.kind) if python_number else None
        return g.add_constant(arr, dtype)
    t = like.dtype
    fits = ((t.is_float and arr.dtype.kind in "fiu") or (t.is_int and arr.dtype.kind in "iu")
            or (t.is_bool and arr.dtype.kind == "b"))
    if t.is_int and fits and arr.size:
        info = np.iinfo(t.np_dtype)
        fits = info.min <= arr.min() and arr.max() <= info.max
    if not fits:
        raise BuildError(f"cannot combine {arr.dtype} value {x!r} with a {like.type} tensor "
                         "without losing information; cast explicitly", loc=capture_loc())
    return g.add_constant(arr, t)


def emit(op: str, *args: TensorLike, **attrs: Any) -> Any:
    """Append one registry op to the operands' graph; returns a Tensor (or a tuple)."""
    g = _graph_of(args)
    like = next((a.value for a in args if isinstance(a, Tensor)), None)
    loc = capture_loc()
    try:
        values = [_lift(a, g, like) for a in args]
        node = g.add_node(op, values, attrs, loc)
    except GraphcError as e:
        raise e.attach(loc=loc)
    outs = tuple(Tensor(v, g) for v in node.outputs)
    return outs[0] if len(outs) == 1 else outs


# --- argument canonicalisation ---------------------------------------------------------

def _axes(axis: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(rank))
    items = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    out = []
    for a in items:
        if not -rank <= a < rank:
            raise BuildError(f"axis {a} is out of range for rank {rank}", loc=capture_loc())
        out.append(int(a) % rank)
    if len(set(out)) != len(out):
        raise BuildError(f"axis {axis} repeats an axis", loc=capture_loc())
    return tuple(sorted(out))


def _axis(axis: int, rank: int) -> int:
    return _axes(axis, rank)[0]


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(x) for x in v)
    if len(t) != 2:
        raise BuildError(f"{what} must be an int or a pair, got {v!r}", loc=capture_loc())
    return t  # type: ignore[return-value]


def _padding4(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, ...]:
    """(top, bottom, left, right) from an int, a pair, four ints, 'valid' or 'same'."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        th, tw = (dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1))
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        return (p, p, p, p)
    t = tuple(int(x) for x in padding)
    if len(t) == 2:
        return (t[0], t[0], t[1], t[1])
    if len(t) == 4:
        return t
    raise BuildError(f"padding must be an int, a pair, four ints, 'same' or 'valid', got {padding!r}",
                     loc=capture_loc())


def _t(x: TensorLike) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(_lift(x, current_graph(), None), current_graph())


# --- elementwise -----------------------------------------------------------------------

def neg(x): return emit("neg", x)
def abs(x): return emit("abs", x)  # noqa: A001
def sign(x): return emit("sign", x)
def exp(x): return emit("exp", x)
def log(x): return emit("log", x)
def sqrt(x): return emit("sqrt", x)
def rsqrt(x): return emit("rsqrt", x)
def tanh(x): return emit("tanh", x)
def sigmoid(x): return emit("sigmoid", x)
def relu(x): return emit("relu", x)
def erf(x): return emit("erf", x)
def sin(x): return emit("sin", x)
def cos(x): return emit("cos", x)
def stop_gradient(x): return emit("stop_gradient", x)
def logical_not(x): return emit("logical_not", x)


def leaky_relu(x, alpha: float = 0.01):
    return emit("leaky_relu", x, alpha=alpha)


def gelu(x, approximate: bool | str = False):
    """GELU; approximate=True (or 'tanh') uses the tanh form."""
    mode = "tanh" if approximate in (True, "tanh") else "none"
    return emit("gelu", x, approximate=mode)


def add(a, b): return emit("add", a, b)
def sub(a, b): return emit("sub", a, b)
def mul(a, b): return emit("mul", a, b)
def div(a, b): return emit("div", a, b)
def pow(a, b): return emit("pow", a, b)  # noqa: A001
def maximum(a, b): return emit("maximum", a, b)
def minimum(a, b): return emit("minimum", a, b)
def equal(a, b): return emit("equal", a, b)
def not_equal(a, b): return emit("not_equal", a, b)
def less(a, b): return emit("less", a, b)
def less_equal(a, b): return emit("less_equal", a, b)
def greater(a, b): return emit("greater", a, b)
def greater_equal(a, b): return emit("greater_equal", a, b)
def logical_and(a, b): return emit("logical_and", a, b)
def logical_or(a, b): return emit("logical_or", a, b)


def where(cond, x, y):
    """x where cond else y; numbers take the dtype of the tensor operand."""
    g = _graph_of([cond, x, y])
    like = next((a.value for a in (x, y) if isinstance(a, Tensor)), None)
    return emit("where", cond, Tensor(_lift(x, g, like), g), Tensor(_lift(y, g, like), g))


def cast(x, dtype: str):
    return emit("cast", x, to=dtypes.dtype(dtype))


def square(x): return emit("mul", x, x)


def clip(x, lo: float | None = None, hi: float | None = None):
    out = x
    if lo is not None:
        out = maximum(out, lo)
    if hi is not None:
        out = minimum(out, hi)
    return out


# --- reductions -------------------------------------------------------------------------

def _reduce(op: str, x, axis, keepdims: bool):
    x = _t(x)
    return emit(op, x, axes=_axes(axis, x.ndim), keepdims=keepdims)


def sum(x, axis=None, keepdims: bool = False): return _reduce("sum", x, axis, keepdims)  # noqa: A001
def mean(x, axis=None, keepdims: bool = False): return _reduce("mean", x, axis, keepdims)
def max(x, axis=None, keepdims: bool = False): return _reduce("max", x, axis, keepdims)  # noqa: A001
def min(x, axis=None, keepdims: bool = False): return _reduce("min", x, axis, keepdims)  # noqa: A001


def argmax(x, axis: int | None = None, keepdims: bool = False):
    x = _t(x)
    if axis is None:
        return emit("argmax", reshape(x, (-1,)), axis=0, keepdims=False)
    return emit("argmax", x, axis=_axis(axis, x.ndim), keepdims=keepdims)


# --- layout -----------------------------------------------------------------------------

def reshape(x, shape: Sequence[int] | int):
    x = _t(x)
    shape = [int(shape)] if isinstance(shape, (int, np.integer)) else [int(d) for d in shape]
    if shape.count(-1) > 1:
        raise BuildError(f"reshape: at most one -1 in {tuple(shape)}", loc=capture_loc())
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        if known == 0 or x.size % known:
            raise BuildError(f"reshape: cannot reshape {x.type} to {tuple(shape)}", loc=capture_loc())
        shape[shape.index(-1)] = x.size // known
    return emit("reshape", x, shape=tuple(shape))


def transpose(x, axes: Sequence[int] | None = None):
    x = _t(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(_axis(a, x.ndim) for a in axes)
    return emit("transpose", x, perm=perm)


def broadcast_to(x, shape: Sequence[int]):
    return emit("broadcast_to", x, shape=tuple(int(d) for d in shape))


def expand_dims(x, axis: int | Sequence[int]):
    x = _t(x)
    items = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    return emit("expand_dims", x, axes=_axes(items, x.ndim + len(items)))


def squeeze(x, axis: int | Sequence[int] | None = None):
    x = _t(x)
    axes = tuple(i for i, d in enumerate(x.shape) if d == 1) if axis is None else _axes(axis, x.ndim)
    return emit("squeeze", x, axes=axes)


def concat(xs: Sequence[Tensor], axis: int = 0):
    xs = list(xs)
    if not xs:
        raise BuildError("concat needs at least one tensor", loc=capture_loc())
    return emit("concat", *xs, axis=_axis(axis, _t(xs[0]).ndim))


def pad(x, pad_width: Sequence[Sequence[int]] | int, value: float = 0.0):
    """numpy-style pad_width: an int, or one (before, after) pair per axis."""
    x = _t(x)
    if isinstance(pad_width, (int, np.integer)):
        pairs = [(int(pad_width), int(pad_width))] * x.ndim
    else:
        pairs = [tuple(int(v) for v in p) for p in pad_width]
    if len(pairs) != x.ndim or any(len(p) != 2 for p in pairs):
        raise BuildError(f"pad: need one (before, after) pair per axis of {x.type}", loc=capture_loc())
    return emit("pad", x, low=tuple(p[0] for p in pairs), high=tuple(p[1] for p in pairs),
                interior=(0,) * x.ndim, value=float(value))


def take(x, indices, axis: int = 0):
    """Gather slices of x at integer indices along axis (embedding lookup)."""
    x = _t(x)
    return emit("gather", x, indices, axis=_axis(axis, x.ndim))


gather = take


def getitem(x: Tensor, key: Any) -> Tensor:
    """Basic numpy indexing: ints, slices with positive steps, None, Ellipsis; an integer
    tensor (or array) indexes axis 0."""
    if isinstance(key, Tensor) or (isinstance(key, (np.ndarray, list)) and np.asarray(key).dtype.kind in "iu"):
        return take(x, key if isinstance(key, Tensor) else _index_constant(key), 0)
    key = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, (Tensor, np.ndarray, list)) for k in key):
        raise BuildError("advanced indexing is supported only as x[indices] on axis 0; use "
                         "gc.take(x, indices, axis)", loc=capture_loc())
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
        if isinstance(k, (int, np.integer)):
            i = int(k)
            if not -d <= i < d:
                raise BuildError(f"index {i} is out of range for axis {axis} of size {d}",
                                 loc=capture_loc())
            i %= d
            starts.append(i), stops.append(i + 1), steps.append(1)
            drop.append(axis)
        elif isinstance(k, slice):
            lo, hi, st = k.indices(d)
            if st < 1:
                raise BuildError("slices with negative steps are not supported", loc=capture_loc())
            starts.append(lo), stops.append(builtins.max(hi, lo)), steps.append(st)
            out_pos += 1
        else:
            raise BuildError(f"unsupported index {k!r}", loc=capture_loc())
        axis += 1
    out = x
    if (tuple(starts), tuple(stops), tuple(steps)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        out = emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    if drop:
        out = emit("squeeze", out, axes=tuple(drop))
    if new_axes:
        out = emit("expand_dims", out, axes=tuple(new_axes))
    return out


def _index_constant(key: Any) -> Tensor:
    g = current_graph()
    return Tensor(g.add_constant(np.asarray(key), "i64"), g)


# --- contraction ------------------------------------------------------------------------

def matmul(a, b):
    """numpy.matmul semantics, including 1-D operands and batch broadcasting."""
    a, b = _t(a), _t(b)
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

def conv2d(x, w, bias=None, stride: int | Sequence[int] = 1, padding: Any = 0,
           dilation: int | Sequence[int] = 1, groups: int = 1):
    """2-D convolution, NCHW input and (K, C/groups, KH, KW) weights; bias of shape (K,)."""
    w = _t(w)
    dil = _pair(dilation, "dilation")
    out = emit("conv2d", x, w, strides=_pair(stride, "stride"),
               padding=_padding4(padding, (w.shape[2], w.shape[3]) if w.ndim == 4 else (1, 1), dil),
               dilations=dil, groups=groups)
    if bias is not None:
        out = out + reshape(bias, (1, -1, 1, 1))
    return out


def max_pool2d(x, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Any = 0):
    k = _pair(kernel, "kernel")
    return emit("max_pool2d", x, kernel=k, strides=_pair(stride if stride is not None else k, "stride"),
                padding=_padding4(padding, k, (1, 1)))


def avg_pool2d(x, kernel: int | Sequence[int], stride: int | Sequence[int] | None = None,
               padding: Any = 0, count_include_pad: bool = True):
    k = _pair(kernel, "kernel")
    return emit("avg_pool2d", x, kernel=k, strides=_pair(stride if stride is not None else k, "stride"),
                padding=_padding4(padding, k, (1, 1)), count_include_pad=count_include_pad)


def global_avg_pool2d(x, keepdims: bool = False):
    """Mean over H and W of an NCHW tensor: a `mean` reduction, so fusion sees a reduction."""
    return mean(x, axis=(2, 3), keepdims=keepdims)


def softmax(x, axis: int = -1):
    x = _t(x)
    return emit("softmax", x, axis=_axis(axis, x.ndim))


def log_softmax(x, axis: int = -1):
    x = _t(x)
    return emit("log_softmax", x, axis=_axis(axis, x.ndim))


def one_hot(labels, depth: int, dtype: str = "f32"):
    return emit("one_hot", labels, depth=depth, dtype=dtypes.dtype(dtype))


def softmax_cross_entropy(logits, labels, reduction: str = "mean"):
    """Cross-entropy of softmax(logits) (N, C) against integer labels (N,); mean by default."""
    return emit("softmax_cross_entropy", logits, labels, reduction=reduction)


def batch_norm(x, gamma, beta, *, eps: float = 1e-5, axis: int = 1):
    """Training-mode batch norm: returns (y, batch_mean, batch_var)."""
    x = _t(x)
    return emit("batch_norm", x, gamma, beta, axis=_axis(axis, x.ndim), eps=eps)


def batch_norm_inference(x, gamma, beta, mean, var, *, eps: float = 1e-5, axis: int = 1):
    x = _t(x)
    return emit("batch_norm_inference", x, gamma, beta, mean, var, axis=_axis(axis, x.ndim), eps=eps)


def layer_norm(x, gamma, beta, *, axis: int | Sequence[int] = -1, eps: float = 1e-5):
    """Normalise over the trailing axes `axis` (which must be the last ones)."""
    x = _t(x)
    axes = _axes(axis, x.ndim)
    if axes != tuple(range(x.ndim - len(axes), x.ndim)):
        raise BuildError(f"layer_norm normalises trailing axes; got {axis} for rank {x.ndim}",
                         loc=capture_loc())
    return emit("layer_norm", x, gamma, beta, axes=axes, eps=eps)


# --- autodiff ---------------------------------------------------------------------------

def grad(y: Tensor, xs: Tensor | Sequence[Tensor], seed: Tensor | None = None):
    """Gradients of scalar y (or of sum(seed * y)) with respect to each of xs.

    Appends the backward graph; returns one Tensor per x (a single Tensor if xs is one).
    """
    single = isinstance(xs, Tensor)
    xs_list = [xs] if single else list(xs)
    g = _graph_of([y, *xs_list] + ([seed] if seed is not None else []))
    loc = capture_loc()
    try:
        out = _grad(g, y.value, [x.value for x in xs_list], seed.value if seed is not None else None,
                    loc=loc)
    except GraphcError as e:
        raise e.attach(loc=loc)
    tensors = [Tensor(v, g) for v in out]
    return tensors[0] if single else tensors
