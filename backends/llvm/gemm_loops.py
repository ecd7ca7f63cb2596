"""A `Gemm` statement as a kernel-IR loop nest: the portable fallback for the problems the
library does not take (small, integer, f16, foreign B panels)."""
from __future__ import annotations

from dataclasses import dataclass

from ...ir import kernel as K
from ...ir.dtypes import DType, i64
from .gemm_plan import gemm_lds
from .irtypes import _compute_dtype
from .nodes import _GemmEpilogue


def _c64(v: int) -> K.Const:
    return K.Const(int(v), i64)


def _add(a, b):
    if isinstance(a, int):
        a = _c64(a)
    if isinstance(b, int):
        b = _c64(b)
    if isinstance(a, K.Const) and a.value == 0:
        return b
    if isinstance(b, K.Const) and b.value == 0:
        return a
    return K.Binary("add", a, b, i64)


def _mul(a, b):
    if isinstance(b, int):
        if b == 1:
            return a
        b = _c64(b)
    if isinstance(a, K.Const) and isinstance(b, K.Const):
        return _c64(a.value * b.value)
    return K.Binary("mul", a, b, i64)


def gemm_loops(g: K.Gemm, parallel: bool, tag: str) -> list:
    """The GEMM as a kernel-IR loop nest (the portable fallback); built at emit time, when
    the buffer dtypes are known."""
    lda, ldb, ldc = gemm_lds(g)
    vb = K.Var(f"_gb{tag}")
    vi = K.Var(f"_gi{tag}")
    vj = K.Var(f"_gj{tag}")
    vk = K.Var(f"_gk{tag}")
    bvar = vb if g.batch > 1 else _c64(0)
    base_a = _add(g.offset_a, _mul(bvar, g.stride_a)) if g.stride_a else _add(g.offset_a, 0)
    base_b = _add(g.offset_b, _mul(bvar, g.stride_b)) if g.stride_b else _add(g.offset_b, 0)
    base_c = _add(g.offset_c, _mul(bvar, g.stride_c)) if g.stride_c else _add(g.offset_c, 0)
    ia = _add(base_a, _add(_mul(vk, lda), vi) if g.trans_a else _add(_mul(vi, lda), vk))
    if g.b_panels:
        w = g.b_panels
        panel = K.Binary("div", vj, _c64(w), i64)
        ib = _add(base_b, _add(_mul(panel, g.k * w), _add(_mul(vk, w), K.Binary("mod", vj, _c64(w), i64))))
    else:
        ib = _add(base_b, _add(_mul(vj, ldb), vk) if g.trans_b else _add(_mul(vk, ldb), vj))
    ic = _add(base_c, _add(_mul(vi, ldc), vj))
    return [_GemmLoops(g, vb, vi, vj, vk, ia, ib, ic, parallel)]


@dataclass
class _GemmLoops:
    """Internal statement: the fallback GEMM (needs buffer dtypes, so built at emit time)."""
    g: K.Gemm
    vb: K.Var
    vi: K.Var
    vj: K.Var
    vk: K.Var
    ia: object
    ib: object
    ic: object
    parallel: bool

    def build(self, dtypes: dict[str, DType]) -> list:
        g = self.g
        da, db, dc = dtypes[g.a], dtypes[g.b], dtypes[g.c]
        acc_dt = _compute_dtype(dc)
        if acc_dt.is_bool:
            acc_dt = i64
        acc = K.LocalRef(f"_acc_{self.vi.name}", acc_dt)

        def conv(e, d):
            return e if d == acc_dt else K.Cast(e, acc_dt)

        prod = K.Binary("mul", conv(K.Load(g.a, self.ia, da), da), conv(K.Load(g.b, self.ib, db), db),
                        acc_dt)
        init = conv(K.Load(g.c, self.ic, dc), dc) if g.accumulate else K.Const(0, acc_dt)
        result: object = acc
        if g.epilogue is not None:
            result = _GemmEpilogue(g.epilogue, acc, self.vi, self.vj)
        if self._row_update(acc_dt, dc):
            # C[i, :] += A[i, k] * B[k, :] for each k: unit-stride rows, vectorised over j
            # (a short k would leave the dot-product order below with little to vectorise).
            row: list = []
            if not g.accumulate:
                row.append(K.For(self.vj, g.n, [K.Store(g.c, self.ic, K.Const(0, dc))], "vectorize"))
            upd = K.Binary("add", K.Load(g.c, self.ic, dc), prod, dc)
            row.append(K.For(self.vk, g.k, [K.For(self.vj, g.n, [K.Store(g.c, self.ic, upd)],
                                                  "vectorize")], "serial"))
            iloop = K.For(self.vi, g.m, row, "serial")
        else:
            kloop = K.For(self.vk, g.k, [K.Assign(acc, K.Binary("add", acc, prod, acc_dt))], "reduce")
            jloop = K.For(self.vj, g.n, [K.Declare(acc, init), kloop, K.Store(g.c, self.ic, result)],
                          "serial")
            iloop = K.For(self.vi, g.m, [jloop], "serial")
        if g.batch > 1:
            outer = K.For(self.vb, g.batch, [iloop], "parallel" if self.parallel else "serial")
        else:
            if self.parallel:
                iloop.mark = "parallel"
            outer = iloop
        return [outer]


    def _row_update(self, acc_dt: DType, dc: DType) -> bool:
        """Whether the row-update order fits: B's rows contiguous, rows long enough to
        vectorise, no epilogue, and C's dtype is the accumulator's (no rounding per step)."""
        g = self.g
        return (not g.trans_b and not g.b_panels and g.epilogue is None and acc_dt == dc and dc.is_float
                and g.n >= 8 and g.k <= 64)
