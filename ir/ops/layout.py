"""Layout ops: they move or replicate data without arithmetic.

Attributes are canonical (explicit target shapes, non-negative axes, full-rank slice
bounds); the builder resolves -1, negative axes and Python slice syntax before a node is
made, so passes and backends see one spelling of each operation.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .. import batch
from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from ..errors import AttrError, GraphcError, ShapeError
from ..registry import Attr, Cost, Fusion, OpDef, register
from ..types import TensorType, format_shape
from ._common import check_axes, require_int, same_dtype


def _move_cost(ts, outs, a) -> Cost:
    return Cost(0, sum(t.nbytes for t in ts) + sum(t.nbytes for t in outs))


def _layout(name, infer, ref, vjp, attrs, arity=1, fusion=Fusion.LAYOUT, doc="", nondiff=(),
            lower=None, batch_split=None):
    register(OpDef(name, fusion, infer, ref, arity, attrs, vjp, _move_cost, doc=doc,
                   nondiff_inputs=nondiff, lower=lower, view=lower is _lower_view,
                   batch_split=batch_split))


def _lower_view(ctx, node):
    """Same elements in the same order: a view of the input's buffer, or a flat copy."""
    if not ctx.alias(node.outputs[0], node.inputs[0]):
        L.lower_copy_map(ctx, node, lambda vs: L.linear_index(vs, L.row_strides(node.outputs[0].shape)))


# reshape ----------------------------------------------------------------------------------
def _reshape_infer(ts, a):
    (t,) = ts
    shape = a["shape"]
    if any(d < 0 for d in shape) or prod(shape) != t.size:
        raise ShapeError(f"reshape: cannot reshape {t} ({t.size} elements) to {format_shape(shape)}")
    return t.with_shape(shape)


_layout("reshape", _reshape_infer, lambda x, shape: x.reshape(shape),
        lambda b, n, g: [b.reshape(g, n.inputs[0].shape)], {"shape": Attr("ints")},
        doc="same elements in row-major order, new shape", lower=_lower_view,
        batch_split=batch.reshape)


# transpose --------------------------------------------------------------------------------
def _transpose_infer(ts, a):
    (t,) = ts
    perm = a["perm"]
    if sorted(perm) != list(range(t.rank)):
        raise ShapeError(f"transpose: perm {perm} is not a permutation of the {t.rank} axes of {t}")
    return t.with_shape(tuple(t.shape[p] for p in perm))


def _transpose_vjp(b, n, g):
    inv = tuple(int(i) for i in np.argsort(n.attrs["perm"]))
    return [b.transpose(g, perm=inv)]


def _lower_transpose(ctx, node):
    src = L.row_strides(node.inputs[0].shape)
    perm = node.attrs["perm"]
    L.lower_copy_map(ctx, node, lambda vs: L.linear_index(vs, [src[p] for p in perm]))


_layout("transpose", _transpose_infer, lambda x, perm: np.array(np.transpose(x, perm), order="C"),
        _transpose_vjp, {"perm": Attr("ints")}, lower=_lower_transpose)


# broadcast_to -----------------------------------------------------------------------------
def _broadcast_infer(ts, a):
    (t,) = ts
    shape = a["shape"]
    ok = len(shape) >= t.rank and all(
        s == d or s == 1 for s, d in zip(reversed(t.shape), reversed(shape)))
    if not ok:
        raise ShapeError(f"broadcast_to: {t} cannot broadcast to {format_shape(shape)}")
    return t.with_shape(shape)


_layout("broadcast_to", _broadcast_infer,
        lambda x, shape: np.array(np.broadcast_to(x, shape), order="C"),
        lambda b, n, g: [b.sum_to(g, n.inputs[0].shape)], {"shape": Attr("ints")},
        fusion=Fusion.BROADCAST, doc="numpy broadcasting made explicit",
        lower=lambda ctx, node: L.lower_elementwise(ctx, node, lambda xs, a, dt: xs[0]))


# expand_dims / squeeze --------------------------------------------------------------------
def _expand_infer(ts, a):
    (t,) = ts
    out_rank = t.rank + len(a["axes"])
    axes = check_axes("expand_dims", a["axes"], out_rank)
    it = iter(t.shape)
    return t.with_shape(tuple(1 if i in axes else next(it) for i in range(out_rank)))


def _squeeze_infer(ts, a):
    (t,) = ts
    axes = check_axes("squeeze", a["axes"], t.rank)
    for ax in axes:
        if t.shape[ax] != 1:
            raise ShapeError(f"squeeze: axis {ax} of {t} has size {t.shape[ax]}, not 1")
    return t.with_shape(tuple(d for i, d in enumerate(t.shape) if i not in axes))


_layout("expand_dims", _expand_infer, lambda x, axes: np.expand_dims(x, tuple(axes)),
        lambda b, n, g: [b.reshape(g, n.inputs[0].shape)], {"axes": Attr("ints")},
        doc="insert size-1 axes at the given output positions", lower=_lower_view)
_layout("squeeze", _squeeze_infer, lambda x, axes: np.squeeze(x, tuple(axes)),
        lambda b, n, g: [b.reshape(g, n.inputs[0].shape)], {"axes": Attr("ints")},
        lower=_lower_view)


# concat -----------------------------------------------------------------------------------
def _concat_infer(ts, a):
    dt = same_dtype("concat", ts)
    ax = a["axis"]
    rank = ts[0].rank
    if not 0 <= ax < rank:
        raise ShapeError(f"concat: axis {ax} is out of range for rank {rank}")
    for t in ts[1:]:
        if t.rank != rank or any(d != e for i, (d, e) in enumerate(zip(t.shape, ts[0].shape))
                                 if i != ax):
            shown = ", ".join(str(x) for x in ts)
            raise ShapeError(f"concat along axis {ax}: shapes must agree off that axis ({shown})")
    shape = list(ts[0].shape)
    shape[ax] = sum(t.shape[ax] for t in ts)
    return TensorType(tuple(shape), dt)


def _concat_vjp(b, n, g):
    ax = n.attrs["axis"]
    out, start = [], 0
    for x in n.inputs:
        starts = [0] * g.type.rank
        stops = list(g.shape)
        starts[ax], stops[ax] = start, start + x.shape[ax]
        out.append(b.slice(g, starts=starts, stops=stops, steps=[1] * g.type.rank))
        start += x.shape[ax]
    return out


def _lower_concat(ctx, node):
    """One loop nest per input, each writing its block of the output."""
    out = node.outputs[0]
    ax = node.attrs["axis"]
    ostr = L.row_strides(out.shape)
    ob = ctx.buf(out)
    body, start = [], 0
    for x in node.inputs:
        xb = ctx.buf(x)
        xstr = L.row_strides(x.shape)

        def store(vs, xb=xb, xstr=xstr, start=start, x=x):
            return [K.Store(ob, L.linear_index(vs, ostr, start * ostr[ax]),
                            K.Load(xb, L.linear_index(vs, xstr), x.dtype))]
        body += ctx.loops(x.shape, store)
        start += x.shape[ax]
    ctx.kernel(body, [ctx.buf(x) for x in node.inputs], [ob])


register(OpDef("concat", Fusion.LAYOUT, _concat_infer,
               lambda *xs, axis: np.concatenate(xs, axis=axis), None, {"axis": Attr("int")},
               _concat_vjp, _move_cost, lower=_lower_concat))


# slice and pad (each is the other's gradient) ---------------------------------------------
def _slice_len(start: int, stop: int, step: int) -> int:
    return max(0, -(-(stop - start) // step))


def _slice_infer(ts, a):
    (t,) = ts
    starts, stops, steps = a["starts"], a["stops"], a["steps"]
    if not len(starts) == len(stops) == len(steps) == t.rank:
        raise ShapeError(f"slice: starts/stops/steps need one entry per axis of {t}")
    shape = []
    for ax, (lo, hi, st, d) in enumerate(zip(starts, stops, steps, t.shape)):
        if st < 1:
            raise ShapeError(f"slice: step {st} on axis {ax} must be >= 1")
        if not 0 <= lo <= d or not 0 <= hi <= d:
            raise ShapeError(f"slice: bounds {lo}:{hi} on axis {ax} are outside 0..{d} of {t}")
        shape.append(_slice_len(lo, hi, st))
    return t.with_shape(tuple(shape))


def _slice_ref(x, starts, stops, steps):
    return np.array(x[tuple(slice(a, b, c) for a, b, c in zip(starts, stops, steps))], order="C")


def _slice_vjp(b, n, g):
    x = n.inputs[0]
    low, high, interior = [], [], []
    for lo, st, d, m in zip(n.attrs["starts"], n.attrs["steps"], x.shape, g.shape):
        span = m + max(m - 1, 0) * (st - 1)
        low.append(lo)
        interior.append(st - 1)
        high.append(d - lo - span)
    return [b.pad(g, low=low, high=high, interior=interior, value=0.0)]


def _lower_slice(ctx, node):
    src = L.row_strides(node.inputs[0].shape)
    a = node.attrs
    base = sum(lo * st for lo, st in zip(a["starts"], src))
    L.lower_copy_map(ctx, node, lambda vs: L.linear_index(
        vs, [step * st for step, st in zip(a["steps"], src)], base))


_layout("slice", _slice_infer, _slice_ref, _slice_vjp,
        {"starts": Attr("ints"), "stops": Attr("ints"), "steps": Attr("ints")},
        doc="x[start:stop:step] on every axis (steps >= 1)", lower=_lower_slice)


def _representable(v: float, dt: dtypes.DType) -> bool:
    """Whether the float attribute v is a value of dt (pad's fill for int and bool tensors)."""
    if dt.is_float:
        return True
    if not (np.isfinite(v) and v == int(v)):
        return False
    if dt.is_bool:
        return v in (0, 1)
    info = np.iinfo(dt.np_dtype)
    return info.min <= v <= info.max


def _pad_infer(ts, a):
    (t,) = ts
    low, high = a["low"], a["high"]
    interior = a["interior"] or (0,) * t.rank
    if not len(low) == len(high) == len(interior) == t.rank:
        raise ShapeError(f"pad: low/high/interior need one entry per axis of {t}")
    if any(v < 0 for v in (*low, *high, *interior)):
        raise ShapeError("pad: amounts must be >= 0 (use slice to crop)")
    if not _representable(a["value"], t.dtype):
        raise AttrError(f"pad: value={a['value']!r} is not a {t.dtype} value (padding {t})")
    return t.with_shape(tuple(lo + hi + d + max(d - 1, 0) * it
                              for lo, hi, d, it in zip(low, high, t.shape, interior)))


def _pad_ref(x, low, high, interior, value):
    interior = interior or (0,) * x.ndim
    shape = tuple(lo + hi + d + max(d - 1, 0) * it for lo, hi, d, it in zip(low, high, x.shape, interior))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(lo, lo + d + max(d - 1, 0) * it, it + 1)
              for lo, d, it in zip(low, x.shape, interior))] = x
    return out


def _pad_vjp(b, n, g):
    x = n.inputs[0]
    interior = n.attrs["interior"] or (0,) * x.type.rank
    starts = list(n.attrs["low"])
    stops = [lo + d + max(d - 1, 0) * it for lo, d, it in zip(starts, x.shape, interior)]
    return [b.slice(g, starts=starts, stops=stops, steps=[it + 1 for it in interior])]


def _lower_pad(ctx, node):
    """out[o] = x[(o - low) / (interior + 1)] where that lands on an element, else value."""
    x, out = node.inputs[0], node.outputs[0]
    a = node.attrs
    interior = a["interior"] or (0,) * x.type.rank
    src = L.row_strides(x.shape)
    i64 = dtypes.i64

    def rel(v, lo):
        return K.Binary("sub", v, L.c64(lo), i64)

    def index_of(vs):
        parts = []
        for v, lo, it, st in zip(vs, a["low"], interior, src):
            r = rel(v, lo)
            parts.append(r if it == 0 else K.Binary("div", r, L.c64(it + 1), i64))
        return L.linear_index(parts, src)

    def guard(vs):
        ok = None
        for v, lo, it, d in zip(vs, a["low"], interior, x.shape):
            r = rel(v, lo)
            span = d + max(d - 1, 0) * it
            c = K.Binary("and", K.Compare("ge", r, L.c64(0)), K.Compare("lt", r, L.c64(span)), dtypes.bool_)
            if it:
                c = K.Binary("and", c, K.Compare("eq", K.Binary("mod", r, L.c64(it + 1), i64), L.c64(0)),
                             dtypes.bool_)
            ok = c if ok is None else K.Binary("and", ok, c, dtypes.bool_)
        return ok if ok is not None else K.Const(True, dtypes.bool_)
    fill = K.Const(a["value"] if out.dtype.is_float else int(a["value"]), out.dtype) \
        if not out.dtype.is_bool else K.Const(bool(a["value"]), out.dtype)
    L.lower_copy_map(ctx, node, index_of, guard=guard, fill=fill)


_layout("pad", _pad_infer, _pad_ref, _pad_vjp,
        {"low": Attr("ints"), "high": Attr("ints"), "interior": Attr("ints", ()),
         "value": Attr("float", 0.0)},
        doc="constant padding before, after and between elements of every axis", lower=_lower_pad)


# gather / scatter_add (each is the other's gradient) --------------------------------------
def _gather_infer(ts, a):
    x, idx = ts
    require_int("gather", idx, "index tensor")
    ax = a["axis"]
    if not 0 <= ax < x.rank:
        raise ShapeError(f"gather: axis {ax} is out of range for {x}")
    return x.with_shape(x.shape[:ax] + idx.shape + x.shape[ax + 1:])


def _check_indices(op: str, idx: np.ndarray, n: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)].ravel()[0]
        raise GraphcError(f"{op}: index {int(bad)} is out of range 0..{n - 1}")


def _gather_ref(x, idx, axis):
    _check_indices("gather", idx, x.shape[axis])
    return np.take(x, idx, axis=axis)


def _gather_vjp(b, n, g):
    x, idx = n.inputs
    return [b.scatter_add(idx, g, shape=x.shape, axis=n.attrs["axis"]), None]


def _scatter_infer(ts, a):
    idx, upd = ts
    require_int("scatter_add", idx, "index tensor")
    shape, ax = a["shape"], a["axis"]
    if not 0 <= ax < len(shape):
        raise ShapeError(f"scatter_add: axis {ax} is out of range for shape {format_shape(shape)}")
    want = tuple(shape[:ax]) + idx.shape + tuple(shape[ax + 1:])
    if upd.shape != want:
        raise ShapeError(f"scatter_add: updates {upd} should have shape {format_shape(want)} for "
                         f"indices {idx} into {format_shape(shape)} along axis {ax}")
    return upd.with_shape(shape)


def _scatter_ref(idx, upd, shape, axis):
    _check_indices("scatter_add", idx, shape[axis])
    out = np.zeros(shape, upd.dtype)
    moved = np.moveaxis(out, axis, 0)  # a view: accumulate along the indexed axis
    u = np.moveaxis(upd.reshape(shape[:axis] + (idx.size,) + shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.ravel(), u)
    return out


def _scatter_vjp(b, n, g):
    idx = n.inputs[0]
    return [None, b.gather(g, idx, axis=n.attrs["axis"])]


def _split(shape, axis):
    return prod(shape[:axis]), shape[axis], prod(shape[axis + 1:])


def _lower_gather(ctx, node):
    """out[p, i, q] = x[p, idx[i], q] over (outer, index, inner) coordinates; indices are
    range-checked (a bad one is reported after the call, never read)."""
    x, idx = node.inputs
    out = node.outputs[0]
    outer, n, inner = _split(x.shape, node.attrs["axis"])
    xb, ib, ob = ctx.buf(x), ctx.buf(idx), ctx.buf(out)

    def body(vs):
        p, i, q = vs
        raw = K.Cast(K.Load(ib, i, idx.dtype), dtypes.i64)
        safe, flag = ctx.check_index(raw, n, "gather")
        src = L.linear_index([p, safe, q], [n * inner, inner, 1])
        dst = L.linear_index([p, i, q], [idx.type.size * inner, inner, 1])
        return [flag, K.Store(ob, dst, K.Load(xb, src, x.dtype))]
    ctx.kernel(ctx.loops([outer, idx.type.size, inner], body), [xb, ib], [ob, ctx.status])


def _lower_scatter_add(ctx, node):
    """Zero the output, then add each update row at its index; serial over indices because
    repeated indices accumulate into the same row."""
    idx, upd = node.inputs
    out = node.outputs[0]
    outer, n, inner = _split(out.shape, node.attrs["axis"])
    ib, ub, ob = ctx.buf(idx), ctx.buf(upd), ctx.buf(out)
    zero = K.Const(0.0 if out.dtype.is_float else 0, out.dtype)
    init = ctx.loops([out.type.size], lambda vs: [K.Store(ob, vs[0], zero)])

    def body(vs):
        p, i, q = vs
        raw = K.Cast(K.Load(ib, i, idx.dtype), dtypes.i64)
        safe, flag = ctx.check_index(raw, n, "scatter_add")
        dst = L.linear_index([p, safe, q], [n * inner, inner, 1])
        src = L.linear_index([p, i, q], [idx.type.size * inner, inner, 1])
        return [flag, K.Store(ob, dst, K.Binary("add", K.Load(ob, dst, out.dtype),
                                                   K.Load(ub, src, upd.dtype), out.dtype))]
    ctx.kernel(init + ctx.loops([outer, idx.type.size, inner], body, parallel=False),
               [ib, ub], [ob, ctx.status])


register(OpDef("gather", Fusion.OPAQUE, _gather_infer, _gather_ref, 2, {"axis": Attr("int", 0)},
               _gather_vjp, _move_cost, nondiff_inputs=(1,), lower=_lower_gather,
               doc="take slices of x at integer indices along an axis (embedding lookup)"))
register(OpDef("scatter_add", Fusion.OPAQUE, _scatter_infer, _scatter_ref, 2,
               {"shape": Attr("ints"), "axis": Attr("int", 0)}, _scatter_vjp, _move_cost,
               nondiff_inputs=(0,), lower=_lower_scatter_add,
               doc="zeros(shape) with updates summed in at the indices (gather's gradient)"))
