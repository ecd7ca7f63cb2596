"""ONNX normalisations graphc builds from registry ops at import: LRN, GroupNormalization,
RMSNormalization, MeanVarianceNormalization, LpNormalization.

Statistics are computed in at least f32 (ONNX's stash_type=1: f16 inputs are normalised in
f32 and rounded once at the end); variance is the two-pass mean((x - mean)^2), which ONNX's
function bodies write as E[x^2] - E[x]^2 (the same value without its cancellation).
"""
from __future__ import annotations

from math import ceil, floor, prod

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .decompose import k
from .errors import OnnxError


def _float(ctx: NodeContext) -> Value:
    x = ctx.x(0)
    if not x.dtype.is_float:
        ctx.unsupported(f"{ctx.op} of {x.dtype} tensors")
    return x


def _stash(ctx: NodeContext, x: Value) -> Value:
    """x in the precision its statistics are computed in (f16 -> f32)."""
    stash = int(ctx.attr("stash_type", 1))
    if stash not in (1, 11, 10, 16):
        ctx.unsupported(f"stash_type={stash}")
    return ctx.b.cast(x, to=dtypes.f32) if x.dtype == dtypes.f16 else x


def _back(ctx: NodeContext, y: Value, dt) -> Value:
    return y if y.dtype == dt else ctx.b.cast(y, to=dt)


def _as(ctx: NodeContext, v: Value, like: Value) -> Value:
    return v if v.dtype == like.dtype else ctx.b.cast(v, to=like.dtype)


@converter("LRN")
def _lrn(ctx: NodeContext):
    x = _float(ctx)
    if x.type.rank < 2:
        ctx.unsupported(f"a rank-{x.type.rank} input (LRN needs (N, C, ...))")
    size = int(ctx.attr("size"))
    if size < 1:
        raise OnnxError(f"LRN: size={size} must be positive")
    alpha, beta = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    b = ctx.b
    r, c = x.type.rank, x.shape[1]
    # channel c sums squares over [c - floor((size-1)/2), c + ceil((size-1)/2)]
    # (a window reaching past every channel sums them all: clip it to c - 1 each side)
    before, after = min(floor((size - 1) / 2), c - 1), min(ceil((size - 1) / 2), c - 1)
    sq = b.mul(x, x)
    low, high = [0] * r, [0] * r
    low[1], high[1] = before, after
    padded = b.pad(sq, low=low, high=high, interior=[0] * r, value=0.0) if before + after else sq
    total = None
    for j in range(before + after + 1):
        starts, stops = [0] * r, list(padded.shape)
        starts[1], stops[1] = j, j + c
        part = b.slice(padded, starts=starts, stops=stops, steps=[1] * r) \
            if (j, j + c) != (0, padded.shape[1]) else padded
        total = part if total is None else b.add(total, part)
    base = b.add(k(b, bias, x), b.mul(k(b, alpha / size, x), total))
    return [b.div(x, b.pow(base, k(b, beta, x)))]


def _normalise(ctx: NodeContext, x: Value, axes: tuple[int, ...], eps: float) -> Value:
    """(x - mean) / sqrt(var + eps) over trailing `axes` with graphc's layer_norm."""
    shape = tuple(x.shape[a] for a in axes)
    ones = ctx.b.const(np.ones(shape), x.dtype)
    zeros = ctx.b.const(np.zeros(shape), x.dtype)
    return ctx.b.layer_norm(x, ones, zeros, axes=axes, eps=eps)


@converter("GroupNormalization")
def _group_norm(ctx: NodeContext):
    x0 = _float(ctx)
    if x0.type.rank < 2:
        ctx.unsupported(f"a rank-{x0.type.rank} input")
    g = int(ctx.attr("num_groups"))
    eps = float(ctx.attr("epsilon", 1e-5))
    n, c = x0.shape[:2]
    if g <= 0 or c % g:
        raise OnnxError(f"GroupNormalization: {c} channels do not split into num_groups={g}")
    scale, bias = ctx.x(1), ctx.x(2)
    b = ctx.b
    x = _stash(ctx, x0)
    d = (c // g) * prod(x.shape[2:])
    if d == 0:
        ctx.unsupported("groups of no elements")
    y = b.reshape(_normalise(ctx, b.reshape(x, (n, g, d)), (2,), eps), x.shape)
    ch_shape = (c,) + (1,) * (x.type.rank - 2)

    def per_channel(v: Value, what: str) -> Value:
        # opset 21's one value per channel (opset 18's per-group form is deprecated: onnx's
        # checker refuses those models before they reach the importer)
        ctx.expect_shape(v, (c,), f"the {what} (one value per channel)")
        return b.reshape(_as(ctx, v, y), ch_shape)
    y = b.add(b.mul(y, per_channel(scale, "scale")), per_channel(bias, "bias"))
    return [_back(ctx, y, x0.dtype)]


@converter("RMSNormalization")
def _rms_norm(ctx: NodeContext):
    x0 = _float(ctx)
    rank = x0.type.rank
    axis = ctx.axis(ctx.attr("axis", -1), rank)
    eps = float(ctx.attr("epsilon", 1e-5))
    b = ctx.b
    x = _stash(ctx, x0)
    axes = tuple(range(axis, rank))
    ms = b.mean(b.mul(x, x), axes=axes, keepdims=True)
    y = b.mul(x, b.rsqrt(b.add(ms, k(b, eps, ms))))
    scale = ctx.x(1)
    try:
        np.broadcast_shapes(x.shape, scale.shape)
    except ValueError:
        raise OnnxError(f"RMSNormalization: scale {scale.type} does not broadcast to X "
                        f"{x0.type}") from None
    return [_back(ctx, b.mul(y, _as(ctx, scale, y)), x0.dtype)]


@converter("MeanVarianceNormalization")
def _mvn(ctx: NodeContext):
    x = _float(ctx)
    rank = x.type.rank
    axes = tuple(sorted({ctx.axis(a, rank) for a in ctx.attr("axes", [0, 2, 3])}))
    b = ctx.b
    mean = b.mean(x, axes=axes, keepdims=True)
    xc = b.sub(x, mean)
    std = b.sqrt(b.mean(b.mul(xc, xc), axes=axes, keepdims=True))
    return [b.div(xc, b.add(std, k(b, 1e-9, std)))]


@converter("LpNormalization")
def _lp_norm(ctx: NodeContext):
    x = _float(ctx)
    axis = ctx.axis(ctx.attr("axis", -1), x.type.rank)
    p = int(ctx.attr("p", 2))
    b = ctx.b
    if p == 1:
        norm = b.sum(b.abs(x), axes=(axis,), keepdims=True)
    elif p == 2:
        norm = b.sqrt(b.sum(b.mul(x, x), axes=(axis,), keepdims=True))
    else:
        raise OnnxError(f"LpNormalization: p={p}; ONNX defines p = 1 or 2")
    zero = b.equal(norm, k(b, 0.0, norm))
    safe = b.where(zero, k(b, 1.0, norm), norm)  # 0 / 0 would poison the gradient
    return [b.where(zero, k(b, 0.0, x), b.div(x, safe))]
