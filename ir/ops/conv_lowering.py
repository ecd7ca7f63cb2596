"""Convolution kernels: the forward paths, and the per-image backward (Caffe's lowering).

The decompositions in conv.py build the whole batch's im2col matrix, (N, C*KH*KW, OH*OW):
nine times the input for a 3x3 kernel, and for the weight gradient also one weight-sized
product per image before the batch sum. Here each kernel walks the images instead, split
into up to `RUNS` runs that execute in parallel; a run owns one image's scratch (and, for
the weight gradient, one partial weight sum), so the scratch is RUNS x (one image's)
whatever the batch. A batch of one runs its loops and its GEMM on the whole team instead.

conv2d picks one of six forward paths (tests/backends/test_llvm_conv.py reaches each):
  depthwise       direct sums over padded planes (`padded_plane_runs`), no GEMM;
  direct          a dense convolution with <= DIRECT_TERMS products per output and rows of
                  >= 16 outputs (1x1 over few channels): weighted tap sums, no GEMM;
  dense map       a constant weight over images no larger than its window (3x3 over 2x2):
                  the convolution's matrix, built at lowering time, times the batch;
  batched         1 < N <= RUNS images of <= BATCH_PIXELS outputs: one GEMM over the whole
                  batch's columns, scattered to NCHW with the epilogue;
  pointwise       1x1, stride 1, unpadded: the GEMM reads the image itself;
  per image       the image copied into padded, phase-split planes (`PaddedPlane`), its
                  columns built per L2-sized chunk of output rows, each chunk's GEMM run
                  while they are in cache.
Columns go straight into the GEMM library's packed panels (K.Gemm.b_panels) when the
backend gave its panel width and whole output rows fill whole panels.

All compute f16 in f32 (converted into scratch), as the decompositions do.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from .window import (RUNS, PaddedPlane, col2im_image, im2col_image, image_runs, padded_plane_runs)  # noqa: F401

def _per_group(ctx, groups: int, parallel: bool, gemm: Callable[[K.Expr], K.Gemm]) -> list:
    """gemm(group) for every channel group: one GEMM, or a loop over the groups (parallel
    when the caller is not inside a parallel loop already) so that grouped and depthwise
    convolutions do not unroll into one GEMM statement per group."""
    if groups == 1:
        return [gemm(L.c64(0))]
    g = ctx.var("grp")
    return [K.For(g, groups, [gemm(g)], "parallel" if parallel else "serial")]


def _compute_dtype(dt: dtypes.DType) -> dtypes.DType:
    return dtypes.f32 if dt == dtypes.f16 else dt


def _geometry(a: dict, kernel: tuple[int, int]) -> dict:
    return {"kernel": tuple(kernel), "strides": a["strides"], "padding": a["padding"],
            "dilations": a["dilations"]}


def _copy(ctx, src: str, src_dt, src_base, dst: str, dst_dt, dst_base, size: int, parallel: bool):
    """dst[dst_base + i] = src[src_base + i] converted, for i < size."""
    def body(vs):
        val = K.Load(src, L.add(src_base, vs[0]), src_dt)
        return [K.Store(dst, L.add(dst_base, vs[0]), val if src_dt == dst_dt else K.Cast(val, dst_dt))]
    return ctx.loops([size], body, parallel=parallel)


def _fill(ctx, dst: str, base, size: int, dt, parallel: bool):
    return ctx.loops([size], lambda vs: [K.Store(dst, L.add(base, vs[0]), K.Const(0.0, dt))],
                     parallel=parallel)


class _Operand:
    """A whole operand in the compute dtype: the buffer itself, or a converted copy."""

    def __init__(self, ctx, value, ct, scratch: list, pre: list) -> None:
        self.name = ctx.buf(value)
        if value.dtype != ct:
            src = self.name
            self.name = ctx.temp(value.type.size, ct)
            scratch.append(self.name)
            pre += _copy(ctx, src, value.dtype, L.c64(0), self.name, ct, L.c64(0), value.type.size, True)


def conv_gemm_shape(node) -> tuple[int, ...]:
    """conv2d's result as its per-image GEMMs compute it: (N, groups, K/groups, OH*OW)."""
    n, k, oh, ow = node.outputs[0].shape
    g = node.attrs["groups"]
    return (n, g, k // g, oh * ow)


def _epilogue_at(epilogue, n, group, row, col, acc: K.Expr, dtype) -> K.Expr:
    """The fused epilogue (passes/fusion.py) evaluated at one result element, outside a
    Gemm: with its row and column variables and the accumulated value bound."""
    if epilogue is None:
        return acc
    return K.substitute(epilogue([n, group]), {K.GEMM_ROW: row, K.GEMM_COL: col,
                                               K.LocalRef("acc", dtype): acc})


def _weighted_sum(terms: list, ct) -> K.Expr:
    """0 + x0*w0 + x1*w1 + ... left to right, each step free to be one fused multiply-add
    (K.Binary.contract): half the instructions of the tap sums, and one rounding per tap.
    Starting from +0 (the first step's fma costs what its multiply did) makes a window of
    zeros (padding) sum to +0 as numpy's does, not -0 from 0 * negative weight, whose
    rsqrt or reciprocal would be -inf."""
    acc: K.Expr = K.Const(0.0 if ct.is_float else 0, ct)
    for x, w in terms:
        acc = K.Binary("add", acc, K.Binary("mul", x, w, ct, contract=True), ct, contract=True)
    return acc


def _depthwise(ctx, node, ct, out, epilogue) -> None:
    """One input channel per group (depthwise, any channel multiplier): a GEMM per group
    would have one row and a few columns, so each output plane is summed directly over the
    kernel taps of a zero-padded copy of its input plane, planes in parallel runs, the
    taps' weights held in locals and the loop over output columns vectorised."""
    x, w = node.inputs
    y = node.outputs[0]
    _, c_, hh, ww = x.shape
    k_, _, kh, kw = w.shape
    mult = k_ // c_
    n_img, _, oh_n, ow_n = y.shape
    xb, wb, yb = ctx.buf(x), ctx.buf(w), ctx.buf(out)

    def div(e, d):
        return K.Binary("div", e, L.c64(d), dtypes.i64)

    def mod(e, d):
        return K.Binary("mod", e, L.c64(d), dtypes.i64)

    def src_of(plane):  # plane n*K + k reads input plane n*C + k // mult
        return L.mul(L.add(L.mul(div(plane, k_), L.c64(c_)), div(mod(plane, k_), mult)), L.c64(hh * ww))

    def per_plane(plane, tap):
        k = mod(plane, k_)
        weights, decls = [], []
        for t in range(kh * kw):
            wv = K.LocalRef(ctx.var("w").name, ct)
            v = K.Load(wb, L.add(L.mul(k, L.c64(kh * kw)), L.c64(t)), w.dtype)
            decls.append(K.Declare(wv, v if ct == w.dtype else K.Cast(v, ct)))
            weights.append(wv)

        def row(vs):
            oh, ow = vs
            acc = _weighted_sum([(tap(oh, ow, t // kw, t % kw), wv) for t, wv in enumerate(weights)], ct)
            value = acc if ct == y.dtype else K.Cast(acc, y.dtype)
            value = _epilogue_at(epilogue, div(plane, k_), div(k, mult), mod(k, mult),
                                 L.linear_index([oh, ow], [ow_n, 1]), value, y.dtype)
            return [K.Store(yb, L.linear_index([plane, oh, ow], [oh_n * ow_n, ow_n, 1]), value)]
        return decls + ctx.loops([oh_n, ow_n], row, parallel=False)
    stmts, pad = padded_plane_runs(ctx, n_img * k_, x.shape, x.dtype, xb, _geometry(node.attrs, (kh, kw)),
                                   src_of, 0.0, ct, per_plane)
    ctx.kernel(stmts, [xb, wb] + _epilogue_loads(epilogue), [yb] + ([pad] if pad else []),
               suffix="_fused" if epilogue is not None else "")


DIRECT_TERMS = 16  # a dense convolution with at most this many products per output sums them directly


def _direct(ctx, node, ct, out, epilogue) -> None:
    """A dense convolution with few products per output (C*KH*KW <= DIRECT_TERMS, rows of
    at least 16 outputs: 1x1 convolutions of few channels): each image is copied into
    padded planes once, and every output plane is the sum of its C*KH*KW weighted taps,
    the weights held in locals and the loop over output columns vectorised. For such
    products a GEMM is mostly overhead: a K of 8 leaves its tiles 8 steps of work each
    and a trip through the epilogue per tile (2x8 -> 48 channels at 32x32: 87 -> 53 us
    per call). With 27 products (3x3 over RGB) the GEMM was still ~10% faster."""
    x, w = node.inputs
    y = node.outputs[0]
    n_img, c_, hh, ww = x.shape
    k_, _, kh, kw = w.shape
    _, _, oh_n, ow_n = y.shape
    xb, wb, yb = ctx.buf(x), ctx.buf(w), ctx.buf(out)
    layout = PaddedPlane(x.shape, _geometry(node.attrs, (kh, kw)))
    in_place = not any(node.attrs["padding"]) and layout.sw == 1 and ct == x.dtype
    runs = min(n_img, RUNS)
    pad = None if in_place else ctx.temp(runs * c_ * layout.size, ct)
    terms = c_ * kh * kw
    flat = in_place and (kh, kw) == (1, 1) and tuple(node.attrs["strides"]) == (1, 1)  # one loop

    def body(n, run, par):
        src = L.mul(n, L.c64(c_ * hh * ww))
        base = src if in_place else L.mul(run, L.c64(c_ * layout.size))
        buf = xb if in_place else pad
        s = []
        if not in_place:
            s += layout.copy(ctx, xb, x.dtype, src, pad, base, ct, planes=c_)
        k = ctx.var("k")
        weights, decls = [], []
        for t in range(terms):
            wv = K.LocalRef(ctx.var("w").name, ct)
            v = K.Load(wb, L.add(L.mul(k, L.c64(terms)), L.c64(t)), w.dtype)
            decls.append(K.Declare(wv, v if ct == w.dtype else K.Cast(v, ct)))
            weights.append(wv)

        def row(vs):
            if flat:  # output position p reads position p of every input plane
                oh, ow = K.Binary("div", vs[0], L.c64(ow_n), dtypes.i64), K.Binary("mod", vs[0], L.c64(ow_n), dtypes.i64)
            else:
                oh, ow = vs
            terms = []
            for t, wv in enumerate(weights):
                ci, tap = divmod(t, kh * kw)
                plane = L.add(base, L.c64(ci * (layout.size if not in_place else hh * ww)))
                terms.append((K.Load(buf, L.add(plane, vs[0]), ct) if flat
                              else layout.tap(buf, plane, oh, ow, tap // kw, tap % kw, ct), wv))
            acc = _weighted_sum(terms, ct)
            value = acc if ct == y.dtype else K.Cast(acc, y.dtype)
            col = vs[0] if flat else L.linear_index([oh, ow], [ow_n, 1])
            value = _epilogue_at(epilogue, n, L.c64(0), k, col, value, y.dtype)
            return [K.Store(yb, L.linear_index([n, k, col], [k_ * oh_n * ow_n, oh_n * ow_n, 1]), value)]
        shape = [oh_n * ow_n] if flat else [oh_n, ow_n]
        s.append(K.For(k, k_, decls + ctx.loops(shape, row, parallel=False), "serial"))
        return s
    stmts, _ = image_runs(ctx, n_img, body)
    if pad is not None:
        stmts = layout.fill(ctx, pad, runs * c_, 0.0, ct) + stmts
    ctx.kernel(stmts, [xb, wb] + _epilogue_loads(epilogue), [yb] + ([pad] if pad else []),
               suffix="_fused" if epilogue is not None else "")


def _epilogue_loads(epilogue) -> list[str]:
    """Buffers a fused epilogue reads."""
    if epilogue is None:
        return []
    e = epilogue([L.c64(0), L.c64(0)])
    return list(dict.fromkeys(x.buffer for x in K.walk_exprs(e) if isinstance(x, K.Load)))


COLS_CHUNK_BYTES = 128 * 1024  # columns built per GEMM: they stay in L2 until it packs them


def _chunk_rows(rows: int, oh_n: int, ow_n: int, itemsize: int) -> int:
    """Output rows per column chunk: the largest divisor of OH whose columns fit in
    COLS_CHUNK_BYTES (at least one row)."""
    fits = [r for r in range(1, oh_n + 1) if oh_n % r == 0 and rows * r * ow_n * itemsize <= COLS_CHUNK_BYTES]
    return max(fits, default=1)


BATCH_PIXELS = 64  # images with at most this many output pixels share one GEMM over the batch
BATCH_COLS_BYTES = 512 * 1024  # ... when the whole batch's columns take at most this many bytes


def _batched(ctx, node, out, epilogue, ct, wt: str, pre: list, scratch: list) -> None:
    """Small images (a few output pixels each): one GEMM over the whole batch's columns,
    (K, C*KH*KW) @ (C*KH*KW, N*OH*OW), instead of one per image with a handful of columns;
    the result is scattered to NCHW with the epilogue applied on the way."""
    x, w = node.inputs
    y = node.outputs[0]
    a = node.attrs
    n_img, c_, hh, ww = x.shape
    k_, cg, kh, kw = w.shape
    groups, (oh_n, ow_n) = a["groups"], y.shape[2:]
    hw = oh_n * ow_n
    kg, rg, rows, ncols = k_ // groups, cg * kh * kw, c_ * kh * kw, n_img * hw
    xb, yb = ctx.buf(x), ctx.buf(out)
    layout = PaddedPlane(x.shape, _geometry(a, (kh, kw)))
    planes = n_img * c_
    pad, cols, res = ctx.temp(planes * layout.size, ct), ctx.temp(rows * ncols, ct), ctx.temp(k_ * ncols, ct)
    body = layout.fill(ctx, pad, planes, 0.0, ct)
    body += layout.copy(ctx, xb, x.dtype, L.c64(0), pad, L.c64(0), ct, planes=planes)
    # Columns in the GEMM's packed layout (K.Gemm.b_panels) when panels of pw columns hold
    # whole rows of one image (pw | OW) or whole groups of rows (OW | pw, pw/OW | OH). The tap
    # nests then run over (row, panel in row, lane) or (panel in image, row in panel, column).
    pw = ctx.gemm_panels.get(ct.name, 0) if groups == 1 else 0
    whole_rows = bool(pw) and ow_n % pw == 0
    if whole_rows:
        split = (oh_n, ow_n // pw, pw)
    elif pw and pw % ow_n == 0 and oh_n % (pw // ow_n) == 0:
        split = (oh_n // (pw // ow_n), pw // ow_n, ow_n)
    else:
        pw, split = 0, (oh_n, 1, ow_n)
    for t in range(kh * kw):  # one nest per tap over every channel and image: few, longer loops
        def copy(vs, t=t):
            c, n, a0, a1, a2 = vs
            i, j = (a0, L.add(L.mul(a1, L.c64(pw)), a2)) if whole_rows else (L.add(L.mul(a0, L.c64(split[1])), a1), a2)
            v = layout.tap(pad, L.mul(L.add(L.mul(n, L.c64(c_)), c), L.c64(layout.size)), i, j, t // kw, t % kw, ct)
            row = L.add(L.mul(c, L.c64(kh * kw)), L.c64(t))
            if pw:
                panel = L.add(L.mul(n, L.c64(hw // pw)), L.add(L.mul(a0, L.c64(split[1])), a1) if whole_rows else a0)
                lane = a2 if whole_rows else L.add(L.mul(a1, L.c64(ow_n)), a2)
                at = L.add(L.linear_index([panel, row], [rows * pw, pw]), lane)
            else:
                at = L.linear_index([row, n, i, j], [ncols, hw, ow_n, 1])
            return [K.Store(cols, at, v)]
        body += ctx.loops([c_, n_img, *split], copy, parallel=False)
    body += _per_group(ctx, groups, True, lambda gi: K.Gemm(
        wt, cols, res, kg, ncols, rg, lda=rg, ldb=ncols, ldc=ncols, offset_a=L.mul(gi, L.c64(kg * rg)),
        offset_b=L.mul(gi, L.c64(rg * ncols)), offset_c=L.mul(gi, L.c64(kg * ncols)), b_panels=pw))

    def scatter(vs):
        img, k, p = vs
        val = K.Load(res, L.linear_index([k, img, p], [ncols, hw, 1]), ct)
        val = val if ct == y.dtype else K.Cast(val, y.dtype)
        gi, row = K.Binary("div", k, L.c64(kg), dtypes.i64), K.Binary("mod", k, L.c64(kg), dtypes.i64)
        return [K.Store(yb, L.linear_index([img, k, p], [k_ * hw, hw, 1]),
                        _epilogue_at(epilogue, img, gi, row, p, val, y.dtype))]
    body += ctx.loops([n_img, k_, hw], scatter)
    ctx.kernel(pre + body, [xb, ctx.buf(w)] + _epilogue_loads(epilogue), [yb] + scratch + [pad, cols, res],
               suffix="_fused" if epilogue is not None else "")


DENSE_MAP_ELEMENTS = 1 << 20  # the largest dense-map matrix (elements) a convolution may get


def _dense_map(node, ct) -> np.ndarray | None:
    """A convolution with a constant weight over images no larger than its kernel window
    (H*W <= KH*KW: ResNet's 3x3 layers at 2x2) as the dense linear map it is, when every
    input is a tap of every output (so T holds no structural zero),
    T[(c, ih, iw), (k, oh, ow)] = w[k, c, ki, kj] where input (ih, iw) is output (oh, ow)'s
    tap (ki, kj), else 0; or None. Then y = x @ T is one GEMM over the batch in NCHW, no
    padding, no columns, no scatter, and fewer multiplications than im2col, which also
    multiplies every tap that falls into the padding (36 per channel pair at 2x2, vs 16)."""
    x, w = node.inputs
    y = node.outputs[0]
    a = node.attrs
    _, c_, hh, ww = x.shape
    k_, _, kh, kw = w.shape
    _, _, oh_n, ow_n = y.shape
    if (w.kind != "const" or w.data is None or a["groups"] != 1 or hh * ww > kh * kw
            or x.dtype != ct or y.dtype != ct or c_ * hh * ww * k_ * oh_n * ow_n > DENSE_MAP_ELEMENTS):
        return None
    (sh, sw), (pt, _, pl, _), (dh, dw) = a["strides"], a["padding"], a["dilations"]
    wd = np.asarray(w.data, dtype=ct.np_dtype).reshape(k_, c_, kh, kw)
    t = np.zeros((c_, hh, ww, k_, oh_n, ow_n), ct.np_dtype)
    tap = np.zeros((hh, ww, oh_n, ow_n), bool)
    for ki in range(kh):
        for kj in range(kw):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    ih, iw = oh * sh - pt + ki * dh, ow * sw - pl + kj * dw
                    if 0 <= ih < hh and 0 <= iw < ww:
                        t[:, ih, iw, :, oh, ow] += wd[:, :, ki, kj].T
                        tap[ih, iw, oh, ow] = True
    if not tap.all():  # a zero of T would multiply an input that is no tap: 0 * inf or
        return None    # 0 * NaN there would reach outputs the convolution never reads it for
    return t.reshape(c_ * hh * ww, k_ * oh_n * ow_n)


def _dense(ctx, node, out, epilogue, ct, t) -> None:
    """y (N, K*OH*OW) = x (N, C*H*W) @ t, t a constant laid out as the GEMM's packed panels
    when the backend gave their width; the epilogue sees row k = j // (OH*OW) and column
    p = j % (OH*OW) of image i."""
    x = node.inputs[0]
    n_img = x.shape[0]
    rows, cols = t.shape
    hw = node.outputs[0].shape[2] * node.outputs[0].shape[3]
    pw = ctx.gemm_panels.get(ct.name, 0)
    pw = pw if pw and cols % pw == 0 else 0
    data = t.reshape(rows, cols // pw, pw).transpose(1, 0, 2) if pw else t
    tb = ctx.constant(data.reshape(-1).copy(), ct)
    epi = None
    if epilogue is not None:
        img = ctx.var("img")
        epi = K.substitute(epilogue([img, L.c64(0)]), {
            img: K.GEMM_ROW, K.GEMM_ROW: K.Binary("div", K.GEMM_COL, L.c64(hw), dtypes.i64),
            K.GEMM_COL: K.Binary("mod", K.GEMM_COL, L.c64(hw), dtypes.i64)})
    xb, yb = ctx.buf(x), ctx.buf(out)
    ctx.kernel([K.Gemm(xb, tb, yb, n_img, cols, rows, lda=rows, ldb=cols, ldc=cols, epilogue=epi, b_panels=pw)],
               [xb, tb] + _epilogue_loads(epilogue), [yb], suffix="_fused" if epilogue is not None else "")


def lower_conv2d(ctx, node, out=None, epilogue=None) -> None:
    """y[n] = W @ im2col(x[n]) per group, image by image; depthwise convolutions directly.

    Each image is first copied into zero-padded, phase-split planes (`PaddedPlane`), so
    building its columns is plain copies with no bounds checks and no fill pass; the
    columns are built and multiplied a chunk of output rows at a time (`_chunk_rows`), so
    they are still in L2 when the GEMM packs them. A 1x1, stride-1, unpadded convolution
    multiplies the image itself. With a fused epilogue (registry `lower_epilogue`: bias,
    activation, residual), each GEMM applies it to its finished tiles and the result lands
    in `out`'s buffer."""
    x, w = node.inputs
    y = node.outputs[0]
    out = out if out is not None else y
    a = node.attrs
    n_img, c_, hh, ww = x.shape
    k_, cg, kh, kw = w.shape
    if cg == 1 and a["groups"] == c_ > 1:
        return _depthwise(ctx, node, _compute_dtype(y.dtype), out, epilogue)
    if a["groups"] == 1 and c_ * kh * kw <= DIRECT_TERMS and y.shape[3] >= 16:
        return _direct(ctx, node, _compute_dtype(y.dtype), out, epilogue)
    dense = _dense_map(node, _compute_dtype(y.dtype))
    if dense is not None:
        return _dense(ctx, node, out, epilogue, _compute_dtype(y.dtype), dense)
    groups, (oh_n, ow_n) = a["groups"], y.shape[2:]
    hw = oh_n * ow_n
    kg, rg, rows = k_ // groups, cg * kh * kw, c_ * kh * kw
    ct = _compute_dtype(y.dtype)
    xb, yb = ctx.buf(x), ctx.buf(out)
    scratch: list[str] = []
    pre: list = []
    wt = _Operand(ctx, w, ct, scratch, pre)
    # (at most RUNS images: their scratch then stays that of the per-image runs)
    if 1 < n_img <= RUNS and hw <= BATCH_PIXELS and rows * n_img * hw * ct.itemsize <= BATCH_COLS_BYTES:
        return _batched(ctx, node, out, epilogue, ct, wt.name, pre, scratch)
    geom = _geometry(a, (kh, kw))
    runs = min(n_img, RUNS)
    pointwise = (kh, kw) == (1, 1) and tuple(a["strides"]) == (1, 1) and not any(a["padding"]) \
        and ct == x.dtype
    layout = PaddedPlane(x.shape, geom)
    # A lone image runs its copies and its GEMM on the whole team: one chunk, at top level.
    r_ = oh_n if pointwise or n_img == 1 else _chunk_rows(rows, oh_n, ow_n, ct.itemsize)
    chunk = r_ * ow_n
    # Columns written straight into the GEMM's packed layout (panels of w columns, see
    # K.Gemm.b_panels) when whole output rows fill whole panels: no packing copy.
    width = ctx.gemm_panels.get(ct.name, 0)
    panels = width if not pointwise and groups == 1 and width and ow_n % width == 0 else 0
    pw = panels or ow_n  # columns per panel (without panels, one "panel" per output row)
    pad = None if pointwise else ctx.temp(runs * c_ * layout.size, ct)
    cols = None if pointwise else ctx.temp(runs * rows * chunk, ct)
    ybuf = ctx.temp(runs * k_ * hw, ct) if ct != y.dtype else None

    def body(n, run, par):
        dst, base = (yb, L.mul(n, L.c64(k_ * hw))) if ybuf is None else (ybuf, L.mul(run, L.c64(k_ * hw)))
        s: list = []
        if pointwise:
            b_buf, b_base, first = xb, L.mul(n, L.c64(c_ * hw)), L.c64(0)
        else:
            pad_base = L.mul(run, L.c64(c_ * layout.size))
            team = "parallel" if par and c_ > 1 and rows * chunk >= L.PARALLEL_MIN_ELEMENTS else "serial"
            s += layout.copy(ctx, xb, x.dtype, L.mul(n, L.c64(c_ * hh * ww)), pad, pad_base, ct, planes=c_,
                             parallel=par)
            b_buf, b_base = cols, L.mul(run, L.c64(rows * chunk))
            ch = ctx.var("chunk")
            first = L.mul(ch, L.c64(r_)) if r_ < oh_n else L.c64(0)  # the chunk's first output row
            c2 = ctx.var("c")
            plane = L.add(pad_base, L.mul(c2, L.c64(layout.size)))
            taps = []
            for t in range(kh * kw):
                def copy(vs, t=t):
                    i, q, lane = vs  # output column q*pw + lane of row i: panel i*(OW/pw) + q
                    v = layout.tap(pad, plane, L.add(first, i), L.add(L.mul(q, L.c64(pw)), lane),
                                   t // kw, t % kw, ct)
                    row = L.add(L.mul(c2, L.c64(kh * kw)), L.c64(t))
                    at = (L.linear_index([i, q, row, lane], [ow_n * rows, pw * rows, pw, 1], b_base) if panels
                          else L.linear_index([row, i, L.add(L.mul(q, L.c64(pw)), lane)], [chunk, ow_n, 1], b_base))
                    return [K.Store(cols, at, v)]
                taps += ctx.loops([r_, ow_n // pw, pw], copy, parallel=False)
            im2col = [K.For(c2, c_, taps, team)]
        col0 = L.mul(first, L.c64(ow_n))  # the chunk's first column of the image's result

        def gemm(gi):
            epi = None
            if epilogue is not None and ybuf is None:
                epi = epilogue([n, gi])
                if r_ < oh_n:
                    epi = K.substitute(epi, {K.GEMM_COL: L.add(K.GEMM_COL, col0)})
            return K.Gemm(wt.name, b_buf, dst, kg, chunk, rg, lda=rg, ldb=chunk, ldc=hw,
                          offset_a=L.mul(gi, L.c64(kg * rg)), offset_b=L.add(b_base, L.mul(gi, L.c64(rg * chunk))),
                          offset_c=L.add(L.add(base, L.mul(gi, L.c64(kg * hw))), col0), epilogue=epi,
                          b_panels=panels)
        step = _per_group(ctx, groups, par and pointwise, gemm)
        if not pointwise:
            s += im2col + step if r_ == oh_n else [K.For(ch, oh_n // r_, im2col + step, "serial")]
        else:
            s += step
        if ybuf is not None:  # f16: converted (and the epilogue applied) on the way out
            def convert(vs):
                gi, row, col = vs
                at = L.linear_index([gi, row, col], [kg * hw, hw, 1])
                val = K.Cast(K.Load(ybuf, L.add(base, at), ct), y.dtype)
                return [K.Store(yb, L.add(L.mul(n, L.c64(k_ * hw)), at),
                                _epilogue_at(epilogue, n, gi, row, col, val, y.dtype))]
            s += ctx.loops([groups, kg, hw], convert, parallel=par)
        return s
    run, _ = image_runs(ctx, n_img, body)
    if pad is not None:
        run = layout.fill(ctx, pad, runs * c_, 0.0, ct) + run
    scratch += [b for b in (pad, cols, ybuf) if b]
    ctx.kernel(pre + run, [xb, ctx.buf(w)] + _epilogue_loads(epilogue), [yb] + scratch,
               suffix="_fused" if epilogue is not None else "")


def lower_conv2d_grad_input(ctx, node) -> None:
    """dx[n] = col2im(W^T @ g[n]) per group, image by image."""
    g, w = node.inputs
    dx = node.outputs[0]
    a = node.attrs
    n_img, c_, hh, ww = a["input_shape"]
    k_, cg, kh, kw = w.shape
    groups, hw = a["groups"], g.shape[2] * g.shape[3]
    kg, rg, rows, img = k_ // groups, cg * kh * kw, c_ * kh * kw, c_ * hh * ww
    ct = _compute_dtype(dx.dtype)
    gb, ob = ctx.buf(g), ctx.buf(dx)
    scratch: list[str] = []
    pre: list = []
    wt = _Operand(ctx, w, ct, scratch, pre)
    geom = _geometry(a, (kh, kw))
    runs = min(n_img, RUNS)
    cols = ctx.temp(runs * rows * hw, ct)
    gbuf = ctx.temp(runs * k_ * hw, ct) if g.dtype != ct else None
    dbuf = ctx.temp(runs * img, ct) if dx.dtype != ct else None

    def body(n, run, par):
        s = []
        cols_base = L.mul(run, L.c64(rows * hw))
        g_src, g_base = gb, L.mul(n, L.c64(k_ * hw))
        if gbuf is not None:
            s += _copy(ctx, gb, g.dtype, g_base, gbuf, ct, L.mul(run, L.c64(k_ * hw)), k_ * hw, par)
            g_src, g_base = gbuf, L.mul(run, L.c64(k_ * hw))
        s += _per_group(ctx, groups, par, lambda gi: K.Gemm(
            wt.name, g_src, cols, rg, hw, kg, trans_a=True, lda=rg, ldb=hw, ldc=hw,
            offset_a=L.mul(gi, L.c64(kg * rg)), offset_b=L.add(g_base, L.mul(gi, L.c64(kg * hw))),
            offset_c=L.add(cols_base, L.mul(gi, L.c64(rg * hw)))))
        dst, base = (ob, L.mul(n, L.c64(img))) if dbuf is None else (dbuf, L.mul(run, L.c64(img)))
        s += _fill(ctx, dst, base, img, ct, par)
        s += col2im_image(ctx, (c_, hh, ww), geom, cols, cols_base, dst, base, ct, parallel=par)
        if dbuf is not None:
            s += _copy(ctx, dbuf, ct, base, ob, dx.dtype, L.mul(n, L.c64(img)), img, par)
        return s
    run, _ = image_runs(ctx, n_img, body)
    scratch += [b for b in (cols, gbuf, dbuf) if b]
    ctx.kernel(pre + run, [gb, ctx.buf(w)], [ob] + scratch)


def lower_conv2d_grad_weight(ctx, node) -> None:
    """dW = sum over images of g[n] @ im2col(x[n])^T per group: each run accumulates its
    images into its own partial sum (GEMM with accumulation), the partials are added last."""
    x, g = node.inputs
    dw = node.outputs[0]
    a = node.attrs
    n_img, c_ = x.shape[:2]
    k_, cg, kh, kw = a["weight_shape"]
    groups, hw = a["groups"], g.shape[2] * g.shape[3]
    kg, rg, rows, wsize = k_ // groups, cg * kh * kw, c_ * kh * kw, k_ * cg * kh * kw
    ct = _compute_dtype(dw.dtype)
    xb, gb, ob = ctx.buf(x), ctx.buf(g), ctx.buf(dw)
    geom = _geometry(a, (kh, kw))
    runs = min(n_img, RUNS)
    cols = ctx.temp(runs * rows * hw, ct)
    part = ctx.temp(runs * wsize, ct)
    gbuf = ctx.temp(runs * k_ * hw, ct) if g.dtype != ct else None

    def body(n, run, par):
        cols_base = L.mul(run, L.c64(rows * hw))
        s = im2col_image(ctx, x.shape, x.dtype, xb, n, geom, cols, cols_base, ct, parallel=par)
        g_src, g_base = gb, L.mul(n, L.c64(k_ * hw))
        if gbuf is not None:
            s += _copy(ctx, gb, g.dtype, g_base, gbuf, ct, L.mul(run, L.c64(k_ * hw)), k_ * hw, par)
            g_src, g_base = gbuf, L.mul(run, L.c64(k_ * hw))
        s += _per_group(ctx, groups, par, lambda gi: K.Gemm(
            g_src, cols, part, kg, rg, hw, trans_b=True, lda=hw, ldb=hw, ldc=rg,
            offset_a=L.add(g_base, L.mul(gi, L.c64(kg * hw))),
            offset_b=L.add(cols_base, L.mul(gi, L.c64(rg * hw))),
            offset_c=L.add(L.mul(run, L.c64(wsize)), L.mul(gi, L.c64(kg * rg))), accumulate=True))
        return s
    run, runs = image_runs(ctx, n_img, body)

    def total(vs):
        acc = K.Load(part, vs[0], ct)
        for i in range(1, runs):
            acc = K.Binary("add", acc, K.Load(part, L.add(vs[0], L.c64(i * wsize)), ct), ct)
        return [K.Store(ob, vs[0], acc if ct == dw.dtype else K.Cast(acc, dw.dtype))]
    body_all = _fill(ctx, part, L.c64(0), runs * wsize, ct, True) + run + ctx.loops([wsize], total)
    ctx.kernel(body_all, [xb, gb], [ob, cols, part] + ([gbuf] if gbuf else []))
