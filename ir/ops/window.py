"""Window ops: im2col and col2im, the two primitives convolution and pooling lower to.

``im2col(x)`` lays every kernel window of an NCHW image out as a column:

    x: (N, C, H, W)  ->  cols: (N, C*KH*KW, OH*OW)
    cols[n, c*KH*KW + i*KW + j, oh*OW + ow] = xp[n, c, oh*sh + i*dh, ow*sw + j*dw]

where ``xp`` is x padded by ``padding=(top, bottom, left, right)`` with the constant
``value`` (0 for convolution and average pooling, -inf for max pooling). This row order is
the one that makes a convolution one GEMM: ``conv2d(x, w) = w.reshape(K, C*KH*KW) @
im2col(x)``, reshaped to (N, K, OH, OW) (batch-broadcast over N by matmul).

``col2im(cols)`` is im2col's adjoint: it adds every column entry back to the input position
it was read from (overlapping windows add up; padding positions are dropped). Its
``input_shape=(N, C, H, W)`` attribute fixes the image size, which the columns alone do not
determine (the stride remainder). <im2col(x), y> == <x, col2im(y)>, so each is the other's
VJP: im2col's is col2im (the pad value is a constant and gets no gradient), col2im's is
im2col with value 0.

Attributes follow ir/ops/_nn_common.py's canonical window geometry (``kernel``, ``strides``,
``padding``, ``dilations``). Fusion: im2col is LAYOUT (a gather: each output element is a
copy of one input element or the pad value); col2im is OPAQUE (it accumulates). The
references are vectorised numpy: im2col is a strided view copied once (exact); col2im adds
in float64 and rounds once to the operand dtype, as the nn references do.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from ..errors import ShapeError
from ..registry import Attr, Cost, Fusion, OpDef, register
from ..types import format_shape as _fs
from ._common import require_float
from ._nn_common import (_check_shape_attr, _check_window_attrs, _col2im, _crop, _out_hw, _out_len,
                 _pad_hw, _windows)

_F64 = np.float64
_GEOMETRY = {"kernel": Attr("ints"), "strides": Attr("ints", (1, 1)),
             "padding": Attr("ints", (0, 0, 0, 0)), "dilations": Attr("ints", (1, 1))}


def _geometry(a: dict) -> dict:
    return {k: a[k] for k in _GEOMETRY}


def _cols_shape(op: str, xs: tuple[int, ...], a: dict) -> tuple[int, int, int]:
    """(N, C*KH*KW, OH*OW) for an image of shape xs, or a ShapeError/AttrError."""
    _check_window_attrs(op, a, ("kernel", "strides", "padding", "dilations"))
    n, c, h, w = xs
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = (a["kernel"], a["strides"], a["padding"],
                                                      a["dilations"])
    oh = _out_len(op, "height", h, pt, pb, kh, sh, dh, xs)
    ow = _out_len(op, "width", w, pl, pr, kw, sw, dw, xs)
    return (n, c * kh * kw, oh * ow)


# --- im2col ---------------------------------------------------------------------------------

def _im2col_infer(ts, a):
    (x,) = ts
    require_float("im2col", x)
    if x.rank != 4:
        raise ShapeError(f"im2col: input must have rank 4 (N, C, H, W), got {x}")
    return x.with_shape(_cols_shape("im2col", x.shape, a))


def _im2col_ref(x, kernel, strides, padding, dilations, value):
    n, c = x.shape[:2]
    oh, ow = _out_hw(x.shape[2:], kernel, strides, padding, dilations)
    win = _windows(_pad_hw(x, padding, value), kernel, strides, dilations, oh, ow)
    # (N, C, OH, OW, KH, KW) -> (N, C, KH, KW, OH, OW): rows (c, i, j), columns (oh, ow)
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c * kernel[0] * kernel[1], oh * ow)
    return np.ascontiguousarray(cols, dtype=x.dtype)


def _im2col_vjp(b, n, g):
    x = n.inputs[0]
    return [b.col2im(g, input_shape=x.shape, **_geometry(n.attrs))]


RUNS = 8  # images (or planes) processed in parallel; each run keeps its own scratch


def image_runs(ctx, n_img: int, body: Callable[[K.Expr, K.Expr, bool], list]) -> tuple[list, int]:
    """(loops calling body(image, run, parallel) once for every image, number of runs). Runs
    get equal shares; the remainder images form a second parallel loop, one image per run."""
    if n_img == 0:  # an empty batch: nothing to compute (its output has no elements)
        return [], 1
    if n_img == 1:
        return body(L.c64(0), L.c64(0), True), 1
    runs = min(n_img, RUNS)
    per, rem = divmod(n_img, runs)
    c, j = ctx.var("run"), ctx.var("img")
    image = L.add(L.mul(c, L.c64(per)), j)
    stmts = [K.For(c, runs, [K.For(j, per, body(image, c, False), "serial")], "parallel")]
    if rem:
        r = ctx.var("run")
        stmts.append(K.For(r, rem, body(L.add(r, L.c64(runs * per)), r, False),
                           "parallel" if rem > 1 else "serial"))
    return stmts, runs


def window_coords(a, oh_v, ow_v, ki, kj):
    """Input row and column read by output position (oh, ow) at kernel tap (ki, kj)."""
    (sh, sw), (pt, _, pl, _), (dh, dw) = a["strides"], a["padding"], a["dilations"]
    h = K.Binary("add", K.Binary("mul", oh_v, L.c64(sh), dtypes.i64), L.c64(ki * dh - pt), dtypes.i64)
    w = K.Binary("add", K.Binary("mul", ow_v, L.c64(sw), dtypes.i64), L.c64(kj * dw - pl), dtypes.i64)
    return h, w


def inside(h, w, height, width):
    def within(v, n):
        return K.Binary("and", K.Compare("ge", v, L.c64(0)), K.Compare("lt", v, L.c64(n)), dtypes.bool_)
    return K.Binary("and", within(h, height), within(w, width), dtypes.bool_)


class PaddedPlane:
    """The scratch layout of one (H, W) plane padded for a window geometry `a`: its columns
    split by phase of the column stride s (padded column c at phase c % s, position c // s),
    so every kernel tap reads consecutive elements for consecutive output columns and the
    strided reads happen once, in the copy. The border keeps whatever the scratch held
    before the first copy (the caller fills it once: copies never reach it)."""

    def __init__(self, x_shape, a: dict) -> None:
        _, _, self.hh, self.ww = x_shape
        (self.sh, self.sw), (self.pt, pb, self.pl, pr), (self.dh, self.dw) = (
            a["strides"], a["padding"], a["dilations"])
        self.hp = self.hh + self.pt + pb
        self.wq = -(-(self.ww + self.pl + pr) // self.sw)  # columns per phase
        # A stride wider than the padded row leaves the phases past it empty: columns c <
        # W + pads sit at phase c, and no tap reads beyond (its span fits the padded row).
        self.size = self.hp * self.wq * min(self.sw, self.ww + self.pl + pr)

    def copy(self, ctx, xb: str, x_dtype, src: K.Expr, pad: str, base: K.Expr, ct,
             planes: int = 1, parallel: bool = False) -> list:
        """Statements copying `planes` consecutive planes, the first at element src of x,
        into consecutive scratch planes from base (on the team when `parallel` and big
        enough). The loop runs over groups of sw consecutive input columns, one store per
        phase: the group's loads are the members of one interleaved (stride sw) access,
        which LLVM vectorises as wide loads and shuffles, and the trip count is W // sw
        (16 for a 32-wide row at stride 2, two whole vectors; walking the phases'
        positions instead left 15 and a scalar remainder of 7)."""
        sw = self.sw

        def nest(members, q0, q1):
            """Groups [q0, q1) of the given members r (input column q*sw + r)."""
            def copy(vs):
                p, i, q = vs
                stores = []
                for r in members:
                    phase, shift = (r + self.pl) % sw, (r + self.pl) // sw
                    col = L.add(L.mul(L.add(q, L.c64(q0)), L.c64(sw)), L.c64(r))
                    v = K.Load(xb, L.linear_index([p, i, col], [self.hh * self.ww, self.ww, 1], src), x_dtype)
                    at = L.linear_index([p, i, q], [self.size, self.wq, 1],
                                        L.add(base, L.c64(phase * self.hp * self.wq + self.pt * self.wq + q0 + shift)))
                    stores.append(K.Store(pad, at, v if ct == x_dtype else K.Cast(v, ct)))
                return stores
            return ctx.loops([planes, self.hh, q1 - q0], copy, parallel=parallel) if q1 > q0 and members else []
        whole, rest = divmod(self.ww, sw)
        return nest(range(sw), 0, whole) + nest(range(rest), whole, whole + 1)

    def fill(self, ctx, pad: str, planes: int, value: float, ct) -> list:
        """Statements writing `value` over `planes` scratch planes: the padding, written
        once per call before the copies, which never reach it."""
        v = K.Const(value, ct)
        return ctx.loops([planes * self.size], lambda vs: [K.Store(pad, vs[0], v)], parallel=False)

    def tap(self, buf: str, base: K.Expr, oh: K.Expr, ow: K.Expr, ki: int, kj: int, ct) -> K.Expr:
        """The scratch element output (oh, ow) reads at kernel tap (ki, kj)."""
        shift, phase = divmod(kj * self.dw, self.sw)
        h = L.add(L.mul(oh, L.c64(self.sh)), L.c64(ki * self.dh))
        return K.Load(buf, L.linear_index([h, L.add(ow, L.c64(shift))], [self.wq, 1],
                                          L.add(base, L.c64(phase * self.hp * self.wq))), ct)


def padded_plane_runs(ctx, n_planes: int, x_shape, x_dtype, xb: str, a: dict,
                      src_of: Callable[[K.Expr], K.Expr], fill: float, ct,
                      per_plane: Callable[[K.Expr, Callable], list]) -> tuple[list, str | None]:
    """(statements, scratch buffer or None) walking n_planes (H, W) planes of x in runs
    (`image_runs`). Each run copies its plane (element offset src_of(plane) in x) into its
    own `PaddedPlane` scratch, whose border holds `fill` (written once, before the runs),
    then runs per_plane(plane, tap), where tap(oh, ow, ki, kj) loads output (oh, ow)'s
    window tap (ki, kj). With no bounds checks left, per_plane's loops over ow vectorise
    (window ops with few channels per GEMM: depthwise convolution, pooling). Unpadded
    unit-stride planes in the compute dtype are read in place, without scratch."""
    layout = PaddedPlane(x_shape, a)
    in_place = tuple(a["padding"]) == (0, 0, 0, 0) and ct == x_dtype and layout.sw == 1
    runs = min(n_planes, RUNS)
    pad = None if in_place else ctx.temp(runs * layout.size, ct)

    def body(plane, run, par):
        src = src_of(plane)
        base = src if in_place else L.mul(run, L.c64(layout.size))

        def tap(oh, ow, ki, kj):
            return layout.tap(xb if in_place else pad, base, oh, ow, ki, kj, ct)
        copy = [] if in_place else layout.copy(ctx, xb, x_dtype, src, pad, base, ct)
        return copy + per_plane(plane, tap)
    stmts, _ = image_runs(ctx, n_planes, body)
    if pad is not None:
        stmts = layout.fill(ctx, pad, runs, fill, ct) + stmts
    return stmts, pad


def _inside_range(n_out: int, stride: int, offset: int, size: int) -> tuple[int, int]:
    """The output positions o in [0, n_out) whose input o*stride + offset lies in [0, size)."""
    lo = min(max(0, -(offset // stride)), n_out)  # ceil(-offset / stride)
    hi = min(n_out, max(lo, -((offset - size) // stride)))  # ceil((size - offset) / stride)
    return lo, hi


def _plane_taps(ctx, x_shape, a, xb, src, ob, dst, dtype, out_dtype) -> tuple[list, bool]:
    """(per kernel tap, a nest copying one (H, W) plane's in-image window positions into its
    KH*KW rows of columns; whether some tap reaches into the padding). src and dst are the
    element offsets of the plane in x and of its first row in the columns. Plain copies, no
    bounds checks, so LLVM vectorises them; positions in the padding are left to a fill."""
    _, _, hh, ww = x_shape
    kh, kw = a["kernel"]
    oh_n, ow_n = _out_hw_of(x_shape, a)
    cols = oh_n * ow_n
    (sh, sw), (pt, _, pl, _), (dh, dw) = a["strides"], a["padding"], a["dilations"]
    loops, partial = [], False
    for ki in range(kh):
        for kj in range(kw):
            (h0, h1), (w0, w1) = (_inside_range(oh_n, sh, ki * dh - pt, hh),
                                  _inside_range(ow_n, sw, kj * dw - pl, ww))
            partial |= (h0, h1, w0, w1) != (0, oh_n, 0, ow_n)
            if h1 <= h0 or w1 <= w0:
                continue  # this tap reads only padding
            i, j = ctx.var(), ctx.var()
            oh, ow = L.add(i, L.c64(h0)), L.add(j, L.c64(w0))
            h, w = window_coords(a, oh, ow, ki, kj)
            val = K.Load(xb, L.linear_index([h, w], [ww, 1], src), dtype)
            to = L.linear_index([oh, ow], [ow_n, 1], L.add(dst, L.c64((ki * kw + kj) * cols)))
            copy = K.Store(ob, to, val if out_dtype == dtype else K.Cast(val, out_dtype))
            loops.append(K.For(i, h1 - h0, [K.For(j, w1 - w0, [copy], "vectorize")], "serial"))
    return loops, partial


def _lower_im2col(ctx, node):
    """One loop over the (n, c) planes (parallel when big enough: one fork for all taps)
    holding the plane's tap copies (`_plane_taps`); when some tap reaches into the padding,
    one pass first fills the whole output with the pad value. Plane p = n*C + c starts at
    p*H*W in x and at row p*KH*KW in the columns, so one variable indexes both."""
    x, out = node.inputs[0], node.outputs[0]
    a = node.attrs
    n_, c_, hh, ww = x.shape
    kh, kw = a["kernel"]
    cols = out.shape[2]
    xb, ob = ctx.buf(x), ctx.buf(out)
    plane = ctx.var()
    per_tap, partial = _plane_taps(ctx, x.shape, a, xb, L.mul(plane, L.c64(hh * ww)), ob,
                                   L.mul(plane, L.c64(kh * kw * cols)), x.dtype, x.dtype)
    body = []
    if partial:
        fill = K.Const(a["value"], x.dtype)
        body += ctx.loops([out.type.size], lambda vs: [K.Store(ob, vs[0], fill)])
    if per_tap:
        parallel = out.type.size >= L.PARALLEL_MIN_ELEMENTS and n_ * c_ > 1
        body.append(K.For(plane, n_ * c_, per_tap, "parallel" if parallel else "serial"))
    ctx.kernel(body, [xb], [ob])


def im2col_image(ctx, x_shape, dtype, xb, n, a, dst, base, out_dtype=None, parallel=False) -> list:
    """Statements writing image n's columns (rows (c, ki, kj), columns (oh, ow)) into dst at
    element offset base, converted to out_dtype (zero padding): the per-image im2col of
    Caffe-style convolution lowerings that keep one image's columns, not the batch's, in
    memory. Serial loops unless `parallel` (callers run it inside their own parallel loop)."""
    _, c_, hh, ww = x_shape
    kh, kw = a["kernel"]
    oh_n, ow_n = _out_hw_of(x_shape, a)
    size = c_ * kh * kw * oh_n * ow_n
    out_dtype = out_dtype or dtype
    c = ctx.var("c")
    src = L.mul(L.add(L.mul(n, L.c64(c_)), c), L.c64(hh * ww))
    per_tap, partial = _plane_taps(ctx, x_shape, a, xb, src, dst,
                                   L.add(base, L.mul(c, L.c64(kh * kw * oh_n * ow_n))), dtype, out_dtype)
    body = []
    if partial:
        zero = K.Const(0.0, out_dtype)
        body += ctx.loops([size], lambda vs: [K.Store(dst, L.add(base, vs[0]), zero)], parallel=parallel)
    if per_tap:
        par = parallel and size >= L.PARALLEL_MIN_ELEMENTS and c_ > 1
        body.append(K.For(c, c_, per_tap, "parallel" if par else "serial"))
    return body


def col2im_image(ctx, image_shape, a, cols_buf, cols_base, dst, dst_base, dtype, parallel=False) -> list:
    """Statements adding one image's columns (rows (c, ki, kj), columns (oh, ow)) at
    cols_buf[cols_base:] back into the (C, H, W) image at dst[dst_base:], which the caller
    has zeroed: the per-image adjoint of `im2col_image`. The loops over channels may run in
    parallel (a channel's plane is only written from its own rows)."""
    c_, hh, ww = image_shape
    kh, kw = a["kernel"]
    oh_n, ow_n = _out_hw_of((1,) + tuple(image_shape), a)
    ncol = oh_n * ow_n
    stmts = []
    for ki in range(kh):
        for kj in range(kw):
            def tap(vs, ki=ki, kj=kj):
                c, oh, ow = vs
                h, w = window_coords(a, oh, ow, ki, kj)
                ok = inside(h, w, hh, ww)
                at = K.Select(ok, L.linear_index([c, h, w], [hh * ww, ww, 1], dst_base),
                              L.linear_index([c], [hh * ww], dst_base), dtypes.i64)
                row = L.add(L.mul(c, L.c64(kh * kw)), L.c64(ki * kw + kj))
                src = L.linear_index([row, oh, ow], [ncol, ow_n, 1], cols_base)
                add = K.Binary("add", K.Load(dst, at, dtype),
                               K.Select(ok, K.Load(cols_buf, src, dtype), K.Const(0.0, dtype), dtype),
                               dtype)
                return [K.Store(dst, at, add)]
            stmts += ctx.loops([c_, oh_n, ow_n], tap, parallel=parallel, innermost="serial")
    return stmts


def _out_hw_of(xs, a):
    _, _, cols = _cols_shape("im2col", xs, a)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = (a["kernel"], a["strides"], a["padding"],
                                                      a["dilations"])
    ow = (xs[3] + pl + pr - dw * (kw - 1) - 1) // sw + 1
    return cols // ow, ow


def _lower_col2im(ctx, node):
    """Zero the image, then add every column entry back; the outer loop runs over (n, c)
    planes, which never share an output element, so it can run in parallel."""
    cols, out = node.inputs[0], node.outputs[0]
    a = node.attrs
    n_, c_, hh, ww = out.shape
    kh, kw = a["kernel"]
    _, rows, ncol = cols.shape
    oh_n, ow_n = _out_hw_of(out.shape, a)
    cb, ob = ctx.buf(cols), ctx.buf(out)
    zero = K.Const(0.0, out.dtype)
    init = ctx.loops([out.type.size], lambda vs: [K.Store(ob, vs[0], zero)])

    def plane(vs):
        (p,) = vs
        stmts = []
        for ki in range(kh):
            for kj in range(kw):
                oh, ow = ctx.var("oh"), ctx.var("ow")
                h, w = window_coords(a, oh, ow, ki, kj)
                ok = inside(h, w, hh, ww)
                dst = K.Select(ok, L.linear_index([p, h, w], [hh * ww, ww, 1]),
                               L.linear_index([p], [hh * ww]), dtypes.i64)
                n = K.Binary("div", p, L.c64(c_), dtypes.i64)
                c = K.Binary("mod", p, L.c64(c_), dtypes.i64)
                row = L.add(L.mul(c, L.c64(kh * kw)), L.c64(ki * kw + kj))
                src = L.linear_index([n, row, oh, ow], [rows * ncol, ncol, ow_n, 1])
                add = K.Binary("add", K.Load(ob, dst, out.dtype),
                               K.Select(ok, K.Load(cb, src, cols.dtype), zero, out.dtype), out.dtype)
                stmts.append(K.For(oh, oh_n, [K.For(ow, ow_n, [K.Store(ob, dst, add)])]))
        return stmts
    ctx.kernel(init + ctx.loops([n_ * c_], plane, innermost="serial"), [cb], [ob])


register(OpDef(
    "im2col", Fusion.LAYOUT, _im2col_infer, _im2col_ref, 1,
    {**_GEOMETRY, "value": Attr("float", 0.0)}, _im2col_vjp,
    lambda ts, outs, a: Cost(0, ts[0].nbytes + outs[0].nbytes), lower=_lower_im2col,
    doc="kernel windows of an NCHW image as columns: (N, C, H, W) -> (N, C*KH*KW, OH*OW), "
        "row c*KH*KW + i*KW + j, column oh*OW + ow; padding (top, bottom, left, right) holds "
        "the constant `value` (0 for convolution, -inf for max pooling)"))


# --- col2im ---------------------------------------------------------------------------------

def _col2im_infer(ts, a):
    (cols,) = ts
    op = "col2im"
    require_float(op, cols)
    xs = a["input_shape"]
    _check_shape_attr(op, "input_shape", xs)
    want = _cols_shape(op, xs, a)
    if cols.shape != want:
        (kh, kw), (oh, ow) = a["kernel"], _out_hw(xs[2:], a["kernel"], a["strides"],
                                                  a["padding"], a["dilations"])
        raise ShapeError(f"{op}: columns {cols} should have shape {_fs(want)} (N, C*KH*KW = "
                         f"{xs[1]}*{kh}*{kw}, OH*OW = {oh}*{ow}) for input_shape {_fs(xs)} "
                         f"with kernel {tuple(a['kernel'])}, strides {tuple(a['strides'])}, "
                         f"padding {tuple(a['padding'])}, dilations {tuple(a['dilations'])}")
    return cols.with_shape(tuple(xs))


def _col2im_ref(cols, input_shape, kernel, strides, padding, dilations):
    n, c, h, w = input_shape
    (kh, kw), (pt, pb, pl, pr) = kernel, padding
    oh, ow = _out_hw((h, w), kernel, strides, padding, dilations)
    win = cols.astype(_F64).reshape(n, c, kh, kw, oh, ow).transpose(0, 1, 4, 5, 2, 3)
    xp = _col2im(win, (h + pt + pb, w + pl + pr), strides, dilations)
    return np.ascontiguousarray(_crop(xp, padding, (h, w))).astype(cols.dtype)


def _col2im_vjp(b, n, g):
    return [b.im2col(g, value=0.0, **_geometry(n.attrs))]


def _col2im_cost(ts, outs, a):
    # One add per column entry that lands inside the image; counted as one per entry.
    return Cost(ts[0].size, ts[0].nbytes + outs[0].nbytes)


register(OpDef(
    "col2im", Fusion.OPAQUE, _col2im_infer, _col2im_ref, 1,
    {"input_shape": Attr("ints"), **_GEOMETRY}, _col2im_vjp, _col2im_cost, lower=_lower_col2im,
    doc="im2col's adjoint: (N, C*KH*KW, OH*OW) columns summed back into an (N, C, H, W) "
        "image given by input_shape; overlapping windows add up, padding positions are "
        "dropped, positions no window reads get zero"))
