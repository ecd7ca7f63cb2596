"""matmul: batched, numpy-broadcast over leading axes, optional transposes of either side.

The transpose flags let gradients and the GEMM generator read operands in place instead of
materialising a transposed copy.
"""
from __future__ import annotations

from math import prod

import numpy as np

from .. import batch
from .. import kernel as K
from .. import lowering as L
from ..errors import ShapeError
from ..registry import Attr, Cost, Fusion, OpDef, register
from ..types import TensorType
from ._common import broadcast_shapes, require_numeric, same_dtype

_ATTRS = {"transpose_a": Attr("bool", False), "transpose_b": Attr("bool", False)}


def _mk(t: TensorType, transposed: bool) -> tuple[int, int]:
    m, k = t.shape[-2:]
    return (k, m) if transposed else (m, k)


def _matmul_infer(ts, a):
    x, y = ts
    dt = same_dtype("matmul", ts)
    require_numeric("matmul", x)
    if x.rank < 2 or y.rank < 2:
        raise ShapeError(f"matmul needs operands of rank >= 2, got {x} and {y} (the builder "
                         "turns vectors into matrices)")
    m, k = _mk(x, a["transpose_a"])
    k2, n = _mk(y, a["transpose_b"])
    if k != k2:
        raise ShapeError(f"matmul: contraction dimensions differ: {x} @ {y} contracts {k} with "
                         f"{k2}" + (" (after transposes)" if a["transpose_a"] or a["transpose_b"] else ""))
    batch = broadcast_shapes("matmul batch dims", x.shape[:-2], y.shape[:-2])
    return TensorType(batch + (m, n), dt)


def _matmul_ref(x, y, transpose_a, transpose_b):
    if transpose_a:
        x = np.swapaxes(x, -1, -2)
    if transpose_b:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _matmul_vjp(b, n, g):
    x, y = n.inputs
    ta, tb = n.attrs["transpose_a"], n.attrs["transpose_b"]
    if ta:
        gx = b.matmul(y, g, transpose_a=tb, transpose_b=True)
    else:
        gx = b.matmul(g, y, transpose_a=False, transpose_b=not tb)
    if tb:
        gy = b.matmul(g, x, transpose_a=True, transpose_b=ta)
    else:
        gy = b.matmul(x, g, transpose_a=not ta, transpose_b=False)
    return [b.sum_to(gx, x.shape), b.sum_to(gy, y.shape)]


def _matmul_cost(ts, outs, a) -> Cost:
    x = ts[0]
    k = x.shape[-2] if a["transpose_a"] else x.shape[-1]
    return Cost(2 * outs[0].size * k, sum(t.nbytes for t in ts) + outs[0].nbytes)


def _lower_matmul(ctx, node, out=None, epilogue=None):
    """One generated-GEMM call per batch matrix; broadcast batch axes read the same
    operand matrix (stride 0). When the batch axes collapse into one (every operand runs
    through them contiguously or is broadcast over all) and there is no epilogue, one
    batched Gemm statement, which the backend may split by matrices among threads (many
    small GEMMs: Winograd's alpha^2 products, attention heads); otherwise serial batch loops
    around parallel GEMMs. With a fused epilogue (registry `lower_epilogue`),
    `epilogue(batch_coords)` is applied to every element and the result lands in `out`'s
    buffer."""
    x, y = node.inputs
    out = out if out is not None else node.outputs[0]
    m, n = node.outputs[0].shape[-2:]
    k = x.shape[-2] if node.attrs["transpose_a"] else x.shape[-1]
    batch = node.outputs[0].shape[:-2]
    xs = [s * x.shape[-2] * x.shape[-1] for s in L.broadcast_strides(x.shape[:-2], batch)]
    ys = [s * y.shape[-2] * y.shape[-1] for s in L.broadcast_strides(y.shape[:-2], batch)]
    cs = [s * m * n for s in L.row_strides(batch)]
    xb, yb, ob = ctx.buf(x), ctx.buf(y), ctx.buf(out)
    flat = _flat_batch(xs, ys, batch) if epilogue is None else None
    if flat is not None:  # one batched call: the backend may share the matrices among threads
        sa, sb = flat
        ctx.kernel([K.Gemm(xb, yb, ob, m, n, k, batch=prod(batch), trans_a=node.attrs["transpose_a"],
                           trans_b=node.attrs["transpose_b"], lda=x.shape[-1], ldb=y.shape[-1],
                           ldc=n, stride_a=sa, stride_b=sb, stride_c=m * n)], [xb, yb], [ob])
        return

    loads: list[str] = []  # buffers the epilogue reads

    def gemm(vs):
        epi = epilogue(vs) if epilogue is not None else None
        if epi is not None:
            loads.extend(e.buffer for e in K.walk_exprs(epi) if isinstance(e, K.Load))
        return [K.Gemm(xb, yb, ob, m, n, k, trans_a=node.attrs["transpose_a"],
                       trans_b=node.attrs["transpose_b"], lda=x.shape[-1], ldb=y.shape[-1], ldc=n,
                       offset_a=L.linear_index(vs, xs), offset_b=L.linear_index(vs, ys),
                       offset_c=L.linear_index(vs, cs),
                       epilogue=epi)]
    body = ctx.loops(batch, gemm, parallel=False, innermost="serial")
    ctx.kernel(body, [xb, yb, *loads], [ob], suffix="_fused" if epilogue is not None else "")


def _flat_batch(xs: list[int], ys: list[int], batch: tuple[int, ...]) -> tuple[int, int] | None:
    """Per-matrix strides of both operands when the batch axes collapse into one (each
    operand either runs through all of them contiguously or is broadcast over all)."""
    if len(batch) < 1 or prod(batch) < 2:
        return None
    out = []
    for strides in (xs, ys):
        if all(s == 0 for s in strides):
            out.append(0)
        elif list(strides) == [st * strides[-1] for st in L.row_strides(batch)]:
            out.append(strides[-1])
        else:
            return None
    return out[0], out[1]


register(OpDef("matmul", Fusion.CONTRACTION, _matmul_infer, _matmul_ref, 2, _ATTRS, _matmul_vjp,
               _matmul_cost, doc="batched matrix product with numpy batch broadcasting",
               lower=_lower_matmul, lower_epilogue=_lower_matmul, batch_split=batch.matmul))
