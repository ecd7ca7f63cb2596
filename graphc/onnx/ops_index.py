"""ONNX indexing ops graphc builds from registry ops at import: ArgMin, ReduceProd, TopK,
GatherElements, GatherND, ScatterElements and ScatterND.

Gathers flatten the data and compute one linear index per output element (in int64, with
numpy at import when the indices are constants, in the graph otherwise), then use the
registry's `gather`, which range-checks every index at run time (an out-of-range index is
an error, never a silent read). Scatters work on rows: data as (P, R), one target row per
update row.

- Constant indices (the usual case in exported models): every reduction (none, add, mul,
  max, min) is a chain of gathers and combines in the updates' order, exactly what ONNX's
  reference loop computes, bit for bit.
- Indices computed in the graph: `add` uses `scatter_add` (duplicates are summed in a
  different order: exact for integers); `none`, `mul`, `max` and `min` use a dense
  target-by-update mask (for `none` the last update to a row wins, as in the reference
  loop). Above MAX_MASK mask elements `mul`/`max`/`min` are refused and `none` uses
  `scatter_add`, where duplicate indices (undefined in ONNX) would add up.
"""
from __future__ import annotations

from math import prod

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import move_to_end, tree_product, wrap_negative
from .errors import OnnxError
from .ops_reduce import _reduce_axes

MAX_MASK = 2 ** 24  # elements of a dense comparison mask (TopK, in-graph scatter reductions)
_I64 = dtypes.i64


def _i64(ctx: NodeContext, value) -> Value:
    return ctx.b.const(np.asarray(value, dtype=np.int64), _I64)


def _reshaped(ctx: NodeContext, v: Value, shape: tuple[int, ...]) -> Value:
    """v reshaped; a constant stays a constant (scatters read constant targets at import)."""
    if v.kind == "const":
        return ctx.b.const(np.asarray(v.data).reshape(shape), v.dtype)
    return ctx.b.reshape(v, shape)


# -- ArgMin, ReduceProd, TopK -------------------------------------------------------------

@converter("ArgMin")
def _argmin(ctx: NodeContext):
    x = ctx.x(0)
    b = ctx.b
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    keep = bool(ctx.attr("keepdims", 1))
    if x.dtype.is_bool:
        x = b.cast(x, to=dtypes.i32)
    # the first minimum of x is the first maximum of an order-reversing map: -x for floats,
    # -1 - x for integers (never overflows, unlike -x at the type's minimum)
    flipped = b.neg(x) if x.dtype.is_float else b.sub(b.const(np.asarray(-1), x.dtype), x)
    n = x.shape[axis]
    if ctx.attr("select_last_index", 0):
        rev = _i64(ctx, np.arange(n - 1, -1, -1))
        y = b.argmax(b.gather(flipped, rev, axis=axis), axis=axis, keepdims=keep)
        y = b.sub(b.const(np.asarray(n - 1), y.dtype), y)
    else:
        y = b.argmax(flipped, axis=axis, keepdims=keep)
    return [y if y.dtype == _I64 else b.cast(y, to=_I64)]


@converter("ReduceProd")
def _reduce_prod(ctx: NodeContext):
    x = ctx.x(0)
    if x.dtype.is_bool:
        ctx.unsupported("ReduceProd of bool tensors")
    b = ctx.b
    rank = x.type.rank
    axes = _reduce_axes(ctx, rank)
    if axes is None:
        return [x]
    keep = bool(ctx.attr("keepdims", 1))
    kept = [d for i, d in enumerate(x.shape) if i not in axes]
    moved = move_to_end(b, x, list(axes))
    flat = b.reshape(moved, tuple(kept) + (prod(x.shape[a] for a in axes),))
    p = tree_product(b, flat)  # exact per multiply, see decompose.tree_product
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else tuple(kept)
    return [b.reshape(p, shape)]


def _lowest(dt) -> float:
    return -np.inf if dt.is_float else int(np.iinfo(dt.np_dtype).min)


@converter("TopK")
def _topk(ctx: NodeContext):
    x = ctx.x(0)
    if x.dtype.is_bool:
        ctx.unsupported("TopK of bool tensors")
    kv = np.asarray(ctx.attr("k") if ctx.has_attr("k") else ctx.const(1, "K")).reshape(-1)
    if kv.size != 1:
        raise OnnxError(f"TopK: K must hold one value, got {kv.size}")
    kk = int(kv[0])
    rank = x.type.rank
    axis = ctx.axis(ctx.attr("axis", -1), rank)
    n = x.shape[axis]
    if not 0 <= kk <= n:
        raise OnnxError(f"TopK: K={kk} for an axis of size {n}")
    largest = bool(ctx.attr("largest", 1))
    rows = x.type.size // max(n, 1)
    if rows * n * max(n, kk) > MAX_MASK:
        ctx.unsupported(f"TopK over {n} elements x {rows} rows (graphc ranks by an "
                        f"n-by-n comparison, at most {MAX_MASK} elements)")
    b = ctx.b
    xa = move_to_end(b, x, [axis])                       # (..., n)
    lead = xa.shape[:-1]
    xi = b.expand_dims(xa, axes=(len(lead) + 1,))        # (..., n_i, 1)
    xj = b.expand_dims(xa, axes=(len(lead),))            # (..., 1, n_j)
    ahead = b.greater(xj, xi) if largest else b.less(xj, xi)
    earlier = b.const(np.arange(n)[None, :] < np.arange(n)[:, None], dtypes.bool_)  # j < i
    before = b.logical_or(ahead, b.logical_and(b.equal(xj, xi), earlier))
    rank_of = b.sum(b.cast(before, to=_I64), axes=(len(lead) + 1,), keepdims=False)  # (..., n)
    slot = b.equal(b.expand_dims(rank_of, axes=(len(lead),)),
                   b.const(np.arange(kk).reshape(kk, 1), _I64))  # (..., k, n)
    xs = b.expand_dims(xa, axes=(len(lead),))
    low = b.const(np.asarray(_lowest(x.dtype)), x.dtype)
    values = b.max(b.where(slot, xs, low), axes=(len(lead) + 1,), keepdims=False)
    pos = b.const(np.arange(n), _I64)
    index = b.max(b.where(slot, pos, _i64(ctx, -1)), axes=(len(lead) + 1,), keepdims=False)
    back = list(range(len(lead)))
    back.insert(axis, len(lead))
    outs = []
    for v in (values, index):
        outs.append(v if back == sorted(back) else b.transpose(v, perm=tuple(back)))
    return outs


# -- gathers --------------------------------------------------------------------------------

def _strides(shape: tuple[int, ...]) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _elements_index(ctx: NodeContext, data_shape, idx: Value, axis: int,
                    wrap: bool = True) -> Value:
    """The flat position in data of every element of an Elements-op index tensor: the
    index replaces the coordinate along `axis`, the others are the element's own.
    `wrap`: negative indices count from the end (else they stay out of range)."""
    ishape = idx.shape
    if len(ishape) != len(data_shape):
        raise OnnxError(f"{ctx.op}: indices {idx.type} must have the rank of data "
                        f"{list(data_shape)}")
    if any(i > d for a, (i, d) in enumerate(zip(ishape, data_shape)) if a != axis):
        raise OnnxError(f"{ctx.op}: indices {idx.type} exceed data {list(data_shape)} off the "
                        f"axis {axis}")
    st = _strides(tuple(data_shape))
    coords = np.indices(ishape, dtype=np.int64) if ishape else np.zeros((0,), np.int64)
    base = sum(coords[a] * st[a] for a in range(len(ishape)) if a != axis) \
        if ishape else np.zeros((), np.int64)
    base = np.asarray(base, dtype=np.int64)
    n = data_shape[axis]
    if wrap:
        idx = wrap_negative(ctx.b, idx, n)
    elif idx.dtype != _I64:
        idx = ctx.b.cast(idx, to=_I64)
    if idx.kind == "const":
        d = np.asarray(idx.data)
        if d.size and (d.min() < 0 or d.max() >= n):
            raise OnnxError(f"{ctx.op}: an index is out of range for axis {axis} of size {n}")
        return _i64(ctx, base + d * st[axis])
    return ctx.b.add(ctx.b.mul(idx, _i64(ctx, st[axis])), _i64(ctx, base))


@converter("GatherElements")
def _gather_elements(ctx: NodeContext):
    x, idx = ctx.x(0), ctx.x(1)
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    lin = _elements_index(ctx, x.shape, idx, axis)
    return [ctx.b.gather(ctx.b.reshape(x, (x.type.size,)), lin, axis=0)]


def _nd_rows(ctx: NodeContext, data_shape, idx: Value, batch: int) -> tuple[Value, int]:
    """Row numbers into data reshaped to (B * P, rest) for an ND-op index tensor, and m."""
    q = idx.shape
    if not q:
        raise OnnxError(f"{ctx.op}: indices must have rank >= 1")
    if not 0 <= batch < min(len(q), len(data_shape)):
        raise OnnxError(f"{ctx.op}: batch_dims={batch} must lie in [0, {min(len(q), len(data_shape))})")
    m = q[-1]
    if not 1 <= m <= len(data_shape) - batch or tuple(q[:batch]) != tuple(data_shape[:batch]):
        raise OnnxError(f"{ctx.op}: indices {idx.type} do not fit data {list(data_shape)} with "
                        f"batch_dims={batch}")
    dims = np.asarray(data_shape[batch:batch + m], dtype=np.int64)
    st = np.asarray(_strides(tuple(dims)), dtype=np.int64)
    p = int(np.prod(dims))
    # the batch position of each index row, as a flat batch number times P
    bshape = tuple(q[:batch]) + (1,) * (len(q) - 1 - batch)
    bpos = (np.arange(int(np.prod(q[:batch], dtype=np.int64))).reshape(bshape) * p).astype(np.int64) \
        if batch else np.zeros((), np.int64)
    b = ctx.b
    if idx.kind == "const":
        d = np.asarray(idx.data).astype(np.int64)
        d = np.where(d < 0, d + dims, d)
        if d.size and ((d < 0) | (d >= dims)).any():
            raise OnnxError(f"{ctx.op}: an index is out of range for dimensions {dims.tolist()}")
        return _i64(ctx, (d * st).sum(axis=-1) + bpos), m
    i = idx if idx.dtype == _I64 else b.cast(idx, to=_I64)
    i = b.where(b.less(i, _i64(ctx, 0)), b.add(i, _i64(ctx, dims)), i)
    rows = b.sum(b.mul(i, _i64(ctx, st)), axes=(len(q) - 1,), keepdims=False)
    return (b.add(rows, _i64(ctx, bpos)) if batch else rows), m


@converter("GatherND")
def _gather_nd(ctx: NodeContext):
    x, idx = ctx.x(0), ctx.x(1)
    batch = int(ctx.attr("batch_dims", 0))
    rows, m = _nd_rows(ctx, x.shape, idx, batch)
    rest = x.shape[batch + m:]
    table = ctx.b.reshape(x, (prod(x.shape[:batch + m]),) + rest)
    return [ctx.b.gather(table, rows, axis=0)]


# -- scatters -------------------------------------------------------------------------------

_COMBINE = {"add": "add", "mul": "mul", "max": "maximum", "min": "minimum"}


def _scatter_rows(ctx: NodeContext, data: Value, rows: Value, upd: Value, red: str) -> Value:
    """data (P, R) with update rows upd (U, R) combined into rows `rows` (U,)."""
    b = ctx.b
    p, r = data.shape
    u = rows.shape[0]
    if red not in ("none", *_COMBINE):
        ctx.unsupported(f"reduction={red!r}")
    if data.dtype.is_bool and red != "none":
        ctx.unsupported(f"reduction={red!r} of bool tensors")
    if u == 0:
        return data
    if rows.kind == "const":
        return _scatter_known(ctx, data, np.asarray(rows.data), upd, red)
    count = b.scatter_add(rows, b.const(np.ones((u, 1), np.int64), _I64), shape=(p, 1), axis=0)
    hit = b.greater(count, _i64(ctx, 0))                       # (P, 1); range-checks rows
    if red == "add":
        return b.add(data, b.scatter_add(rows, upd, shape=(p, r), axis=0))
    if p * u * max(r, 1) > MAX_MASK:
        if red == "none":  # duplicates (undefined in ONNX) would add up here
            return b.where(hit, b.scatter_add(rows, upd, shape=(p, r), axis=0), data)
        ctx.unsupported(f"reduction={red!r} with indices computed in the graph over {p} x {u} "
                        f"rows (graphc masks at most {MAX_MASK} elements)")
    mask = b.equal(b.reshape(rows, (1, u)), b.const(np.arange(p).reshape(p, 1), _I64))  # (P, U)
    if red == "none":  # the last update to each row wins, as in ONNX's reference loop
        last = b.max(b.where(mask, b.const(np.arange(u), _I64), _i64(ctx, -1)), axes=(1,),
                     keepdims=False)
        pick = b.gather(upd, b.maximum(last, _i64(ctx, 0)), axis=0)
        return b.where(hit, pick, data)
    m3 = b.reshape(mask, (p, u, 1))
    u3 = b.reshape(upd, (1, u, r))
    if red == "mul":
        ones = b.const(np.ones((), data.dtype.np_dtype), data.dtype)
        terms = b.transpose(b.where(m3, u3, ones), perm=(0, 2, 1))   # (P, R, U)
        return b.mul(data, b.reshape(tree_product(b, terms), (p, r)))
    ident = b.const(np.asarray(_lowest(data.dtype) if red == "max" else
                               (np.inf if data.dtype.is_float else
                                np.iinfo(data.dtype.np_dtype).max)), data.dtype)
    red_op = b.max if red == "max" else b.min
    best = red_op(b.where(m3, u3, ident), axes=(1,), keepdims=False)
    return b.where(hit, b.op(_COMBINE[red], data, best), data)


def _scatter_known(ctx: NodeContext, data: Value, rows: np.ndarray, upd: Value, red: str) -> Value:
    """Constant target rows: combine the updates into each row in order, round by round
    (round j takes every row's j-th update), exactly as a sequential loop does."""
    b = ctx.b
    p, r = data.shape
    rows = rows.astype(np.int64).reshape(-1)
    order: list[list[int]] = [[] for _ in range(p)]
    for i, t in enumerate(rows.tolist()):
        order[t].append(i)
    if red == "none":
        last = np.array([o[-1] if o else 0 for o in order], np.int64)
        has = np.array([bool(o) for o in order]).reshape(p, 1)
        return b.where(b.const(has, dtypes.bool_), b.gather(upd, _i64(ctx, last), axis=0), data)
    out = data
    for j in range(max(len(o) for o in order)):
        pick = np.array([o[j] if len(o) > j else 0 for o in order], np.int64)
        has = np.array([len(o) > j for o in order]).reshape(p, 1)
        vals = b.gather(upd, _i64(ctx, pick), axis=0)
        out = b.where(b.const(has, dtypes.bool_), b.op(_COMBINE[red], out, vals), out)
    return out


@converter("ScatterElements")
def _scatter_elements(ctx: NodeContext):
    x, idx, upd = ctx.x(0), ctx.x(1), ctx.x(2)
    if upd.shape != idx.shape:
        raise OnnxError(f"ScatterElements: updates {upd.type} must have the shape of indices "
                        f"{idx.type}")
    if upd.dtype != x.dtype:
        raise OnnxError(f"ScatterElements: updates {upd.type} and data {x.type} differ in dtype")
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    lin = _elements_index(ctx, x.shape, idx, axis)
    b = ctx.b
    n = idx.type.size
    out = _scatter_rows(ctx, b.reshape(x, (x.type.size, 1)), _reshaped(ctx, lin, (n,)),
                        b.reshape(upd, (n, 1)), ctx.attr("reduction", "none"))
    return [b.reshape(out, x.shape)]


@converter("ScatterND")
def _scatter_nd(ctx: NodeContext):
    x, idx, upd = ctx.x(0), ctx.x(1), ctx.x(2)
    rows, m = _nd_rows(ctx, x.shape, idx, 0)
    want = idx.shape[:-1] + x.shape[m:]
    if upd.shape != want:
        raise OnnxError(f"ScatterND: updates {upd.type} must have shape {list(want)}")
    if upd.dtype != x.dtype:
        raise OnnxError(f"ScatterND: updates {upd.type} and data {x.type} differ in dtype")
    b = ctx.b
    p, r = prod(x.shape[:m]), prod(x.shape[m:])
    u = prod(idx.shape[:-1])
    out = _scatter_rows(ctx, b.reshape(x, (p, r)), _reshaped(ctx, rows, (u,)), b.reshape(upd, (u, r)),
                        ctx.attr("reduction", "none"))
    return [b.reshape(out, x.shape)]

