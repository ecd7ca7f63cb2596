"""numpy functions on symbolic tensors: `np.exp(t)`, `np.sum(t, axis=1)`, `np.where(c, a, b)`.

Tensor's `__array_ufunc__` and `__array_function__` send here (NEP 13 and NEP 18), so plain
numpy code builds graph nodes when given Tensors: that is how `@gc.jit` traces a numpy
function, and it works in a `with gc.Graph()` block too. Each entry maps a numpy callable
to the functional API (graphc/ops.py), which emits registry ops. A numpy function without
an entry raises `UntraceableError` naming it: never a silent fallback to concrete data.
"""
from __future__ import annotations

import builtins
import math
from typing import Any, Callable

import numpy as np

from . import ops
from .args import as_array, as_dtype, as_shape
from .ir.errors import BuildError
from .ir.loc import capture_loc


class UntraceableError(BuildError):
    """A numpy function (or argument) that graphc cannot express as graph ops."""


def _qualname(func: Any) -> str:
    module = getattr(func, "__module__", None) or "numpy"
    if module.startswith("numpy"):  # numpy.core.fromnumeric.sum -> numpy.sum
        public = "numpy.linalg" if ".linalg" in module else "numpy.fft" if ".fft" in module else "numpy"
        return f"{public}.{getattr(func, '__name__', func)}"
    return f"{module}.{getattr(func, '__name__', func)}"


def _untraceable(what: str, why: str = "") -> UntraceableError:
    return UntraceableError(
        f"{what} has no graphc equivalent{': ' + why if why else ''}, so it cannot be traced; "
        "use graphc ops (gc.*), numpy functions graphc supports (graphc.numpy_api.supported()), "
        "or compute it outside the traced function", loc=capture_loc())


def _reciprocal(x): return ops.div(1, x)


UFUNCS: dict[np.ufunc, Callable[..., Any]] = {
    np.add: ops.add, np.subtract: ops.sub, np.multiply: ops.mul, np.true_divide: ops.div,
    np.power: ops.pow, np.maximum: ops.maximum, np.minimum: ops.minimum,
    np.negative: ops.neg, np.positive: lambda x: x, np.absolute: ops.abs, np.sign: ops.sign,
    np.exp: ops.exp, np.log: ops.log, np.sqrt: ops.sqrt, np.tanh: ops.tanh, np.sin: ops.sin,
    np.cos: ops.cos, np.square: ops.square, np.reciprocal: _reciprocal,
    np.equal: ops.equal, np.not_equal: ops.not_equal, np.less: ops.less,
    np.less_equal: ops.less_equal, np.greater: ops.greater, np.greater_equal: ops.greater_equal,
    np.logical_and: ops.logical_and, np.logical_or: ops.logical_or, np.logical_not: ops.logical_not,
    np.matmul: ops.matmul,
}


def _no_out(name: str, kwargs: dict) -> None:
    for k, v in kwargs.items():
        if k == "out" and v is None:
            continue
        if k in ("dtype", "where", "out", "casting", "order", "subok", "signature", "initial"):
            raise _untraceable(f"{name}(..., {k}=...)", f"the {k!r} argument is not supported while tracing")


def array_ufunc(ufunc: np.ufunc, method: str, inputs: tuple, kwargs: dict) -> Any:
    name = f"numpy.{ufunc.__name__}"
    if method != "__call__":
        raise _untraceable(f"{name}.{method}", "only plain ufunc calls are traced")
    fn = UFUNCS.get(ufunc)
    if fn is None:
        raise _untraceable(name)
    _no_out(name, kwargs)
    return fn(*inputs)


# --- numpy functions (NEP 18) -----------------------------------------------------------------

def _reduction(op: Callable) -> Callable:
    def f(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
        if dtype is not None or out is not None or kw.get("initial") is not None or kw.get("where") is not None:
            raise _untraceable(f"numpy.{op.__name__}(..., dtype/out/initial/where=...)",
                               "only axis and keepdims are traced")
        return op(a, axis, keepdims)
    return f


def _argmax(a, axis=None, out=None, keepdims=False):
    if out is not None:
        raise _untraceable("numpy.argmax(..., out=...)")
    return ops.argmax(a, axis, keepdims)


def _reshape(a, newshape=None, order="C", **kw):
    shape = kw.get("shape", newshape)
    if order != "C":
        raise _untraceable(f"numpy.reshape(order={order!r})", "graphc arrays are row-major")
    return ops.reshape(a, shape)


def _concatenate(arrays, axis=0, out=None, dtype=None, casting="same_kind"):
    if out is not None or dtype is not None:
        raise _untraceable("numpy.concatenate with out/dtype")
    if axis is None:
        return ops.concat([ops.reshape(a, -1) for a in arrays], 0)
    return ops.concat(list(arrays), axis)


def _stack(arrays, axis=0, out=None, **kw):
    if out is not None:
        raise _untraceable("numpy.stack(..., out=...)")
    arrays = list(arrays)
    if not arrays:
        raise BuildError("numpy.stack needs at least one array", loc=capture_loc())
    ax = ops._axis(axis, ops._rank(arrays[0]) + 1)
    return ops.concat([ops.expand_dims(a, ax) for a in arrays], ax)


def _clip(a, a_min=None, a_max=None, out=None, **kw):
    lo, hi = kw.get("min", a_min), kw.get("max", a_max)
    x = a
    if lo is not None:
        x = ops.maximum(x, lo)
    if hi is not None:
        x = ops.minimum(x, hi)
    return x


def _pad(array, pad_width, mode="constant", constant_values=0, **kw):
    if mode != "constant":
        raise _untraceable(f"numpy.pad(mode={mode!r})", "only mode='constant' is traced")
    if np.ndim(constant_values) != 0:
        raise _untraceable("numpy.pad with per-axis constant_values")
    return ops.pad(array, pad_width, constant_values)


def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    if dtype is not None or out is not None:
        raise _untraceable("numpy.var with dtype/out")
    x = ops._t(a)
    m = ops.mean(x, axis, keepdims=True)
    d = x - m
    n = math.prod(x.shape[i] for i in ops._axes(axis, x.ndim))  # elements per reduced group
    return ops.sum(d * d, axis, keepdims) / builtins.max(n - ddof, 0)  # numpy's clamp


def _std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **kw):
    return ops.sqrt(_var(a, axis, dtype, out, ddof, keepdims))


def _outer(a, b, out=None):
    if out is not None:
        raise _untraceable("numpy.outer(..., out=...)")
    return ops.mul(ops.reshape(a, (-1, 1)), ops.reshape(b, (1, -1)))


def _full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    """A constant broadcast to a's shape: no data of `a` is needed, only its type."""
    from .builder import constant
    x = ops._t(a)
    shp = x.shape if shape is None else as_shape(shape)
    dt = x.dtype if dtype is None else as_dtype(dtype)
    fill = as_array(fill_value, "fill_value")
    if fill.ndim:
        raise _untraceable("numpy.full_like with an array fill_value")
    return ops.broadcast_to(constant(fill.astype(dt.np_dtype), dt.name), shp)


def _dot(a, b, out=None):
    if out is not None:
        raise _untraceable("numpy.dot(..., out=...)")
    ra, rb = ops._t(a).ndim, ops._t(b).ndim
    if ra == 0 or rb == 0:
        return ops.mul(a, b)
    if rb > 2:
        raise _untraceable("numpy.dot with a rank>2 second operand", "use numpy.matmul or einsum-free code")
    return ops.matmul(a, b)


def _where(condition, x=None, y=None):
    if x is None or y is None:
        raise _untraceable("numpy.where(condition) with one argument",
                           "its result size depends on the data")
    return ops.where(condition, x, y)


def _transpose(a, axes=None):
    return ops.transpose(a, axes)


def _swapaxes(a, axis1, axis2):
    n = ops._rank(a)
    perm = list(range(n))
    i, j = ops._axis(axis1, n), ops._axis(axis2, n)
    perm[i], perm[j] = perm[j], perm[i]
    return ops.transpose(a, perm)


def _take(a, indices, axis=None, out=None, mode="raise"):
    if out is not None or mode != "raise":
        raise _untraceable(f"numpy.take(..., {'out=...' if out is not None else f'mode={mode!r}'})",
                           "graphc gathers with mode='raise' (out-of-range indices are an error)")
    if axis is None:
        return ops.take(ops.reshape(a, -1), indices, 0)
    return ops.take(a, indices, axis)


def _size(a, axis=None):
    x = ops._t(a)
    return x.size if axis is None else x.shape[ops._axis(axis, x.ndim)]


FUNCTIONS: dict[Callable, Callable[..., Any]] = {
    np.sum: _reduction(ops.sum), np.mean: _reduction(ops.mean), np.max: _reduction(ops.max),
    np.min: _reduction(ops.min), np.amax: _reduction(ops.max), np.amin: _reduction(ops.min),
    np.argmax: _argmax, np.reshape: _reshape, np.transpose: _transpose, np.swapaxes: _swapaxes,
    np.concatenate: _concatenate, np.stack: _stack, np.where: _where, np.clip: _clip,
    np.squeeze: lambda a, axis=None: ops.squeeze(a, axis),
    np.expand_dims: lambda a, axis: ops.expand_dims(a, axis),
    np.broadcast_to: lambda array, shape, subok=False: ops.broadcast_to(array, shape),
    np.ravel: lambda a, order="C": _reshape(a, -1, order),
    np.pad: _pad, np.take: _take,
    np.dot: _dot, np.var: _var, np.std: _std, np.outer: _outer,
    np.shape: lambda a: ops._t(a).shape, np.ndim: lambda a: ops._t(a).ndim,
    np.size: _size,
    np.zeros_like: lambda a, dtype=None, order="K", subok=True, shape=None: _full_like(a, 0, dtype, shape=shape),
    np.ones_like: lambda a, dtype=None, order="K", subok=True, shape=None: _full_like(a, 1, dtype, shape=shape),
    np.full_like: _full_like,
}


def array_function(func: Callable, args: tuple, kwargs: dict) -> Any:
    impl = FUNCTIONS.get(func)
    if impl is None:
        raise _untraceable(_qualname(func))
    return impl(*args, **kwargs)


def supported() -> list[str]:
    """The numpy callables a traced function may use on tensors."""
    return sorted({f"numpy.{u.__name__}" for u in UFUNCS} | {_qualname(f) for f in FUNCTIONS})
