"""Shape and data-movement ONNX ops: Reshape, Flatten, Transpose, Concat, Split, Slice,
Squeeze, Unsqueeze, Gather, Pad, Expand, Tile, Cast, Shape, Size, Constant,
ConstantOfShape, Identity, Dropout (inference), Upsample, Scatter. Shape-valued inputs must
be constants at import time (they usually are, once `Shape` folds; a graph input there is
specialised by value, see dynamic.py).

Older forms: Slice's starts/ends/axes are attributes before opset 10, Pad's pads and value
before opset 11 (Split's, Squeeze's, Unsqueeze's and the reductions' axes before 13 or 18:
`ctx.ints_from` reads either); Dropout's mask has the data's type before opset 10; Cast's
`to` is a type name at opset 1-5; Concat's axis defaults to 1 before opset 4; Upsample
(opsets 7-9) is nearest or linear resampling with asymmetric coordinates; Scatter (9-10)
is ScatterElements."""
from __future__ import annotations

from math import prod

import numpy as np

from ..ir import dtypes
from ..ir.errors import GraphcError
from ..ir.graph import Value
from .context import NodeContext, Unsupported, converter, graphc_dtype
from .errors import OnnxError


@converter("Identity")
def _identity(ctx: NodeContext):
    return [ctx.x(0)]


@converter("Dropout", until=9)
def _dropout_7(ctx: NodeContext):
    """Dropout-7: an identity at inference; its mask has the data's type (all ones)."""
    x = ctx.x(0)
    mask = ctx.b.const(np.ones(x.shape, x.dtype.np_dtype), x.dtype) if ctx.wants_output(1) else None
    return [x, mask]


@converter("Dropout", since=10)
def _dropout(ctx: NodeContext):
    if ctx.has_input(2):
        training = ctx.const(2, "training_mode")
        if bool(np.asarray(training).reshape(-1)[0]):
            ctx.unsupported("training_mode=true (graphc imports models for inference)")
    x = ctx.x(0)
    mask = ctx.b.const(np.ones(x.shape, bool), dtypes.bool_) if ctx.wants_output(1) else None
    return [x, mask]


@converter("Cast", since=1)
def _cast(ctx: NodeContext):
    to = ctx.attr("to")
    if isinstance(to, str):  # Cast-1: a type name ("FLOAT")
        from onnx import TensorProto
        try:
            to = TensorProto.DataType.Value(to.upper())
        except ValueError:
            raise OnnxError(f"Cast: to={to!r} is not an ONNX element type") from None
    to = graphc_dtype(int(to), "the Cast target")
    x = ctx.x(0)
    return [x if x.dtype == to else ctx.b.cast(x, to=to)]


@converter("CastLike")
def _cast_like(ctx: NodeContext):
    x, like = ctx.x(0), ctx.x(1)
    return [x if x.dtype == like.dtype else ctx.b.cast(x, to=like.dtype)]


@converter("Shape")
def _shape(ctx: NodeContext):
    shape = ctx.x(0).shape
    rank = len(shape)
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return [ctx.b.const(np.array(shape[start:end], np.int64), dtypes.i64)]


@converter("Size")
def _size(ctx: NodeContext):
    return [ctx.b.const(np.array(ctx.x(0).type.size, np.int64), dtypes.i64)]


@converter("Constant")
def _constant(ctx: NodeContext):
    for attr, kind in (("value", None), ("value_float", dtypes.f32), ("value_floats", dtypes.f32),
                       ("value_int", dtypes.i64), ("value_ints", dtypes.i64)):
        if ctx.has_attr(attr):
            data = np.asarray(ctx.attr(attr))
            try:
                dt = kind or dtypes.dtype(data.dtype)
            except GraphcError:
                raise Unsupported(f"a constant of dtype {data.dtype}") from None
            return [ctx.b.const(data, dt)]
    ctx.unsupported("only value, value_float(s) and value_int(s) constants are supported")


@converter("ConstantOfShape")
def _constant_of_shape(ctx: NodeContext):
    shape = ctx.check_size(ctx.const_ints(0, "the shape"), "shape")
    fill = np.asarray(ctx.attr("value", np.zeros(1, np.float32))).reshape(-1)
    if fill.size != 1:
        raise OnnxError(f"ConstantOfShape: value must hold one element, it holds {fill.size}")
    dt = graphc_dtype(_onnx_elem(fill.dtype), "the fill value")
    return [ctx.b.const(np.full(shape, fill[0], dt.np_dtype), dt)]


def _onnx_elem(npd: np.dtype) -> int:
    from onnx import helper
    return helper.np_dtype_to_tensor_dtype(npd)


@converter("Reshape")
def _reshape(ctx: NodeContext):
    x = ctx.x(0)
    shape = ctx.const_ints(1, "the target shape")
    allowzero = ctx.attr("allowzero", 0)
    if not allowzero and any(d == 0 and i >= x.type.rank for i, d in enumerate(shape)):
        raise OnnxError(f"Reshape: shape {shape} copies (0) a dimension {x.type} does not have")
    out = [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    if out.count(-1) > 1:
        ctx.unsupported(f"shape {shape} has more than one -1")
    if -1 in out:
        known = prod(d for d in out if d != -1)
        if known == 0 or x.type.size % known:
            ctx.unsupported(f"cannot reshape {x.type} to {shape}")
        out[out.index(-1)] = x.type.size // known
    return [ctx.b.reshape(x, tuple(out))]


@converter("Flatten")
def _flatten(ctx: NodeContext):
    x = ctx.x(0)
    axis = ctx.attr("axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis
    if not 0 <= axis <= x.type.rank:
        ctx.unsupported(f"axis {axis} for rank {x.type.rank}")
    return [ctx.b.reshape(x, (prod(x.shape[:axis]), prod(x.shape[axis:])))]


@converter("Transpose")
def _transpose(ctx: NodeContext):
    x = ctx.x(0)
    perm = ctx.attr("perm", list(reversed(range(x.type.rank))))
    perm = tuple(ctx.axis(p, x.type.rank) for p in perm)
    return [x if perm == tuple(range(x.type.rank)) else ctx.b.transpose(x, perm=perm)]


@converter("Concat", since=1, until=3)
def _concat_1(ctx: NodeContext):
    """Concat-1: the axis defaults to 1."""
    return _concat_on(ctx, ctx.attr("axis", 1))


@converter("Concat", since=4)
def _concat(ctx: NodeContext):
    return _concat_on(ctx, ctx.attr("axis"))


def _concat_on(ctx: NodeContext, axis: int):
    xs = [v for v in ctx.inputs if v is not None]
    if not xs:
        ctx.unsupported("Concat of no inputs")
    for k, v in enumerate(xs[1:], 1):
        ctx.expect_shape(v, xs[0].type.rank, f"input {k} (as input 0, {xs[0].type})")
    axis = ctx.axis(axis, xs[0].type.rank)
    parts = [v for v in xs if v.shape[axis] > 0]  # empty pieces add nothing
    if not parts:
        shape = xs[0].shape[:axis] + (0,) + xs[0].shape[axis + 1:]
        return [ctx.b.const(np.zeros(shape, xs[0].dtype.np_dtype), xs[0].dtype)]
    return [parts[0] if len(parts) == 1 else ctx.b.concat(*parts, axis=axis)]


def _slice_axis(ctx: NodeContext, x: Value, axis: int, start: int, stop: int) -> Value:
    starts = [0] * x.type.rank
    stops = list(x.shape)
    starts[axis], stops[axis] = start, stop
    if (starts[axis], stops[axis]) == (0, x.shape[axis]):
        return x
    return ctx.b.slice(x, starts=starts, stops=stops, steps=[1] * x.type.rank)


@converter("Split")
def _split(ctx: NodeContext):
    x = ctx.x(0)
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    d = x.shape[axis]
    sizes = ctx.ints_from("split", 1, "split sizes")
    if sizes is None:
        n = ctx.attr("num_outputs", ctx.num_outputs)
        if not 1 <= n <= ctx.num_outputs:
            raise OnnxError(f"Split: num_outputs={n}, but the node has {ctx.num_outputs} outputs")
        chunk = -(-d // n)
        sizes = [min(chunk, d - i * chunk) for i in range(n)]
    if sum(sizes) != d or any(s < 0 for s in sizes):
        ctx.unsupported(f"split sizes {sizes} do not add up to dimension {d}")
    outs, at = [], 0
    for s in sizes:
        outs.append(_slice_axis(ctx, x, axis, at, at + s))
        at += s
    return outs


@converter("Slice", since=1, until=9)
def _slice_1(ctx: NodeContext):
    """Slice-1: starts, ends and axes are attributes; every step is 1."""
    starts = [int(v) for v in ctx.attr("starts")]
    ends = [int(v) for v in ctx.attr("ends")]
    axes = [int(v) for v in ctx.attr("axes", range(len(starts)))]
    if not len(starts) == len(ends) == len(axes):
        raise OnnxError(f"Slice: starts {starts}, ends {ends} and axes {axes} differ in length")
    return _slice_on(ctx, ctx.x(0), starts, ends, axes, [1] * len(starts))


@converter("Slice", since=10)
def _slice(ctx: NodeContext):
    starts = ctx.const_ints(1, "starts")
    ends = ctx.const_ints(2, "ends")
    axes = ctx.const_ints(3, "axes") if ctx.has_input(3) else list(range(len(starts)))
    steps = ctx.const_ints(4, "steps") if ctx.has_input(4) else [1] * len(starts)
    return _slice_on(ctx, ctx.x(0), starts, ends, axes, steps)


def _slice_on(ctx: NodeContext, x: Value, starts: list[int], ends: list[int], axes: list[int],
              steps: list[int]):
    rank = x.type.rank
    picks = [range(d) for d in x.shape]  # the positions each axis keeps, in order
    for a, s, e, p in zip(axes, starts, ends, steps):
        if p == 0:
            ctx.unsupported("a step of 0")
        a = ctx.axis(a, rank)
        picks[a] = range(*slice(s, e, p).indices(x.shape[a]))
    if all(r.step > 0 for r in picks):
        if picks == [range(d) for d in x.shape]:
            return [x]
        return [ctx.b.slice(x, starts=[r.start for r in picks],
                            stops=[max(r.stop, r.start) for r in picks],
                            steps=[r.step for r in picks])]
    out = x  # negative steps: gather the positions, axis by axis
    for a, r in enumerate(picks):
        if r != range(x.shape[a]):
            idx = ctx.b.const(np.array(r, dtype=np.int64), dtypes.i64)
            out = ctx.b.gather(out, idx, axis=a)
    return [out]


def _axes(ctx: NodeContext, rank: int, input_index: int) -> list[int] | None:
    axes = ctx.ints_from("axes", input_index, "axes")
    return None if axes is None else sorted(ctx.axis(a, rank) for a in axes)


@converter("Squeeze")
def _squeeze(ctx: NodeContext):
    x = ctx.x(0)
    axes = _axes(ctx, x.type.rank, 1)
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    return [ctx.b.squeeze(x, axes=tuple(axes)) if axes else x]


@converter("Unsqueeze")
def _unsqueeze(ctx: NodeContext):
    x = ctx.x(0)
    raw = ctx.ints_from("axes", 1, "axes") or []
    out_rank = x.type.rank + len(raw)
    axes = sorted(ctx.axis(a, out_rank) for a in raw)
    if len(set(axes)) != len(axes):
        ctx.unsupported(f"axes {raw} repeat an axis")
    return [ctx.b.expand_dims(x, axes=tuple(axes)) if axes else x]


@converter("Gather")
def _gather(ctx: NodeContext):
    x, idx = ctx.x(0), ctx.x(1)
    axis = ctx.axis(ctx.attr("axis", 0), x.type.rank)
    n = x.shape[axis]
    if idx.kind == "const":
        data = idx.data.astype(np.int64)
        if data.size and (data.min() < -n or data.max() >= n):
            ctx.unsupported(f"index out of range for axis {axis} of size {n}")
        idx = ctx.b.const(np.where(data < 0, data + n, data), dtypes.i64)
    else:
        # Negative indices count from the end, as in numpy.
        neg = ctx.b.less(idx, ctx.scalar(0, idx))
        idx = ctx.b.where(neg, ctx.b.add(idx, ctx.scalar(n, idx)), idx)
    return [ctx.b.gather(x, idx, axis=axis)]


def _edge_indices(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index of each padded position along one axis for edge/reflect/wrap padding."""
    pos = np.arange(-lo, n + hi)
    if mode == "edge":
        return np.clip(pos, 0, n - 1)
    if mode == "wrap":
        return np.mod(pos, n)
    period = 2 * (n - 1)  # reflect: ... 2 1 | 0 1 2 ... n-1 | n-2 ...
    m = np.mod(pos, period) if period else np.zeros_like(pos)
    return np.where(m < n, m, period - m)


@converter("Pad", until=10)
def _pad_2(ctx: NodeContext):
    """Pad-2: pads and the fill value are attributes."""
    x = ctx.x(0)
    return _pad_on(ctx, x, [int(p) for p in ctx.attr("pads")], list(range(x.type.rank)),
                   float(ctx.attr("value", 0.0)))


@converter("Pad", since=11)
def _pad(ctx: NodeContext):
    """Pad-11 on: pads, the fill value and (18 on) the axes are inputs."""
    x = ctx.x(0)
    rank = x.type.rank
    pads = ctx.const_ints(1, "pads")
    axes = [ctx.axis(a, rank) for a in ctx.const_ints(3, "axes")] if ctx.has_input(3) \
        else list(range(rank))
    value = 0.0
    if ctx.has_input(2):
        cv = np.asarray(ctx.const(2, "constant_value")).reshape(-1)
        if cv.size != 1:
            raise OnnxError(f"Pad: constant_value must hold one element, it holds {cv.size}")
        value = float(cv[0])
    return _pad_on(ctx, x, pads, axes, value)


def _pad_on(ctx: NodeContext, x: Value, pads: list[int], axes: list[int], value: float):
    rank = x.type.rank
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        ctx.unsupported(f"mode={mode!r}")
    if len(pads) != 2 * len(axes):
        ctx.unsupported(f"{len(pads)} pads for {len(axes)} axes")
    low, high = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        low[a], high[a] = pads[k], pads[k + len(axes)]
    out = x
    # Negative pads crop.
    if any(v < 0 for v in low + high):
        out = ctx.b.slice(out, starts=[max(-v, 0) for v in low],
                          stops=[d - max(-v, 0) for d, v in zip(x.shape, high)],
                          steps=[1] * rank)
        low, high = [max(v, 0) for v in low], [max(v, 0) for v in high]
    if not any(low + high):
        return [out]
    if mode == "constant":
        return [ctx.b.pad(out, low=low, high=high, interior=[0] * rank, value=value)]
    for a in range(rank):
        if low[a] or high[a]:
            n = out.shape[a]
            if n == 0 or (mode == "reflect" and (low[a] >= n or high[a] >= n)):
                ctx.unsupported(f"{mode} padding of {low[a]}/{high[a]} on an axis of size {n}")
            idx = _edge_indices(n, low[a], high[a], mode)
            out = ctx.b.gather(out, ctx.b.const(idx.astype(np.int64), dtypes.i64), axis=a)
    return [out]


@converter("Expand")
def _expand(ctx: NodeContext):
    x = ctx.x(0)
    shape = ctx.const_ints(1, "the shape")
    try:
        out = tuple(np.broadcast_shapes(x.shape, tuple(shape)))
    except ValueError:
        raise Unsupported(f"shape {shape} does not broadcast with {x.type}") from None
    if out != x.shape and len(out) > x.type.rank:
        x = ctx.b.reshape(x, (1,) * (len(out) - x.type.rank) + x.shape)
    return [ctx.b.broadcast(x, out)]


@converter("Tile")
def _tile(ctx: NodeContext):
    x = ctx.x(0)
    reps = ctx.const_ints(1, "repeats")
    if len(reps) != x.type.rank or any(r < 0 for r in reps):
        ctx.unsupported(f"repeats {reps} for {x.type}")
    if all(r == 1 for r in reps):
        return [x]
    # (d0, d1) -> (1, d0, 1, d1) -> (r0, d0, r1, d1) -> (r0*d0, r1*d1)
    inter = tuple(v for d in x.shape for v in (1, d))
    big = tuple(v for r, d in zip(reps, x.shape) for v in (r, d))
    y = ctx.b.broadcast(ctx.b.reshape(x, inter), big)
    return [ctx.b.reshape(y, tuple(r * d for r, d in zip(reps, x.shape)))]


@converter("Range")
def _range(ctx: NodeContext):
    vals = []
    for i, name in enumerate(("start", "limit", "delta")):
        v = np.asarray(ctx.const(i, name))
        if v.size != 1:
            raise OnnxError(f"Range: {name} must be a scalar, got shape {list(v.shape)}")
        vals.append(v.reshape(()).item())
    start, limit, delta = vals
    if delta == 0 or not all(np.isfinite(vals)):
        raise OnnxError(f"Range: start={start}, limit={limit}, delta={delta} is not a range")
    ctx.check_size((max(int(np.ceil((limit - start) / delta)), 0),), "the range's length")
    dt = ctx.x(0).dtype
    return [ctx.b.const(np.arange(start, limit, delta).astype(dt.np_dtype), dt)]


@converter("Upsample")
def _upsample(ctx: NodeContext):
    """Upsample-7 (scales attribute) and -9 (scales input): each axis's size times its
    scale, floored; output position o reads input position o / scale (asymmetric
    coordinates, as ONNX Runtime's Upsample), "nearest" rounding it down (up for a scale
    below 1, as ORT) and "linear" interpolating between its neighbours, axis by axis."""
    x = ctx.x(0)
    raw = ctx.attr("scales") if ctx.opset < 9 else ctx.const(1, "scales")
    scales = [float(v) for v in np.asarray(raw, dtype=np.float64).reshape(-1)]
    if len(scales) != x.type.rank or any(not np.isfinite(v) or v <= 0 for v in scales):
        raise OnnxError(f"Upsample: scales {scales} for {x.type} (one positive scale per axis)")
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        ctx.unsupported(f"mode={mode!r}")
    if mode == "linear" and not x.dtype.is_float:
        ctx.unsupported(f"linear upsampling of {x.dtype} tensors")
    out = x
    for a, (n, scale) in enumerate(zip(x.shape, scales)):
        m = int(np.floor(n * scale))
        if scale == 1.0 or n == 0:
            continue
        pos = np.arange(m, dtype=np.float64) / scale
        if mode == "nearest":
            src = np.minimum(np.ceil(pos) if scale < 1 else np.floor(pos), n - 1).astype(np.int64)
            out = ctx.b.gather(out, ctx.b.const(src, dtypes.i64), axis=a)
            continue
        pos = np.minimum(pos, n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        w = (pos - lo).reshape((m,) + (1,) * (x.type.rank - a - 1))
        near = ctx.b.gather(out, ctx.b.const(lo, dtypes.i64), axis=a)
        far = ctx.b.gather(out, ctx.b.const(hi, dtypes.i64), axis=a)
        out = ctx.b.add(ctx.b.mul(near, ctx.b.const(1.0 - w, x.dtype)),
                        ctx.b.mul(far, ctx.b.const(w, x.dtype)))
    return [out]


@converter("Scatter", since=9, needs=("ScatterElements",))
def _scatter(ctx: NodeContext):
    """Scatter-9 is ScatterElements-11 under its old name (deprecated at opset 11)."""
    return ctx.delegate("ScatterElements", max(ctx.opset, 11))
