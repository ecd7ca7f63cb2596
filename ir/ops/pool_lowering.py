"""Max pooling and its gradient as direct window scans.

The decompositions in pool.py go through im2col: the forward materialises every window
((N, C, KH*KW, OH, OW), the input's size for 2x2/stride-2 pooling) and the gradient adds
a window-sized mask, an argmax, a routed copy and a col2im, four input-sized buffers
alive at once in the backward pass. Here each output position scans its window in
registers instead and keeps the running first maximum:

    take position p  when  p is a real input element (padding never wins) and
                           (no position taken yet, or the kept value is not NaN and
                            (x[p] > kept or x[p] is NaN))

which is the reference's rule (nn._first_max): the first maximum in row-major kernel
order, a NaN winning (it propagates through max_pool2d) and the first NaN staying. The
forward writes the kept value; the gradient adds g to the kept position of dx, planes in
parallel and each plane's windows in order, so overlapping windows accumulate without
races.
"""
from __future__ import annotations

from .. import dtypes
from .. import kernel as K
from .. import lowering as L
from .window import padded_plane_runs


def _scan(ctx, x, a, plane, oh, ow, best: K.LocalRef, where: K.LocalRef) -> list:
    """Statements leaving the window's first maximum in `best` and its flat index in x in
    `where` (-1 when the window holds no real element)."""
    _, _, hh, ww = x.shape
    (kh, kw), (sh, sw), (pt, _, pl, _) = a["kernel"], a["strides"], a["padding"]
    xb, dt = ctx.buf(x), x.dtype
    stmts = [K.Declare(best, K.Const(0.0, dt)), K.Declare(where, L.c64(-1))]
    for ki in range(kh):
        for kj in range(kw):
            h = L.add(L.mul(oh, L.c64(sh)), L.c64(ki - pt))
            w = L.add(L.mul(ow, L.c64(sw)), L.c64(kj - pl))
            inside = K.Binary("and", K.Binary("and", K.Compare("ge", h, L.c64(0)), K.Compare("lt", h, L.c64(hh)),
                                              dtypes.bool_),
                              K.Binary("and", K.Compare("ge", w, L.c64(0)), K.Compare("lt", w, L.c64(ww)),
                                       dtypes.bool_), dtypes.bool_)
            at = K.Select(inside, L.linear_index([plane, h, w], [hh * ww, ww, 1]),
                          L.mul(plane, L.c64(hh * ww)), dtypes.i64)
            v = K.Load(xb, at, dt)
            kept_is_number = K.Compare("eq", best, best)
            beats = K.Binary("or", K.Compare("gt", v, best), K.Compare("ne", v, v), dtypes.bool_)
            take = K.Binary("and", inside, K.Binary("or", K.Compare("lt", where, L.c64(0)),
                                                    K.Binary("and", kept_is_number, beats, dtypes.bool_),
                                                    dtypes.bool_), dtypes.bool_)
            took = K.LocalRef(f"take{ki}_{kj}", dtypes.bool_)  # evaluated once, before either update
            stmts += [K.Declare(took, take), K.Assign(best, K.Select(took, v, best, dt)),
                      K.Assign(where, K.Select(took, at, where, dtypes.i64))]
    return stmts


def lower_max_pool2d(ctx, node) -> None:
    """The forward needs the maximum, not where it is: each plane is copied into a
    -inf-padded scratch plane (padding then never beats a real element, and a window of
    -inf inputs still gives -inf) and every window is reduced without bounds checks, the
    loop over output columns vectorised. A NaN wins, so it propagates as in the reference."""
    x, y = node.inputs[0], node.outputs[0]
    a = {**node.attrs, "dilations": (1, 1)}
    n, c, oh_n, ow_n = y.shape
    hh, ww = x.shape[2:]
    kh, kw = a["kernel"]
    yb = ctx.buf(y)

    def per_plane(plane, tap):
        def body(vs):
            oh, ow = vs
            best = K.LocalRef(ctx.var("best").name, x.dtype)
            stmts = [K.Declare(best, tap(oh, ow, 0, 0))]
            for t in range(1, kh * kw):
                v = tap(oh, ow, t // kw, t % kw)
                wins = K.Binary("or", K.Compare("gt", v, best), K.Compare("ne", v, v), dtypes.bool_)
                stmts.append(K.Assign(best, K.Select(wins, v, best, x.dtype)))
            return stmts + [K.Store(yb, L.linear_index([plane, oh, ow], [oh_n * ow_n, ow_n, 1]), best)]
        return ctx.loops([oh_n, ow_n], body, parallel=False)
    stmts, pad = padded_plane_runs(ctx, n * c, x.shape, x.dtype, ctx.buf(x), a,
                                   lambda p: L.mul(p, L.c64(hh * ww)), float("-inf"), x.dtype, per_plane)
    ctx.kernel(stmts, [ctx.buf(x)], [yb] + ([pad] if pad else []))


def lower_max_pool2d_grad(ctx, node) -> None:
    x, g = node.inputs
    dx = node.outputs[0]
    a = node.attrs
    n, c, oh_n, ow_n = g.shape
    hw = x.shape[2] * x.shape[3]
    best, where = K.LocalRef("best", x.dtype), K.LocalRef("where", dtypes.i64)
    gb, ob = ctx.buf(g), ctx.buf(dx)
    zero = K.Const(0.0, dx.dtype)

    def plane_body(vs):
        (plane,) = vs
        i, oh, ow = ctx.var("i"), ctx.var("oh"), ctx.var("ow")
        clear = K.For(i, hw, [K.Store(ob, L.add(L.mul(plane, L.c64(hw)), i), zero)], "vectorize")
        found = K.Compare("ge", where, L.c64(0))
        to = K.Select(found, where, L.mul(plane, L.c64(hw)), dtypes.i64)
        gv = K.Load(gb, L.linear_index([plane, oh, ow], [oh_n * ow_n, ow_n, 1]), g.dtype)
        add = K.Binary("add", K.Load(ob, to, dx.dtype), K.Select(found, gv, zero, dx.dtype), dx.dtype)
        window = _scan(ctx, x, a, plane, oh, ow, best, where) + [K.Store(ob, to, add)]
        return [clear, K.For(oh, oh_n, [K.For(ow, ow_n, window)])]
    ctx.kernel(ctx.loops([n * c], plane_body, innermost="serial"), [ctx.buf(x), gb], [ob])

