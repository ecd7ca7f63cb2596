"""Winograd convolution ops: the three transforms of F(m x m, 3 x 3) (ir/winograd.py).

A 3x3, stride-1 convolution of x (N, C, H, W) with w (K, C, 3, 3) becomes, with
alpha = m + 2, TH = ceil(OH / m), TW = ceil(OW / m) and P = N * TH * TW output tiles:

    U = winograd_filter_transform(w)        (alpha^2, K, C)   G g G^T per (k, c)
    V = winograd_input_transform(x)         (alpha^2, C, P)   B^T d B per overlapping tile
    M = matmul(U, V)                        (alpha^2, K, P)   one GEMM per transform position
    y = winograd_output_transform(M[, b])   (N, K, OH, OW)    A^T M A (+ bias, activation)

Tile p = (n * TH + th) * TW + tw reads the padded input rows th*m .. th*m + alpha - 1 and
columns tw*m .. tw*m + alpha - 1 and yields output rows th*m .. th*m + m - 1 (likewise
columns). The input transform applies the zero padding itself (reads outside the image are
zeros), so no padded copy is made; the output transform drops the rows and columns of the
last tiles that fall outside (OH, OW). With ``flip`` the filter transform transposes K and C
and rotates the kernel by 180 degrees, which turns the input gradient of a convolution
(conv2d_grad_input) into a convolution of the output gradient.

The output transform can absorb a per-channel bias (a second operand of shape (K,)) and an
activation: the name of an attribute-free unary elementwise registry op, applied through
that op's scalar hook, so fusing them costs no extra pass over the output.

The references compute in float64 and round once to the operand dtype, as the nn ops do.
The ops are linear but have no VJP: the rewrite (passes/winograd.py) runs after autodiff,
on forward and backward convolutions alike, so no gradient is ever taken through them.
"""
from __future__ import annotations

from math import ceil

import numpy as np

from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from ..errors import AttrError, DTypeError, ShapeError
from ..registry import Attr, Cost, Fusion, OpDef, get_op, register
from ..types import TensorType, format_shape as _fs
from ..winograd import POINTS, transform

_F64 = np.float64
_TILE = Attr("int", 2, choices=tuple(POINTS))


# --- geometry -------------------------------------------------------------------------------

def tiles(out_hw: tuple[int, int], m: int) -> tuple[int, int]:
    """(TH, TW): output tiles per image."""
    return ceil(out_hw[0] / m), ceil(out_hw[1] / m)


def _float_operand(op: str, t: TensorType) -> None:
    if t.dtype not in (dtypes.f32, dtypes.f64):
        raise DTypeError(f"{op} needs an f32 or f64 operand, got {t}")


def _check_padding(op: str, padding) -> None:
    if len(padding) != 4 or any(p < 0 for p in padding):
        raise AttrError(f"{op}: padding={tuple(padding)} must be 4 ints >= 0 "
                        "(top, bottom, left, right)")


def _conv_out_hw(op: str, xs: tuple[int, ...], padding) -> tuple[int, int]:
    pt, pb, pl, pr = padding
    oh, ow = xs[2] + pt + pb - 2, xs[3] + pl + pr - 2
    if oh < 1 or ow < 1:
        raise ShapeError(f"{op}: a 3x3 window does not fit input {_fs(xs)} padded by "
                         f"{tuple(padding)}")
    return oh, ow


def _matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return transform(m).arrays()


def _transform_rounding(which: int):
    """OpDef.rounding of a transform L X L^T (L = one of _matrices: 0 A^T, 1 G, 2 B^T):
    an output's terms add up to rowsum(|L|)^2 times the input's magnitude (F(4x4)'s A^T
    row [0, 1, -1, 8, -8, 1]: 19^2 = 361), and each of the two stages rounds sums of that
    size, so the error is of that many eps units (twice) whatever order a kernel sums in;
    counting input elements per output (the default) sees 36 and misses the growth."""
    def rounding(attrs: dict) -> float:
        L = np.abs(np.asarray(_matrices(attrs["tile"])[which], np.float64))
        return 4.0 + 2.0 * float(L.sum(axis=1).max()) ** 2
    return rounding


# --- kernel IR helpers ----------------------------------------------------------------------

def _lincomb(coeffs, terms: list[K.Expr], dt) -> K.Expr:
    """sum(c * t) with the zero terms left out and +-1 as adds and subtracts."""
    out: K.Expr | None = None
    for c, t in zip(coeffs, terms):
        c = float(c)
        if c == 0.0:
            continue
        if out is None:
            out = t if c == 1.0 else K.Binary("mul", K.Const(c, dt), t, dt)
        elif c == 1.0:
            out = K.Binary("add", out, t, dt)
        elif c == -1.0:
            out = K.Binary("sub", out, t, dt)
        else:
            out = K.Binary("add", out, K.Binary("mul", K.Const(c, dt), t, dt), dt)
    return out if out is not None else K.Const(0.0, dt)


def _sandwich(ctx, left: np.ndarray, x: list[list[K.Expr]], right: np.ndarray, dt,
              stmts: list) -> list[list[K.LocalRef]]:
    """left @ x @ right^T as locals: the operand (each element read once), rows first
    (left @ x), then columns."""
    def declare(e: K.Expr) -> K.LocalRef:
        loc = K.LocalRef(ctx.var("w").name, dt)
        stmts.append(K.Declare(loc, e))
        return loc
    x = [[declare(e) for e in row] for row in x]
    cols = len(x[0])
    t = [[declare(_lincomb(left[a], [x[u][v] for u in range(len(x))], dt)) for v in range(cols)]
         for a in range(left.shape[0])]
    return [[declare(_lincomb(right[b], t[a], dt)) for b in range(right.shape[0])]
            for a in range(left.shape[0])]


def _offset(var: K.Var, start: int) -> K.Expr:
    return L.add(var, L.c64(start))


def _nest(ctx, rows: tuple[int, int], cols: tuple[int, int], vectorize: bool, body) -> list:
    """A loop nest over tile rows [r0, r1) and columns [c0, c1): body(th, tw) -> statements,
    the column loop vectorised or not; empty ranges give no loops."""
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        return []
    i, j = ctx.var("th"), ctx.var("tw")
    inner = K.For(j, cols[1] - cols[0], body(_offset(i, rows[0]), _offset(j, cols[0])),
                  "vectorize" if vectorize else "serial")
    return [K.For(i, rows[1] - rows[0], [inner])]


def _tile_loops(ctx, extents: tuple[int, int], row_split: tuple[int, int],
                col_split: tuple[int, int], body) -> list:
    """Loops over the (TH, TW) tiles: `body(th, tw, edge)` for the tiles in rows
    [r0, r1) and columns [c0, c1) with edge=False (the vectorised interior), and with
    edge=True for the border around it."""
    (th_n, tw_n), (r0, r1), (c0, c1) = extents, row_split, col_split
    edge = lambda th, tw: body(th, tw, True)  # noqa: E731
    return (_nest(ctx, (0, r0), (0, tw_n), False, edge) +
            _nest(ctx, (r0, r1), (0, c0), False, edge) +
            _nest(ctx, (r0, r1), (c0, c1), True, lambda th, tw: body(th, tw, False)) +
            _nest(ctx, (r0, r1), (c1, tw_n), False, edge) +
            _nest(ctx, (r1, th_n), (0, tw_n), False, edge))


def interior_tiles(n_tiles: int, m: int, pad: int, size: int, alpha: int) -> tuple[int, int]:
    """Tiles whose alpha input rows all lie inside the image: [lo, hi)."""
    lo = min(n_tiles, -(-pad // m))
    hi = (size - alpha + pad) // m + 1 if size - alpha + pad >= 0 else 0
    return lo, max(lo, min(n_tiles, hi))


# --- winograd_filter_transform ----------------------------------------------------------------

def _filter_infer(ts, a):
    (w,) = ts
    op = "winograd_filter_transform"
    _float_operand(op, w)
    if w.rank != 4 or w.shape[2:] != (3, 3):
        raise ShapeError(f"{op}: weight must be (K, C, 3, 3), got {w}")
    k, c = w.shape[:2]
    alpha = a["tile"] + 2
    return w.with_shape((alpha * alpha,) + ((c, k) if a["flip"] else (k, c)))


def _oriented(w: np.ndarray, flip: bool) -> np.ndarray:
    return w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3) if flip else w


def _filter_ref(w, tile, flip):
    _, G, _ = _matrices(tile)
    g = _oriented(w.astype(_F64), flip)
    u = np.einsum("ai,kcij,bj->abkc", G, g, G)
    return np.ascontiguousarray(u.reshape((-1,) + g.shape[:2])).astype(w.dtype)


def _lower_filter(ctx, node):
    w, out = node.inputs[0], node.outputs[0]
    m, flip = node.attrs["tile"], node.attrs["flip"]
    _, G, _ = _matrices(m)
    rows, cols = out.shape[1:]  # (K, C), or (C, K) flipped
    wb, ob = ctx.buf(w), ctx.buf(out)
    dt = w.dtype
    plane = rows * cols

    def body(vs):
        r, c = vs
        k_, c_ = (c, r) if flip else (r, c)
        base = L.linear_index([k_, c_], [w.shape[1] * 9, 9])
        g = [[K.Load(wb, L.add(base, L.c64(3 * (2 - i if flip else i) + (2 - j if flip else j))), dt)
              for j in range(3)] for i in range(3)]
        stmts: list = []
        u = _sandwich(ctx, G, g, G, dt, stmts)
        dst = L.linear_index([r, c], [cols, 1])
        alpha = G.shape[0]
        stmts += [K.Store(ob, L.add(dst, L.c64((a * alpha + b) * plane)), u[a][b])
                  for a in range(alpha) for b in range(alpha)]
        return K.drop_unread_locals(stmts)
    ctx.kernel(ctx.loops([rows, cols], body), [wb], [ob])


def _transform_flops(left: np.ndarray, right: np.ndarray, inner_cols: int) -> int:
    """Multiply-adds of left @ x @ right^T, counted as 2 flops each."""
    nnz_l, nnz_r = int(np.count_nonzero(left)), int(np.count_nonzero(right))
    return 2 * (nnz_l * inner_cols + nnz_r * left.shape[0])


def _filter_cost(ts, outs, a):
    _, G, _ = _matrices(a["tile"])
    n = ts[0].shape[0] * ts[0].shape[1]
    return Cost(n * _transform_flops(G, G, 3), ts[0].nbytes + outs[0].nbytes)


register(OpDef(
    "winograd_filter_transform", Fusion.OPAQUE, _filter_infer, _filter_ref, 1,
    {"tile": _TILE, "flip": Attr("bool", False)}, None, _filter_cost, lower=_lower_filter,
    rounding=_transform_rounding(1),
    doc="Winograd F(m x m, 3 x 3) filter transform G g G^T: (K, C, 3, 3) -> (alpha^2, K, C), "
        "alpha = tile + 2; flip=true gives the rotated, K/C-transposed filter "
        "(alpha^2, C, K) of the input-gradient convolution"))


# --- winograd_input_transform -------------------------------------------------------------------

def _input_infer(ts, a):
    (x,) = ts
    op = "winograd_input_transform"
    _float_operand(op, x)
    if x.rank != 4:
        raise ShapeError(f"{op}: input must have rank 4 (N, C, H, W), got {x}")
    _check_padding(op, a["padding"])
    m = a["tile"]
    th, tw = tiles(_conv_out_hw(op, x.shape, a["padding"]), m)
    return x.with_shape(((m + 2) ** 2, x.shape[1], x.shape[0] * th * tw))


def _input_ref(x, tile, padding):
    m, alpha = tile, tile + 2
    n, c, h, w = x.shape
    th, tw = tiles(_conv_out_hw("winograd_input_transform", x.shape, padding), m)
    pt, _, pl, _ = padding
    xp = np.zeros((n, c, th * m + 2, tw * m + 2), _F64)  # zeros past the padding too
    rows, cols = min(h, th * m + 2 - pt), min(w, tw * m + 2 - pl)
    xp[:, :, pt:pt + rows, pl:pl + cols] = x[:, :, :rows, :cols]
    win = np.lib.stride_tricks.sliding_window_view(xp, (alpha, alpha), axis=(2, 3))[:, :, ::m, ::m]
    _, _, BT = _matrices(m)
    v = np.einsum("au,nctwuv,bv->abcntw", BT, win[:, :, :th, :tw], BT)
    return np.ascontiguousarray(v.reshape(alpha * alpha, c, n * th * tw)).astype(x.dtype)


def _lower_input(ctx, node):
    """Per channel (parallel) and image, the tiles: an unguarded, vectorised interior whose
    windows lie inside the image, and a border whose reads outside it are zeros."""
    x, out = node.inputs[0], node.outputs[0]
    m, (pt, _, pl, _) = node.attrs["tile"], node.attrs["padding"]
    alpha = m + 2
    n_, c_, h, w = x.shape
    _, _, BT = _matrices(m)
    th_n, tw_n = tiles(_conv_out_hw(node.op, x.shape, node.attrs["padding"]), m)
    p_n = n_ * th_n * tw_n
    xb, ob = ctx.buf(x), ctx.buf(out)
    dt = x.dtype
    zero = K.Const(0.0, dt)
    c, n = ctx.var("c"), ctx.var("n")

    def body(th, tw, edge):
        plane = L.linear_index([n, c], [c_ * h * w, h * w])
        d = []
        for u in range(alpha):
            row = L.add(L.mul(th, L.c64(m)), L.c64(u - pt))
            line = []
            for v in range(alpha):
                col = L.add(L.mul(tw, L.c64(m)), L.c64(v - pl))
                idx = L.add(plane, L.add(L.mul(row, L.c64(w)), col))
                if edge:
                    ok = _inside(row, col, h, w)
                    line.append(K.Select(ok, K.Load(xb, K.Select(ok, idx, L.c64(0), dtypes.i64), dt),
                                         zero, dt))
                else:
                    line.append(K.Load(xb, idx, dt))
            d.append(line)
        stmts: list = []
        v_ = _sandwich(ctx, BT, d, BT, dt, stmts)
        p = L.linear_index([n, th, tw], [th_n * tw_n, tw_n, 1])
        dst = L.add(L.mul(c, L.c64(p_n)), p)
        stmts += [K.Store(ob, L.add(dst, L.c64((a * alpha + b) * c_ * p_n)), v_[a][b])
                  for a in range(alpha) for b in range(alpha)]
        return K.drop_unread_locals(stmts)

    tl = _tile_loops(ctx, (th_n, tw_n), interior_tiles(th_n, m, pt, h, alpha),
                     interior_tiles(tw_n, m, pl, w, alpha), body)
    ctx.kernel([K.For(c, c_, [K.For(n, n_, tl)], "parallel" if c_ > 1 else "serial")], [xb], [ob])


def _inside(h, w, height, width):
    def within(v, size):
        return K.Binary("and", K.Compare("ge", v, L.c64(0)), K.Compare("lt", v, L.c64(size)),
                        dtypes.bool_)
    return K.Binary("and", within(h, height), within(w, width), dtypes.bool_)


def _input_cost(ts, outs, a):
    _, _, BT = _matrices(a["tile"])
    alpha = a["tile"] + 2
    tiles_ = outs[0].size // (alpha * alpha)
    return Cost(tiles_ * _transform_flops(BT, BT, alpha), ts[0].nbytes + outs[0].nbytes)


register(OpDef(
    "winograd_input_transform", Fusion.OPAQUE, _input_infer, _input_ref, 1,
    {"tile": _TILE, "padding": Attr("ints", (0, 0, 0, 0))}, None, _input_cost, lower=_lower_input,
    rounding=_transform_rounding(2),
    doc="Winograd F(m x m, 3 x 3) input transform B^T d B of the overlapping alpha x alpha "
        "tiles of the zero-padded image: (N, C, H, W) -> (alpha^2, C, N*TH*TW), tile "
        "(n*TH + th)*TW + tw; padding (top, bottom, left, right)"))


# --- winograd_output_transform ------------------------------------------------------------------

def activation_op(name: str) -> OpDef | None:
    """The registry op an output transform applies after the bias, or None for ''."""
    if name == "":
        return None
    op = get_op(name)
    if op.scalar is None or op.arity != 1 or op.attrs or op.num_outputs != 1:
        raise AttrError(f"winograd_output_transform: activation={name!r} must name a unary "
                        "elementwise op without attributes (relu, tanh, sigmoid...)")
    return op


def _output_infer(ts, a):
    op = "winograd_output_transform"
    if len(ts) not in (1, 2):
        raise ShapeError(f"{op} takes the transformed product and an optional bias, got "
                         f"{len(ts)} operands")
    mt = ts[0]
    _float_operand(op, mt)
    shape = tuple(a["output_shape"])
    if len(shape) != 4 or any(d < 1 for d in shape):
        raise AttrError(f"{op}: output_shape={shape} must be 4 positive ints (N, K, OH, OW)")
    n, k, oh, ow = shape
    m = a["tile"]
    th, tw = tiles((oh, ow), m)
    want = ((m + 2) ** 2, k, n * th * tw)
    if mt.shape != want:
        raise ShapeError(f"{op}: operand {mt} should be {_fs(want)} (alpha^2, K, N*TH*TW) for "
                         f"output_shape {_fs(shape)} and tile {m}")
    if len(ts) == 2:
        b = ts[1]
        if b.dtype != mt.dtype or b.shape != (k,):
            raise ShapeError(f"{op}: bias {b} should be {mt.dtype}[{k}] (one per channel)")
    act = activation_op(a["activation"])
    if act is not None:
        act.infer_types([TensorType(shape, mt.dtype)], {})
    return TensorType(shape, mt.dtype)


def _output_ref(mt, *rest, tile, output_shape, activation):
    m, alpha = tile, tile + 2
    n, k, oh, ow = output_shape
    th, tw = tiles((oh, ow), m)
    AT, _, _ = _matrices(m)
    t = mt.astype(_F64).reshape(alpha, alpha, k, n, th, tw)
    y = np.einsum("ia,abkntw,jb->nktiwj", AT, t, AT).reshape(n, k, th * m, tw * m)[:, :, :oh, :ow]
    if rest:
        y = y + rest[0].astype(_F64).reshape(1, k, 1, 1)
    y = np.ascontiguousarray(y).astype(mt.dtype)
    act = activation_op(activation)
    return act.reference(y) if act is not None else y


def _lower_output(ctx, node):
    """Per output channel (parallel) and image, the tiles: full tiles in a vectorised loop,
    the last tile row and column (cut by OH, OW) with only their valid stores."""
    mt, out = node.inputs[0], node.outputs[0]
    m = node.attrs["tile"]
    alpha = m + 2
    n_, k_, oh, ow = out.shape
    th_n, tw_n = tiles((oh, ow), m)
    p_n = n_ * th_n * tw_n
    AT, _, _ = _matrices(m)
    mb, ob = ctx.buf(mt), ctx.buf(out)
    bb = ctx.buf(node.inputs[1]) if len(node.inputs) == 2 else None
    act = activation_op(node.attrs["activation"])
    dt = mt.dtype
    k, n = ctx.var("k"), ctx.var("n")

    def body(th, tw, rows_valid, cols_valid):
        p = L.linear_index([n, th, tw], [th_n * tw_n, tw_n, 1])
        src = L.add(L.mul(k, L.c64(p_n)), p)
        x = [[K.Load(mb, L.add(src, L.c64((a * alpha + b) * k_ * p_n)), dt) for b in range(alpha)]
             for a in range(alpha)]
        stmts: list = []
        y = _sandwich(ctx, AT, x, AT, dt, stmts)
        bias = K.Load(bb, k, dt) if bb is not None else None
        base = L.linear_index([n, k], [k_ * oh * ow, oh * ow])
        for i in range(rows_valid):
            for j in range(cols_valid):
                val: K.Expr = y[i][j]
                if bias is not None:
                    val = K.Binary("add", val, bias, dt)
                if act is not None:
                    val = act.scalar([val], {}, dt)
                row = L.add(L.mul(th, L.c64(m)), L.c64(i))
                col = L.add(L.mul(tw, L.c64(m)), L.c64(j))
                stmts.append(K.Store(ob, L.add(base, L.add(L.mul(row, L.c64(ow)), col)), val))
        return K.drop_unread_locals(stmts)

    full_r, full_c = oh // m, ow // m
    nests = (_nest(ctx, (0, full_r), (0, full_c), True, lambda th, tw: body(th, tw, m, m)) +
             _nest(ctx, (0, full_r), (full_c, tw_n), False, lambda th, tw: body(th, tw, m, ow % m)) +
             _nest(ctx, (full_r, th_n), (0, full_c), False, lambda th, tw: body(th, tw, oh % m, m)) +
             _nest(ctx, (full_r, th_n), (full_c, tw_n), False,
                   lambda th, tw: body(th, tw, oh % m, ow % m)))
    reads = [mb] + ([bb] if bb is not None else [])
    ctx.kernel([K.For(k, k_, [K.For(n, n_, nests)], "parallel" if k_ > 1 else "serial")], reads, [ob])


def _output_cost(ts, outs, a):
    AT, _, _ = _matrices(a["tile"])
    alpha = a["tile"] + 2
    tiles_ = ts[0].size // (alpha * alpha)
    extra = 2 * outs[0].size if (len(ts) == 2 or a["activation"]) else 0
    return Cost(tiles_ * _transform_flops(AT, AT, alpha) + extra,
                sum(t.nbytes for t in ts) + outs[0].nbytes)


register(OpDef(
    "winograd_output_transform", Fusion.OPAQUE, _output_infer, _output_ref, None,
    {"tile": _TILE, "output_shape": Attr("ints"), "activation": Attr("str", "")}, None,
    _output_cost, lower=_lower_output, rounding=_transform_rounding(0),
    doc="Winograd F(m x m, 3 x 3) output transform A^T M A: (alpha^2, K, N*TH*TW) -> "
        "(N, K, OH, OW) given by output_shape, then + bias[k] (optional second operand, (K,)) "
        "and the named unary activation"))
