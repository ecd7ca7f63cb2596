"""Packing for the GEMM: op(A) into MR-row panels and op(B) into NR-column panels, k-major and
zero-padded, with in-register transposes. A mixin of gemm._Gen."""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_ir import _cast_ptr, _for, _gep, _imin
from .gemm_target import I32, I64, _c64


class GemmPacking:
    """pack_a / pack_b (state in gemm_kernel.GemmKernel)."""

    # -- packing -------------------------------------------------------------------------

    def transpose(self, b, rows):
        """Transpose VL vectors of VL lanes (log2(VL) butterfly stages of two-source
        shuffles: unpck/shufps/vperm2f128 on AVX2). Constant rows fold away."""
        n = self.VL
        rows = list(rows)
        h = n // 2
        while h >= 1:
            new = list(rows)
            lo = ir.Constant(ir.VectorType(I32, n),
                             [l if not l & h else n + l - h for l in range(n)])
            hi = ir.Constant(ir.VectorType(I32, n),
                             [l + h if not l & h else n + l for l in range(n)])
            for i in range(n):
                if not i & h:
                    new[i] = b.shuffle_vector(rows[i], rows[i + h], lo)
                    new[i + h] = b.shuffle_vector(rows[i], rows[i + h], hi)
            rows = new
            h //= 2
        return rows

    def store_prefix(self, b, vec, n: int, ptr):
        """Store the first n lanes of `vec` (an <n x T> store, legalised to 4+2 etc.)."""
        if n == self.VL:
            self.vstore(b, vec, ptr, self.esize)
            return
        ty = ir.VectorType(self.T, n)
        part = b.shuffle_vector(vec, ir.Constant(self.V, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, n), list(range(n))))
        b.store(part, _cast_ptr(b, ptr, ty.as_pointer()), align=self.esize)

    def emit_pack_b(self) -> ir.Function:
        """void pack_b(i64 kc, i64 nc, T* src, i64 ld, i32 trans, T* dst)

        op(B)[0:kc, 0:nc] -> ceil(nc/NR) panels of kc x NR (row p of a panel contiguous),
        panel j at dst + j*kc*NR (64-byte aligned), columns past nc zero-filled.
        op(B)(p, j) is src[p*ld + j], or src[j*ld + p] when trans."""
        NR, VL, NV = self.bl.nr, self.VL, self.NV
        fn, b = self.internal("_pack_b", [I64, I64, self.TP, I64, I32, self.TP],
                              ["kc", "nc", "src", "ld", "trans", "dst"])
        kc, nc, src, ld, trans, dst = fn.args
        fn.args[2].add_attribute("noalias")
        fn.args[5].add_attribute("noalias")
        is_t = b.icmp_signed("!=", trans, ir.Constant(I32, 0))
        kc_vec = b.mul(b.sdiv(kc, _c64(VL)), _c64(VL))
        with _for(b, 0, nc, NR, name="jr") as jr:
            nr = _imin(b, _c64(NR), b.sub(nc, jr))
            panel = _gep(b, dst, b.mul(jr, kc))
            full = b.icmp_signed("==", nr, _c64(NR))
            with b.if_else(full) as (then, otherwise):
                with then:
                    with b.if_else(is_t) as (t_yes, t_no):
                        with t_no:   # done below, k outer (rows of src read in order)
                            pass
                        with t_yes:  # column j of op(B) is row j of src: VL x VL transposes
                            rows = [_gep(b, src, b.mul(b.add(jr, _c64(j)), ld))
                                    for j in range(NR)]
                            with _for(b, 0, kc_vec, VL, name="pv") as p:
                                for v in range(NV):
                                    vecs = [self.vload(b, _gep(b, rows[v * VL + l], p),
                                                       self.esize) for l in range(VL)]
                                    for q, t in enumerate(self.transpose(b, vecs)):
                                        d = _gep(b, panel, b.add(b.mul(b.add(p, _c64(q)),
                                                                       _c64(NR)), _c64(v * VL)))
                                        self.vstore(b, t, d, VL * self.esize)
                            with _for(b, kc_vec, kc, name="ps") as p:
                                d = _gep(b, panel, b.mul(p, _c64(NR)))
                                for j in range(NR):
                                    x = b.load(_gep(b, rows[j], p), align=self.esize)
                                    b.store(x, _gep(b, d, j), align=self.esize)
                with otherwise:      # edge panel: zero-fill, then copy nr columns
                    with _for(b, 0, kc, name="pz") as p:
                        d = _gep(b, panel, b.mul(p, _c64(NR)))
                        for v in range(NV):
                            self.vstore(b, self.vzero, _gep(b, d, v * VL), VL * self.esize)
                    with _for(b, 0, nr, name="je") as j:
                        col = b.add(jr, j)
                        with _for(b, 0, kc, name="pe") as p:
                            off = b.select(is_t, b.add(b.mul(col, ld), p),
                                           b.add(b.mul(p, ld), col))
                            x = b.load(_gep(b, src, off), align=self.esize)
                            b.store(x, _gep(b, panel, b.add(b.mul(p, _c64(NR)), j)),
                                    align=self.esize)
        # Full panels of a non-transposed B: k outer, panels inner, so each row of src
        # is read once and sequentially (a panel-outer order reads kc lines ld apart per
        # panel, which thrashes L1/L2 sets when ld is a power of two), NR-element rows
        # are copied with vector loads/stores.
        with b.if_then(b.not_(is_t)):
            nc_full = b.mul(b.sdiv(nc, _c64(NR)), _c64(NR))
            with _for(b, 0, kc, name="p") as p:
                s = _gep(b, src, b.mul(p, ld))
                d0 = _gep(b, dst, b.mul(p, _c64(NR)))
                with _for(b, 0, nc_full, NR, name="jr") as jr:
                    s1 = _gep(b, s, jr)
                    d = _gep(b, d0, b.mul(jr, kc))
                    for v in range(NV):
                        x = self.vload(b, _gep(b, s1, v * VL), self.esize)
                        self.vstore(b, x, _gep(b, d, v * VL), VL * self.esize)
        b.ret_void()
        return fn

    def emit_pack_a(self) -> ir.Function:
        """void pack_a(i64 mc, i64 kc, T* src, i64 ld, i32 trans, T* dst)

        op(A)[0:mc, 0:kc] -> ceil(mc/MR) panels of MR x kc stored k-major (MR values per
        k contiguous), panel i at dst + i*kc*MR, rows past mc zero-filled. op(A)(i, p) is
        src[i*ld + p], or src[p*ld + i] when trans."""
        MR, VL = self.bl.mr, self.VL
        fn, b = self.internal("_pack_a", [I64, I64, self.TP, I64, I32, self.TP],
                              ["mc", "kc", "src", "ld", "trans", "dst"])
        mc, kc, src, ld, trans, dst = fn.args
        fn.args[2].add_attribute("noalias")
        fn.args[5].add_attribute("noalias")
        is_t = b.icmp_signed("!=", trans, ir.Constant(I32, 0))
        mc_full = b.mul(b.sdiv(mc, _c64(MR)), _c64(MR))
        kc_vec = b.mul(b.sdiv(kc, _c64(VL)), _c64(VL))
        MRV = ir.VectorType(self.T, MR)
        with b.if_else(is_t) as (t_yes, t_no):
            with t_no:
                # Full panels: MR row streams; VL x VL transposes (rows >= MR are zero),
                # each transposed vector's first MR lanes are one k step of the panel.
                with _for(b, 0, mc_full, MR, name="ir") as ir_:
                    panel = _gep(b, dst, b.mul(ir_, kc))
                    rows = [_gep(b, src, b.mul(b.add(ir_, _c64(i)), ld)) for i in range(MR)]
                    if MR <= VL:
                        with _for(b, 0, kc_vec, VL, name="pv") as p:
                            vecs = [self.vload(b, _gep(b, rows[i], p), self.esize)
                                    for i in range(MR)] + [self.vzero] * (VL - MR)
                            for q, t in enumerate(self.transpose(b, vecs)):
                                self.store_prefix(b, t, MR, _gep(
                                    b, panel, b.mul(b.add(p, _c64(q)), _c64(MR))))
                        rest = kc_vec
                    else:
                        rest = _c64(0)
                    with _for(b, rest, kc, name="ps") as p:
                        d = _gep(b, panel, b.mul(p, _c64(MR)))
                        for i in range(MR):
                            x = b.load(_gep(b, rows[i], p), align=self.esize)
                            b.store(x, _gep(b, d, i), align=self.esize)
            with t_yes:
                # Full panels: MR contiguous elements per k. k outer, panels inner, so
                # each source row (a k) is read once, sequentially.
                with _for(b, 0, kc, name="p") as p:
                    s = _gep(b, src, b.mul(p, ld))
                    with _for(b, 0, mc_full, MR, name="ir") as ir_:
                        x = b.load(_cast_ptr(b, _gep(b, s, ir_), MRV.as_pointer()),
                                   align=self.esize)
                        d = _gep(b, dst, b.add(b.mul(ir_, kc), b.mul(p, _c64(MR))))
                        b.store(x, _cast_ptr(b, d, MRV.as_pointer()), align=self.esize)
        # The edge panel (mc % MR rows), zero-padded to MR; never reads past the matrix.
        with b.if_then(b.icmp_signed("<", mc_full, mc)):
            mr = b.sub(mc, mc_full)
            panel = _gep(b, dst, b.mul(mc_full, kc))
            with _for(b, 0, kc, name="pe") as p:
                d = _gep(b, panel, b.mul(p, _c64(MR)))
                for i in range(MR):
                    row = b.add(mc_full, _c64(i))
                    inside = b.icmp_signed("<", _c64(i), mr)
                    off = b.select(is_t, b.add(b.mul(p, ld), row), b.add(b.mul(row, ld), p))
                    with b.if_else(inside) as (yes, no):
                        with yes:
                            x = b.load(_gep(b, src, off), align=self.esize)
                            b.store(x, _gep(b, d, i), align=self.esize)
                        with no:
                            b.store(self.zero, _gep(b, d, i), align=self.esize)
        b.ret_void()
        return fn
