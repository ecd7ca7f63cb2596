"""Neural-network ONNX ops: Conv, ConvTranspose, Gemm, MatMul, pooling, batch/layer/instance
normalisation, Softmax and LogSoftmax.

graphc's window ops are 2-D (NCHW); 1-D ONNX windows run as 2-D ones with a height of 1.
ONNX pads list every axis's begin and then every axis's end, (b_h, b_w, e_h, e_w); graphc's
padding is (top, bottom, left, right).

Older forms: Softmax and LogSoftmax before opset 13 flatten the input to 2-D at `axis`
(default 1) and normalise over the whole trailing part; BatchNormalization before opset 9
has `spatial` (0: per-activation statistics) and, before 7, `is_test`; Gemm's `broadcast`
attribute (before 7) names what numpy broadcasting does anyway.
"""
from __future__ import annotations

from math import ceil, prod

import numpy as np

from ..ir.graph import Value
from .context import NodeContext, converter


def _as_2d(ctx: NodeContext, x: Value, what: str) -> tuple[Value, bool]:
    """x as NCHW (a 1-D NCW input gains H=1); the flag says it was 1-D."""
    if x.type.rank == 4:
        return x, False
    if x.type.rank == 3:
        return ctx.b.reshape(x, x.shape[:2] + (1,) + x.shape[2:]), True
    ctx.unsupported(f"{what} on a rank-{x.type.rank} input (graphc has 1-D and 2-D windows)")


def _from_2d(ctx: NodeContext, y: Value, was_1d: bool) -> Value:
    return ctx.b.reshape(y, y.shape[:2] + y.shape[3:]) if was_1d else y


def _spatial(ctx: NodeContext, name: str, n: int, default: int) -> list[int]:
    v = [int(d) for d in ctx.attr(name, [default] * n)]
    if len(v) != n:
        ctx.unsupported(f"{name}={v} for {n} spatial axes")
    return v


def _pads(ctx: NodeContext, sizes: list[int], kernel: list[int], strides: list[int],
          dilations: list[int], ceil_mode: bool = False) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis from pads/auto_pad (and ceil_mode for pools)."""
    n = len(sizes)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for d, k, s, dl in zip(sizes, kernel, strides, dilations):
            total = max((ceil(d / s) - 1) * s + (k - 1) * dl + 1 - d, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
    elif auto == "VALID":
        begin, end = [0] * n, [0] * n
    elif auto == "NOTSET":
        p = _spatial(ctx, "pads", 2 * n, 0)
        begin, end = p[:n], p[n:]
    else:
        ctx.unsupported(f"auto_pad={auto!r}")
    if any(v < 0 for v in begin + end):
        ctx.unsupported(f"negative pads {begin + end}")
    if ceil_mode:
        for i, (d, k, s, dl) in enumerate(zip(sizes, kernel, strides, dilations)):
            span = d + begin[i] + end[i] - ((k - 1) * dl + 1)
            out = -(-span // s) + 1
            if (out - 1) * s >= d + begin[i]:  # the last window must start inside the input
                out -= 1
            end[i] += max((out - 1) * s + (k - 1) * dl + 1 - (d + begin[i] + end[i]), 0)
    return begin, end


def _graphc_padding(begin: list[int], end: list[int]) -> tuple[int, int, int, int]:
    if len(begin) == 1:
        return (0, 0, begin[0], end[0])
    return (begin[0], end[0], begin[1], end[1])


def _pair(v: list[int], fill: int) -> tuple[int, int]:
    return (fill, v[0]) if len(v) == 1 else (v[0], v[1])


def _add_channel_bias(ctx: NodeContext, y: Value, bias: Value | None) -> Value:
    if bias is None:
        return y
    ctx.expect_shape(bias, (y.shape[1],), "the bias B (one value per output channel)")
    shape = (bias.shape[0],) + (1,) * (y.type.rank - 2)
    if bias.kind == "const":
        return ctx.b.add(y, ctx.b.const(bias.data.reshape(shape), bias.dtype))
    return ctx.b.add(y, ctx.b.reshape(bias, shape))


@converter("Conv")
def _conv(ctx: NodeContext):
    x, was_1d = _as_2d(ctx, ctx.x(0), "Conv")
    ctx.expect_shape(ctx.x(1), ctx.x(0).type.rank, "the weight W (of X's rank)")
    w, _ = _as_2d(ctx, ctx.x(1), "Conv weight")
    n = 1 if was_1d else 2
    kernel = list(ctx.x(1).shape[2:])
    strides = _spatial(ctx, "strides", n, 1)
    dil = _spatial(ctx, "dilations", n, 1)
    begin, end = _pads(ctx, list(ctx.x(0).shape[2:]), kernel, strides, dil)
    y = ctx.b.conv2d(x, w, strides=_pair(strides, 1), padding=_graphc_padding(begin, end),
                     dilations=_pair(dil, 1), groups=int(ctx.attr("group", 1)))
    return [_add_channel_bias(ctx, _from_2d(ctx, y, was_1d), ctx.opt(2))]


@converter("ConvTranspose")
def _conv_transpose(ctx: NodeContext):
    x0 = ctx.x(0)
    x, was_1d = _as_2d(ctx, x0, "ConvTranspose")
    ctx.expect_shape(ctx.x(1), x0.type.rank, "the weight W (of X's rank)")
    w, _ = _as_2d(ctx, ctx.x(1), "ConvTranspose weight")
    n = 1 if was_1d else 2
    sizes, kernel = list(x0.shape[2:]), list(ctx.x(1).shape[2:])
    strides = _spatial(ctx, "strides", n, 1)
    dil = _spatial(ctx, "dilations", n, 1)
    extra = _spatial(ctx, "output_padding", n, 0)
    groups = int(ctx.attr("group", 1))
    # Output position j reads position j + begin of the full (unpadded) result, whose size is
    # s*(in-1) + (k-1)*d + 1; positions past it (output_padding, a larger output_shape) are 0.
    full = [s * (d - 1) + (k - 1) * dl + 1 for d, k, s, dl in zip(sizes, kernel, strides, dil)]
    auto = ctx.attr("auto_pad", "NOTSET")
    shape_attr = [int(v) for v in ctx.attr("output_shape", [])][-n:]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = shape_attr or [d * s for d, s in zip(sizes, strides)]
        total = [f + e - o for f, e, o in zip(full, extra, out)]
        begin = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
    elif shape_attr:  # explicit pads (default 0) and a given output size: zeros beyond
        begin = _spatial(ctx, "pads", 2 * n, 0)[:n] if auto == "NOTSET" else [0] * n
        out = shape_attr
    elif auto in ("NOTSET", "VALID"):
        p = _spatial(ctx, "pads", 2 * n, 0) if auto == "NOTSET" else [0] * (2 * n)
        begin = p[:n]
        out = [f + e - b - q for f, e, b, q in zip(full, extra, p[:n], p[n:])]
    else:
        ctx.unsupported(f"auto_pad={auto!r}")
    if any(b < 0 for b in begin) or any(o < 0 for o in out):
        ctx.unsupported(f"pads {begin} and output size {out}")
    end = [max(f - b - o, 0) for f, b, o in zip(full, begin, out)]
    h = [f - b - e for f, b, e in zip(full, begin, end)]  # <= out: the rest is zero padding
    k_out = w.shape[1] * groups
    y = ctx.b.conv2d_grad_input(
        x, w, input_shape=(x.shape[0], k_out) + ((1,) if was_1d else ()) + tuple(h),
        strides=_pair(strides, 1), padding=_graphc_padding(begin, end), dilations=_pair(dil, 1),
        groups=groups)
    tail = [o - hh for o, hh in zip(out, h)]
    if any(tail):
        r = y.type.rank
        y = ctx.b.pad(y, low=[0] * r, high=[0] * (r - n) + tail, interior=[0] * r, value=0.0)
    return [_add_channel_bias(ctx, _from_2d(ctx, y, was_1d), ctx.opt(2))]


@converter("MaxPool", "AveragePool")
def _pool(ctx: NodeContext):
    x0 = ctx.x(0)
    x, was_1d = _as_2d(ctx, x0, ctx.op)
    if ctx.wants_output(1):
        ctx.unsupported("the Indices output")
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    n = len(kernel)
    if n != x0.type.rank - 2:
        ctx.unsupported(f"kernel_shape {kernel} for a rank-{x0.type.rank} input")
    strides = _spatial(ctx, "strides", n, 1)
    dil = _spatial(ctx, "dilations", n, 1)
    sizes = list(x0.shape[2:])
    base_begin, base_end = _pads(ctx, sizes, kernel, strides, dil)
    begin, end = _pads(ctx, sizes, kernel, strides, dil, ceil_mode=bool(ctx.attr("ceil_mode", 0)))
    attrs = dict(kernel=_pair(kernel, 1), strides=_pair(strides, 1))
    if any(d != 1 for d in dil):
        counted = (base_begin, base_end) if ctx.attr("count_include_pad", 0) else None
        return [_from_2d(ctx, _dilated_pool(ctx, x, _pair(kernel, 1), _pair(strides, 1),
                                            _pair(dil, 1), begin, end, counted), was_1d)]
    if ctx.op == "MaxPool":
        y = ctx.b.max_pool2d(x, padding=_graphc_padding(begin, end), **attrs)
    elif ctx.attr("count_include_pad", 0):
        # Explicit pads count in the divisor, the ceil_mode overhang does not (as in ONNX
        # Runtime and PyTorch): pad explicitly, then let the pool skip the overhang.
        low = [0, 0] + ([0] if was_1d else []) + base_begin
        high = [0, 0] + ([0] if was_1d else []) + base_end
        xp = ctx.b.pad(x, low=low, high=high, interior=[0] * 4, value=0.0)
        over = [e - be for e, be in zip(end, base_end)]
        y = ctx.b.avg_pool2d(xp, padding=_graphc_padding([0] * n, over), count_include_pad=False,
                             **attrs)
    else:
        y = ctx.b.avg_pool2d(x, padding=_graphc_padding(begin, end), count_include_pad=False,
                             **attrs)
    return [_from_2d(ctx, y, was_1d)]


def _window_count(size: int, k: int, s: int, d: int, begin: int, out: int, lo: int, hi: int):
    """Per output position, how many of the k taps fall inside [lo, hi)."""
    pos = np.arange(out)[:, None] * s - begin + np.arange(k)[None, :] * d
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


def _dilated_pool(ctx: NodeContext, x: Value, kernel, strides, dil, begin, end, counted):
    """Pools with dilations (graphc's pool ops have none): dilated im2col windows, reduced.
    `counted`: the (begin, end) pads that count in an average's divisor, or None."""
    b = ctx.b
    n, c, h, w = x.shape
    pad4 = _graphc_padding(begin, end)
    if len(begin) == 1:
        begin, end, counted = [0] + begin, [0] + end, counted and ([0] + counted[0], [0] + counted[1])
    outs = [(sz + bg + en - (k - 1) * dl - 1) // st + 1
            for sz, bg, en, k, st, dl in zip((h, w), begin, end, kernel, strides, dil)]
    fill = -np.inf if ctx.op == "MaxPool" else 0.0
    cols = b.im2col(x, kernel=kernel, strides=strides, padding=pad4, dilations=dil, value=fill)
    win = b.reshape(cols, (n, c, kernel[0] * kernel[1], outs[0], outs[1]))
    if ctx.op == "MaxPool":
        return b.max(win, axes=(2,), keepdims=False)
    total = b.sum(win, axes=(2,), keepdims=False)
    lo = [-p for p in counted[0]] if counted else [0, 0]
    hi = [sz + p for sz, p in zip((h, w), counted[1])] if counted else [h, w]
    per_axis = [_window_count(sz, k, st, dl, bg, o, l_, h_) for sz, k, st, dl, bg, o, l_, h_ in
                zip((h, w), kernel, strides, dil, begin, outs, lo, hi)]
    count = np.outer(per_axis[0], per_axis[1]).astype(np.float64)
    return b.div(total, b.const(count, x.dtype))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext):
    x = ctx.x(0)
    axes = tuple(range(2, x.type.rank))
    return [ctx.b.op("mean" if ctx.op == "GlobalAveragePool" else "max", x, axes=axes,
                     keepdims=True)]


@converter("Gemm", since=1)
def _gemm(ctx: NodeContext):
    a, bm = ctx.x(0), ctx.x(1)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    y = ctx.b.matmul(a, bm, transpose_a=bool(ctx.attr("transA", 0)),
                     transpose_b=bool(ctx.attr("transB", 0)))
    if alpha != 1.0:
        y = ctx.b.mul(y, ctx.scalar(alpha, y))
    c = ctx.opt(2)
    if c is not None and beta != 0.0:
        y = ctx.b.add(y, c if beta == 1.0 else ctx.b.mul(c, ctx.scalar(beta, c)))
    return [y]


@converter("MatMul")
def _matmul(ctx: NodeContext):
    a, c = ctx.x(0), ctx.x(1)
    va, vc = a.type.rank == 1, c.type.rank == 1
    if va:
        a = ctx.b.reshape(a, (1,) + a.shape)
    if vc:
        c = ctx.b.reshape(c, c.shape + (1,))
    y = ctx.b.matmul(a, c)
    if va or vc:
        shape = y.shape[:-2] + (() if va else y.shape[-2:-1]) + (() if vc else y.shape[-1:])
        y = ctx.b.reshape(y, shape)
    return [y]


@converter("Softmax", "LogSoftmax", since=1, until=12)
def _softmax_1(ctx: NodeContext):
    """Softmax-1/-11: the input as a 2-D matrix [prod(shape[:axis]), prod(shape[axis:])]
    (axis default 1), normalised over each row: over every axis from `axis` on at once."""
    x = ctx.x(0)
    axis = ctx.axis(ctx.attr("axis", 1), x.type.rank)
    op = "softmax" if ctx.op == "Softmax" else "log_softmax"
    if all(d == 1 for d in x.shape[axis + 1:]):  # one trailing axis: the per-axis softmax
        return [ctx.b.op(op, x, axis=axis)]
    flat = ctx.b.reshape(x, (prod(x.shape[:axis]), prod(x.shape[axis:])))
    return [ctx.b.reshape(ctx.b.op(op, flat, axis=1), x.shape)]


@converter("Softmax", "LogSoftmax", since=13)
def _softmax(ctx: NodeContext):
    x = ctx.x(0)
    axis = ctx.axis(ctx.attr("axis", -1), x.type.rank)
    return [ctx.b.op("softmax" if ctx.op == "Softmax" else "log_softmax", x, axis=axis)]


@converter("BatchNormalization", since=1, until=8)
def _batch_norm_1(ctx: NodeContext):
    """BatchNormalization-1/6/7: `is_test` (before 7; 0 is training), extra outputs for
    training, `spatial`=0 for statistics per activation (shape C x D1 x ... x Dn)."""
    if ctx.has_attr("is_test") and not ctx.attr("is_test"):
        ctx.unsupported("is_test=0, training mode (graphc imports models for inference)")
    if any(ctx.wants_output(i) for i in range(1, 5)):
        ctx.unsupported("the training outputs (mean, var, saved_mean, saved_var): graphc "
                        "imports models for inference")
    if ctx.attr("spatial", 1):
        return _batch_norm(ctx)
    x = ctx.x(0)
    per = x.shape[1:]
    scale, bias, mean, var = (ctx.x(i) for i in range(1, 5))
    for name, v in (("scale", scale), ("B", bias), ("mean", mean), ("var", var)):
        ctx.expect_shape(v, per, f"{name} (spatial=0: one value per activation, {list(per)})")
    b = ctx.b
    inv = b.div(scale, b.sqrt(b.add(var, ctx.scalar(float(ctx.attr("epsilon", 1e-5)), var))))
    return [b.add(b.mul(b.sub(x, mean), inv), bias)]


@converter("BatchNormalization", since=9)
def _batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0):
        ctx.unsupported("training_mode=1 (graphc imports models for inference)")
    x = ctx.x(0)
    if x.type.rank < 2:
        ctx.unsupported(f"a rank-{x.type.rank} input")
    return [ctx.b.batch_norm_inference(x, ctx.x(1), ctx.x(2), ctx.x(3), ctx.x(4), axis=1,
                                       eps=float(ctx.attr("epsilon", 1e-5)))]


def _ones(ctx: NodeContext, shape: tuple[int, ...], like: Value, value: float = 1.0) -> Value:
    return ctx.b.const(np.full(shape, value), like.dtype)


@converter("LayerNormalization")
def _layer_norm(ctx: NodeContext):
    x = ctx.x(0)
    rank = x.type.rank
    axis = ctx.axis(ctx.attr("axis", -1), rank)
    axes = tuple(range(axis, rank))
    norm_shape = x.shape[axis:]
    b = ctx.b
    gamma = b.broadcast(b.reshape(ctx.x(1), (1,) * (len(norm_shape) - ctx.x(1).type.rank)
                                  + ctx.x(1).shape), norm_shape) \
        if ctx.x(1).shape != norm_shape else ctx.x(1)
    beta = ctx.opt(2)
    if beta is None:
        beta = _ones(ctx, norm_shape, x, 0.0)
    elif beta.shape != norm_shape:
        beta = b.broadcast(b.reshape(beta, (1,) * (len(norm_shape) - beta.type.rank) + beta.shape),
                           norm_shape)
    eps = float(ctx.attr("epsilon", 1e-5))
    outs: list[Value | None] = [b.layer_norm(x, gamma, beta, axes=axes, eps=eps)]
    if ctx.wants_output(1) or ctx.wants_output(2):
        mean = b.mean(x, axes=axes, keepdims=True)
        xc = b.sub(x, mean)
        var = b.mean(b.mul(xc, xc), axes=axes, keepdims=True)
        inv = b.rsqrt(b.add(var, ctx.scalar(eps, var)))
        outs += [mean, inv]
    return outs


@converter("InstanceNormalization")
def _instance_norm(ctx: NodeContext):
    x = ctx.x(0)
    rank = x.type.rank
    if rank < 3:
        ctx.unsupported(f"a rank-{rank} input")
    axes = tuple(range(2, rank))
    spatial = x.shape[2:]
    y = ctx.b.layer_norm(x, _ones(ctx, spatial, x), _ones(ctx, spatial, x, 0.0), axes=axes,
                         eps=float(ctx.attr("epsilon", 1e-5)))
    c = x.shape[1]
    scale = ctx.b.reshape(ctx.x(1), (c,) + (1,) * (rank - 2))
    return [_add_channel_bias(ctx, ctx.b.mul(y, scale), ctx.x(2))]
