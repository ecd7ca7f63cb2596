"""ONNX data-movement and constant-pattern ops graphc builds from registry ops at import:
DepthToSpace and SpaceToDepth (DCR and CRD), Trilu, EyeLike, OneHot, CumSum and CumProd.

DepthToSpace/SpaceToDepth are reshape-transpose-reshape (exact). Trilu is a `where` with a
mask computed from the diagonal offset k (a constant mask when k is known at import, an
in-graph comparison when k is a graph input). OneHot compares the indices with an arange.
CumSum/CumProd are log-depth shift-and-combine scans (decompose.scan): exact for integers,
and for floats every output sums (multiplies) the same terms as the sequential scan in a
tree order, error O(log n) ulps rather than the sequential O(n).
"""
from __future__ import annotations

import numpy as np

from ..ir import dtypes
from .context import NodeContext, converter, graphc_dtype
from .decompose import iota, scan, wrap_negative
from .errors import OnnxError


@converter("DepthToSpace")
def _depth_to_space(ctx: NodeContext):
    x = ctx.x(0)
    ctx.expect_shape(x, 4, "the input (N, C, H, W)")
    bs = int(ctx.attr("blocksize"))
    mode = ctx.attr("mode", "DCR")
    n, c, h, w = x.shape
    if bs <= 0 or c % (bs * bs):
        raise OnnxError(f"DepthToSpace: {c} channels are not a multiple of blocksize^2 = {bs * bs}")
    cc = c // (bs * bs)
    b = ctx.b
    if mode == "DCR":
        y = b.transpose(b.reshape(x, (n, bs, bs, cc, h, w)), perm=(0, 3, 4, 1, 5, 2))
    elif mode == "CRD":
        y = b.transpose(b.reshape(x, (n, cc, bs, bs, h, w)), perm=(0, 1, 4, 2, 5, 3))
    else:
        ctx.unsupported(f"mode={mode!r}")
    return [b.reshape(y, (n, cc, h * bs, w * bs))]


@converter("SpaceToDepth")
def _space_to_depth(ctx: NodeContext):
    x = ctx.x(0)
    ctx.expect_shape(x, 4, "the input (N, C, H, W)")
    bs = int(ctx.attr("blocksize"))
    n, c, h, w = x.shape
    if bs <= 0 or h % bs or w % bs:
        raise OnnxError(f"SpaceToDepth: H={h}, W={w} are not multiples of blocksize {bs}")
    mode = ctx.attr("mode", "DCR")  # opset 28 adds CRD
    perm = {"DCR": (0, 3, 5, 1, 2, 4), "CRD": (0, 1, 3, 5, 2, 4)}.get(mode)
    if perm is None:
        ctx.unsupported(f"mode={mode!r}")
    b = ctx.b
    y = b.transpose(b.reshape(x, (n, c, h // bs, bs, w // bs, bs)), perm=perm)
    return [b.reshape(y, (n, c * bs * bs, h // bs, w // bs))]


@converter("Trilu")
def _trilu(ctx: NodeContext):
    x = ctx.x(0)
    if x.type.rank < 2:
        raise OnnxError(f"Trilu: the input {x.type} must have rank >= 2")
    upper = bool(ctx.attr("upper", 1))
    b = ctx.b
    rows, cols = x.shape[-2:]
    diff = np.arange(cols)[None, :] - np.arange(rows)[:, None]  # j - i
    kv = ctx.opt(1)
    if kv is None or kv.kind == "const":
        kk = 0 if kv is None else int(np.asarray(kv.data).reshape(-1)[0])
        keep = b.const(diff >= kk if upper else diff <= kk, dtypes.bool_)
    else:
        if kv.type.size != 1:
            raise OnnxError(f"Trilu: k must hold one value, got {kv.type}")
        kk = b.reshape(kv if kv.dtype == dtypes.i64 else b.cast(kv, to=dtypes.i64), ())
        d = b.const(diff.astype(np.int64), dtypes.i64)
        keep = b.greater_equal(d, kk) if upper else b.less_equal(d, kk)
    zero = b.const(np.zeros((), x.dtype.np_dtype), x.dtype)
    return [b.where(keep, x, zero)]


@converter("EyeLike")
def _eye_like(ctx: NodeContext):
    x = ctx.x(0)
    ctx.expect_shape(x, 2, "the input (a matrix)")
    dt = graphc_dtype(int(ctx.attr("dtype")), "the EyeLike dtype") if ctx.has_attr("dtype") \
        else x.dtype
    rows, cols = x.shape
    return [ctx.b.const(np.eye(rows, cols, int(ctx.attr("k", 0)), dtype=dt.np_dtype), dt)]


@converter("OneHot")
def _one_hot(ctx: NodeContext):
    idx, values = ctx.x(0), ctx.x(2)
    depth_arr = np.asarray(ctx.const(1, "depth")).reshape(-1)
    if depth_arr.size != 1:
        raise OnnxError(f"OneHot: depth must hold one value, got {depth_arr.size}")
    depth = int(depth_arr[0])
    if depth < 0:
        raise OnnxError(f"OneHot: depth={depth} must be >= 0")
    if values.type.size != 2:
        raise OnnxError(f"OneHot: values must hold [off, on], got {values.type}")
    b = ctx.b
    rank = idx.type.rank + 1
    axis = ctx.axis(ctx.attr("axis", -1), rank)
    if idx.dtype.is_float:  # ONNX allows float indices; they truncate to integers
        idx = b.cast(idx, to=dtypes.i64)
    elif idx.dtype.is_bool:
        ctx.unsupported("bool indices")
    pos = b.expand_dims(wrap_negative(b, idx, depth), axes=(axis,))
    hot = b.equal(pos, iota(b, depth, axis, rank))  # out-of-range indices hit nothing
    flat = b.reshape(values, (2,))
    if values.kind == "const":
        off = b.const(np.asarray(values.data).reshape(-1)[0], values.dtype)
        on = b.const(np.asarray(values.data).reshape(-1)[1], values.dtype)
    else:
        off = b.reshape(b.slice(flat, starts=[0], stops=[1], steps=[1]), ())
        on = b.reshape(b.slice(flat, starts=[1], stops=[2], steps=[1]), ())
    return [b.where(hot, on, off)]


@converter("CumSum", "CumProd")
def _cumulative(ctx: NodeContext):
    x = ctx.x(0)
    if x.dtype.is_bool:
        ctx.unsupported(f"{ctx.op} of bool tensors")
    axis_v = np.asarray(ctx.const(1, "axis")).reshape(-1)
    if axis_v.size != 1:
        raise OnnxError(f"{ctx.op}: axis must hold one value, got {axis_v.size}")
    if x.type.rank == 0:
        ctx.unsupported(f"{ctx.op} of a scalar")
    axis = ctx.axis(int(axis_v[0]), x.type.rank)
    op, fill = ("add", 0) if ctx.op == "CumSum" else ("mul", 1)
    return [scan(ctx.b, x, axis, op, fill, bool(ctx.attr("exclusive", 0)),
                 bool(ctx.attr("reverse", 0)))]

