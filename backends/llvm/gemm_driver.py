"""The GEMM driver: the five Goto/BLIS loops around the microkernel, this thread's share of
the work, the edge-tile kernels and the epilogue calls. A mixin of gemm._Gen."""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_ir import _ceil_div_ir, _for, _gep, _imax, _imin, _round_up_ir
from .gemm_target import _ALIGN_BYTES, I32, I64, _c64, _round_up

# Packing one element costs about this many multiply-adds of tile work (split choice).
_PACK_WEIGHT = 8
# A thread's share of at most this many columns reads A unpacked (see emit_microkernel).
DIRECT_A_COLS = 32


class GemmDriver:
    """The driver and its tile dispatch (state in gemm_kernel.GemmKernel)."""

    # -- driver ----------------------------------------------------------------------------

    def edge_variants(self, strided_a: bool = False) -> list[tuple[int, int, ir.Function]]:
        """(rows, vectors, kernel) for the narrower edge-tile microkernels, smallest first:
        2 and 4 rows (below MR) by one vector or the full NR."""
        MR, NV = self.bl.mr, self.NV
        out = []
        for nv in sorted({1, NV}):
            for rows in sorted({r for r in (2, 4) if r < MR} | {MR}):
                if (rows, nv) != (MR, NV):
                    out.append((rows, nv, self.emit_microkernel(rows, nv, strided_a)))
        return out

    def call_tile_kernel(self, b, full: ir.Function, variants, mr, nr, args, first: bool = True) -> None:
        """Call the full kernel on a full tile (tested first: nearly every tile is one),
        else the first variant that covers an mr x nr tile, else the full kernel."""
        VL = self.VL
        if first and variants:
            whole = b.and_(b.icmp_signed("==", mr, _c64(self.bl.mr)), b.icmp_signed("==", nr, _c64(self.bl.nr)))
            with b.if_else(whole, likely=True) as (then, otherwise):
                with then:
                    b.call(full, args)
                with otherwise:
                    self.call_tile_kernel(b, full, variants, mr, nr, args, first=False)
            return
        if not variants:
            b.call(full, args)
            return
        rows, nv, fn = variants[0]
        fits = b.and_(b.icmp_signed("<=", mr, _c64(rows)), b.icmp_signed("<=", nr, _c64(nv * VL)))
        with b.if_else(fits) as (then, otherwise):
            with then:
                b.call(fn, args)
            with otherwise:
                self.call_tile_kernel(b, full, variants[1:], mr, nr, args, first=False)

    def emit_driver(self, fn: ir.Function) -> None:
        MR, NR, KC, MC, NC = self.bl.mr, self.bl.nr, self.bl.kc, self.bl.mc, self.bl.nc
        ukernel = self.emit_microkernel()
        variants = self.edge_variants()
        strided = self.emit_microkernel(strided_a=True)
        strided_variants = self.edge_variants(strided_a=True)
        pack_a = self.emit_pack_a()
        pack_b = self.emit_pack_b()
        (M, N, K, A, lda, transA, B, ldb, transB, C, ldc, accumulate, ws, tid,
         nthreads, epi, epi_ctx) = fn.args
        for a, n in zip(fn.args, ["M", "N", "K", "A", "lda", "transA", "B", "ldb", "transB",
                                  "C", "ldc", "accumulate", "workspace", "thread_id",
                                  "num_threads", "epilogue", "epilogue_ctx"]):
            a.name = n
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        zero, one = _c64(0), _c64(1)

        nt = _imax(b, nthreads, one)
        bad = b.or_(b.or_(b.icmp_signed("<=", M, zero), b.icmp_signed("<=", N, zero)),
                    b.or_(b.icmp_signed("<", tid, zero), b.icmp_signed(">=", tid, nt)))
        with b.if_then(bad, likely=False):
            b.ret_void()

        # -- this thread's share: split N in NR units or M in MR units, by a cost model.
        uN = _ceil_div_ir(b, N, _c64(NR))
        uM = _ceil_div_ir(b, M, _c64(MR))
        shareN = b.mul(_ceil_div_ir(b, uN, nt), _c64(NR))
        shareM = b.mul(_ceil_div_ir(b, uM, nt), _c64(MR))
        Mpad = b.mul(uM, _c64(MR))
        Npad = b.mul(uN, _c64(NR))
        w = _c64(_PACK_WEIGHT)
        # Both costs are per unit of K: tile work of the largest share + packing of the
        # operand every thread packs in full (A when splitting N, B when splitting M).
        costN = b.add(b.mul(shareN, Mpad), b.mul(w, b.add(M, shareN)))
        costM = b.add(b.mul(shareM, Npad), b.mul(w, b.add(N, shareM)))
        splitN = b.icmp_signed("<=", costN, costM)
        uS = b.select(splitN, uN, uM)
        u0 = b.sdiv(b.mul(tid, uS), nt)
        u1 = b.sdiv(b.mul(b.add(tid, one), uS), nt)
        n0 = b.select(splitN, _imin(b, b.mul(u0, _c64(NR)), N), zero)
        n1 = b.select(splitN, _imin(b, b.mul(u1, _c64(NR)), N), N)
        m0 = b.select(splitN, zero, _imin(b, b.mul(u0, _c64(MR)), M))
        m1 = b.select(splitN, M, _imin(b, b.mul(u1, _c64(MR)), M))
        empty = b.or_(b.icmp_signed(">=", n0, n1), b.icmp_signed(">=", m0, m1))
        with b.if_then(empty, likely=False):
            b.ret_void()

        is_acc = b.icmp_signed("!=", accumulate, ir.Constant(I32, 0))
        has_epi = b.icmp_unsigned("!=", b.ptrtoint(epi, I64), zero)

        def epilogue(row, col, rows, cols, ptr):  # an indirect call through the pointer
            b.call(epi, [epi_ctx, row, col, rows, cols, ptr, ldc])

        # -- K == 0: C = 0 (or unchanged when accumulating) on this thread's share.
        with b.if_then(b.icmp_signed("<=", K, zero), likely=False):
            with b.if_then(b.not_(is_acc)):
                with _for(b, m0, m1, name="zi") as i:
                    row = _gep(b, C, b.mul(i, ldc))
                    with _for(b, n0, n1, name="zj") as j:
                        b.store(self.zero, _gep(b, row, j), align=self.esize)
            with b.if_then(has_epi):
                epilogue(m0, n0, b.sub(m1, m0), b.sub(n1, n0), _gep(b, C, b.add(b.mul(m0, ldc), n0)))
            b.ret_void()

        # -- workspace: this thread's region, aligned to 64 bytes.
        al = self.al
        kc_e = _imin(b, _c64(KC), K)
        mc_e = _imin(b, _c64(MC), _round_up_ir(b, M, MR))
        nc_e = _imin(b, _c64(NC), _round_up_ir(b, N, NR))
        size_a = _round_up_ir(b, b.mul(mc_e, kc_e), al)
        size_b = _round_up_ir(b, b.mul(kc_e, nc_e), al)
        region = b.add(b.add(size_a, size_b), _c64(_round_up(MR * NR, al) + al))
        base = _gep(b, ws, b.mul(tid, region))
        addr = b.ptrtoint(base, I64)
        aligned = b.and_(b.add(addr, _c64(_ALIGN_BYTES - 1)), _c64(-_ALIGN_BYTES))
        packA = b.inttoptr(aligned, self.TP, name="packA")
        packB = _gep(b, packA, size_a)
        tmp = _gep(b, packB, size_b)

        is_ta = b.icmp_signed("!=", transA, ir.Constant(I32, 0))
        is_tb = b.icmp_signed("==", transB, ir.Constant(I32, 1))
        prepacked = b.icmp_signed("==", transB, ir.Constant(I32, 2))
        # Few columns: every packed A panel would serve at most DIRECT_A_COLS / NR tiles,
        # so the microkernel reads A in place instead (strided broadcasts).
        direct_a = b.icmp_signed("<=", b.sub(n1, n0), _c64(DIRECT_A_COLS))
        a_rs = b.select(is_ta, one, lda)  # A's element (i, p) at A[i*a_rs + p*a_ks]
        a_ks = b.select(is_ta, lda, one)

        with _for(b, n0, n1, NC, name="jc") as jc:
            nc = _imin(b, _c64(NC), b.sub(n1, jc))
            with _for(b, 0, K, KC, name="pc") as pc:
                kc = _imin(b, _c64(KC), b.sub(K, pc))
                boff = b.select(is_tb, b.add(b.mul(jc, ldb), pc), b.add(b.mul(pc, ldb), jc))
                with b.if_then(b.not_(prepacked)):
                    b.call(pack_b, [kc, nc, _gep(b, B, boff), ldb, transB, packB])
                beta = b.zext(b.or_(is_acc, b.icmp_signed(">", pc, zero)), I32)
                finish = b.and_(has_epi, b.icmp_signed(">=", b.add(pc, kc), K))
                with _for(b, m0, m1, MC, name="ic") as ic:
                    mc = _imin(b, _c64(MC), b.sub(m1, ic))
                    aoff = b.select(is_ta, b.add(b.mul(pc, lda), ic),
                                    b.add(b.mul(ic, lda), pc))
                    with b.if_then(b.not_(direct_a)):
                        b.call(pack_a, [mc, kc, _gep(b, A, aoff), lda, transA, packA])
                    cblock = _gep(b, C, b.add(b.mul(ic, ldc), jc))
                    with _for(b, 0, nc, NR, name="jr") as jr:
                        nr = _imin(b, _c64(NR), b.sub(nc, jr))
                        # packed panel jr of this block: ours, or the caller's (full K)
                        pbp = b.select(prepacked, _gep(b, B, b.add(b.mul(b.add(jc, jr), K), b.mul(pc, _c64(NR)))),
                                       _gep(b, packB, b.mul(jr, kc)))
                        ccol = _gep(b, cblock, jr)
                        with _for(b, 0, mc, MR, name="ir") as ir_:
                            mr = _imin(b, _c64(MR), b.sub(mc, ir_))
                            ctile = _gep(b, ccol, b.mul(ir_, ldc))
                            with b.if_else(direct_a) as (then, otherwise):
                                with then:
                                    at = b.add(b.mul(b.add(ic, ir_), a_rs), b.mul(pc, a_ks))
                                    args = [kc, _gep(b, A, at), pbp, ctile, ldc, beta, mr, nr, tmp,
                                            a_rs, a_ks]
                                    self.call_tile_kernel(b, strided, strided_variants, mr, nr, args)
                                with otherwise:
                                    args = [kc, _gep(b, packA, b.mul(ir_, kc)), pbp, ctile, ldc,
                                            beta, mr, nr, tmp]
                                    self.call_tile_kernel(b, ukernel, variants, mr, nr, args)
                            with b.if_then(finish):  # the tile is final and in L1
                                epilogue(b.add(ic, ir_), b.add(jc, jr), mr, nr, ctile)
        b.ret_void()
