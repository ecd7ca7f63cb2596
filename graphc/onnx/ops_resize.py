"""ONNX Resize (opset 11 and newer) from registry ops at import.

Resize is separable: each resized axis maps every output position to a source coordinate
(the coordinate_transformation_mode), and reads a few input positions with weights (the
mode: nearest, linear, cubic; antialias widens the linear/cubic filter when downsampling;
exclude_outside drops taps outside the input and renormalises). graphc computes those taps
and weights at import in float64 from the static shapes, then applies them per axis:
nearest is one `gather` (exact, any dtype); linear and cubic are a gather of the n taps,
a multiply by the constant weights and a sum over the taps. tf_crop_and_resize writes
extrapolation_value where the source coordinate leaves the input, axis by axis, as ONNX's
reference does. Scales and sizes (and roi) must be known at import: they fix the shape.
"""
from __future__ import annotations

import math

import numpy as np

from ..ir import dtypes
from ..ir.graph import Value
from .context import NodeContext, converter
from .errors import OnnxError

_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
          "asymmetric", "tf_crop_and_resize", "tf_half_pixel_for_nn")  # the last: opset 11-12


def source_coords(mode: str, n_out: int, n_in: int, scale: float,
                  roi: tuple[np.generic, np.generic] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The source coordinate of every output position, and (tf_crop_and_resize only) which
    positions fall outside the input. roi's start and end keep their own dtype (f32
    usually), and its difference and start offset are rounded in it, as ONNX's reference
    and ONNX Runtime compute them: a nearest tap on a tie depends on it."""
    y = np.arange(n_out, dtype=np.float64)
    width = scale * n_in  # ONNX's (possibly fractional) output length
    outside = None
    if mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = (n_in / 2) * (1 - n_out / width)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        x = np.full(n_out, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "align_corners":
        x = np.zeros(n_out) if width == 1 else y * (n_in - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_half_pixel_for_nn":
        x = (y + 0.5) / scale
    elif mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (np.float32(0.0), np.float32(1.0))
        if width == 1:
            x = np.full(n_out, (hi - lo) * (n_in - 1) / 2)
        else:
            x = y * (hi - lo) * (n_in - 1) / (width - 1)
        x = x + lo * (n_in - 1)
        outside = (x < 0) | (x > n_in - 1)
    else:
        raise ValueError(mode)
    return x, outside


def _cubic(d: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with coefficient a, at distances d."""
    d = np.abs(d)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def taps(mode: str, x: np.ndarray, n_in: int, scale: float, *, nearest_mode: str = "",
         cubic_a: float = -0.75, antialias: bool = False,
         exclude_outside: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(indices, weights), each (n_out, n): the input positions each output reads (clamped
    to the edge) and their weights. `ratio` is ONNX's: x - floor(x), but 1 at integers
    (the window then prefers the left neighbour)."""
    p = np.floor(x)
    integral = x == p
    ratio = np.where(integral, 1.0, x - p)
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            up = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            up = ratio >= 0.5
        elif nearest_mode == "floor":
            up = np.zeros_like(ratio, bool)
        elif nearest_mode == "ceil":
            up = np.ones_like(ratio, bool)
        else:
            raise ValueError(nearest_mode)
        up = np.where(integral, True, up)  # an integral x selects itself
        pos = np.where(integral, x, p + up)
        return np.clip(pos, 0, n_in - 1).astype(np.int64)[:, None], np.ones((len(x), 1))
    s = min(scale, 1.0) if antialias else 1.0
    if mode == "linear":
        first = int(np.floor(-1 / s) + 1) if antialias else 0
        n = 2 - 2 * first
        offs = np.arange(first, first + n)
        w = np.clip(1 - np.abs((offs[None, :] - ratio[:, None]) * s), 0, 1)
    elif mode == "cubic":
        first = int(np.floor(-2 / s) + 1) if antialias else -1
        n = 2 - 2 * first
        offs = np.arange(first, first + n)
        w = _cubic((offs[None, :] - ratio[:, None]) * s, cubic_a)
    else:
        raise ValueError(mode)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    # the n integer positions nearest x, ties to the left: start at p - n/2 (+1 off-grid)
    start = np.where(integral, p - n // 2, p - n // 2 + 1)
    idx = (start[:, None] + np.arange(n)[None, :]).astype(np.int64)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, n_in - 1), w


def _optional_const(ctx: NodeContext, i: int, what: str) -> np.ndarray | None:
    if not ctx.has_input(i):
        return None
    v = np.asarray(ctx.const(i, what))
    return None if v.size == 0 else v


def plan(in_shape: tuple[int, ...], scales: np.ndarray | None, sizes: np.ndarray | None,
         axes: list[int], policy: str) -> tuple[list[float], list[int]]:
    """Per-axis scale and output size (ONNX's rules: floor(in * scale) for scales;
    sizes with keep_aspect_ratio_policy)."""
    r = len(in_shape)
    scale = [1.0] * r
    out = list(in_shape)
    if sizes is not None:
        want = [int(v) for v in sizes.reshape(-1)]
        for a, v in zip(axes, want):
            out[a] = v
            scale[a] = v / in_shape[a]
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            common = pick(scale[a] for a in axes)
            for a in axes:
                scale[a] = common
                out[a] = int(common * in_shape[a] + 0.5)
    else:
        for a, v in zip(axes, [float(v) for v in scales.reshape(-1)]):
            scale[a] = v
            out[a] = int(math.floor(v * in_shape[a]))
    return scale, out


@converter("Resize")
def _resize(ctx: NodeContext):
    x0 = ctx.x(0)
    rank = x0.type.rank
    mode = ctx.attr("mode", "nearest")
    coord = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    antialias = bool(ctx.attr("antialias", 0))
    if mode not in ("nearest", "linear", "cubic"):
        raise OnnxError(f"Resize: mode={mode!r}")
    if coord not in _MODES:
        raise OnnxError(f"Resize: coordinate_transformation_mode={coord!r}")
    if nearest_mode not in ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil"):
        raise OnnxError(f"Resize: nearest_mode={nearest_mode!r}")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise OnnxError(f"Resize: keep_aspect_ratio_policy={policy!r}")
    if len(ctx.inputs) < 3:
        ctx.unsupported("Resize-10's (X, scales) form (import it at opset 11 or newer)")
    axes = [ctx.axis(a, rank) for a in ctx.attr("axes", list(range(rank)))]
    roi = _optional_const(ctx, 1, "roi") if coord == "tf_crop_and_resize" else None
    scales = _optional_const(ctx, 2, "scales")
    sizes = _optional_const(ctx, 3, "sizes")
    if (scales is None) == (sizes is None):
        raise OnnxError("Resize: give exactly one of scales and sizes")
    given = sizes if sizes is not None else scales
    if given.size != len(axes):
        raise OnnxError(f"Resize: {given.size} scales/sizes for {len(axes)} axes")
    if scales is not None and (scales <= 0).any():
        raise OnnxError(f"Resize: scales {scales.tolist()} must be positive")
    if roi is not None and roi.size != 2 * len(axes):
        raise OnnxError(f"Resize: roi has {roi.size} values for {len(axes)} axes")
    scale, out = plan(x0.shape, scales, sizes, axes, policy)
    ctx.check_size(out, "the output shape")
    if mode != "nearest" and not x0.dtype.is_float:
        ctx.unsupported(f"{mode} resizing of {x0.dtype} tensors")
    b = ctx.b
    x = b.cast(x0, to=dtypes.f32) if x0.dtype == dtypes.f16 and mode != "nearest" else x0
    for j, a in enumerate(axes):
        n_in = x.shape[a]
        box = (roi.reshape(-1)[j], roi.reshape(-1)[len(axes) + j]) if roi is not None else None
        identity = math.isclose(scale[a], 1.0) and out[a] == n_in and \
            (box is None or (math.isclose(float(box[0]), 0.0) and math.isclose(float(box[1]), 1.0)))
        if identity:
            continue
        if out[a] == 0 or n_in == 0:
            shape = list(x.shape)
            shape[a] = out[a]
            x = b.const(np.zeros(shape, x.dtype.np_dtype), x.dtype)
            continue
        coords, outside = source_coords(coord, out[a], n_in, scale[a], box)
        idx, w = taps(mode, coords, n_in, scale[a], nearest_mode=nearest_mode,
                      cubic_a=float(ctx.attr("cubic_coeff_a", -0.75)), antialias=antialias,
                      exclude_outside=bool(ctx.attr("exclude_outside", 0)))
        x = _apply(ctx, x, a, idx, w)
        if outside is not None and outside.any():
            mshape = [1] * rank
            mshape[a] = out[a]
            fill = b.const(np.asarray(float(ctx.attr("extrapolation_value", 0.0))), x.dtype)
            x = b.where(b.const(outside.reshape(mshape), dtypes.bool_), fill, x)
    return [x if x.dtype == x0.dtype else b.cast(x, to=x0.dtype)]


def _apply(ctx: NodeContext, x: Value, axis: int, idx: np.ndarray, w: np.ndarray) -> Value:
    b = ctx.b
    n_out, n = idx.shape
    if n == 1:
        return b.gather(x, b.const(idx[:, 0], dtypes.i64), axis=axis)
    picked = b.gather(x, b.const(idx, dtypes.i64), axis=axis)        # (..., out, n, ...)
    wshape = (n_out, n) + (1,) * (x.type.rank - axis - 1)
    weighted = b.mul(picked, b.const(w.reshape(wshape), x.dtype))
    return b.sum(weighted, axes=(axis + 1,), keepdims=False)
