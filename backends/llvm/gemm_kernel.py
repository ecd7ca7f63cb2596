"""The GEMM's register-blocked microkernel (MR x NR of C in vector registers, packed A and B
streamed through it) and the per-dtype state every GEMM emitter shares."""
from __future__ import annotations

import llvmlite.ir as ir

from .gemm_ir import _cast_ptr, _for, _gep, _get_or_declare, _imin
from .gemm_target import _ALIGN_BYTES, _ELEM, I8P, I32, I64, VOID, GemmTarget, _c64, gemm_name


class GemmKernel:
    """Shared state for emitting one dtype's GEMM functions into a module."""

    def __init__(self, module: ir.Module, dtype: str, target: GemmTarget):
        self.module, self.dtype, self.target = module, dtype, target
        elem_cls, self.esize = _ELEM[dtype]
        self.T = elem_cls()
        self.TP = self.T.as_pointer()
        self.bl = target.blocking(dtype)
        self.VL = target.lanes(dtype)
        self.NV = self.bl.nr // self.VL
        self.V = ir.VectorType(self.T, self.VL)
        self.VP = self.V.as_pointer()
        self.zero = ir.Constant(self.T, 0.0)
        self.vzero = ir.Constant(self.V, [0.0] * self.VL)
        self.al = _ALIGN_BYTES // self.esize
        fma_name = "llvm.fma" if target.has_fma else "llvm.fmuladd"
        vname = f"{fma_name}.v{self.VL}{'f32' if self.esize == 4 else 'f64'}"
        self.vfma = _get_or_declare(module, vname,
                                    ir.FunctionType(self.V, [self.V, self.V, self.V]))
        self.prefetch = _get_or_declare(
            module, "llvm.prefetch.p0", ir.FunctionType(VOID, [I8P, I32, I32, I32]))

    def name(self, suffix: str) -> str:
        return f"{gemm_name(self.dtype)}{suffix}"

    def internal(self, suffix: str, argtys, argnames) -> tuple[ir.Function, ir.IRBuilder]:
        fn = ir.Function(self.module, ir.FunctionType(VOID, argtys), self.name(suffix))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        for a, n in zip(fn.args, argnames):
            a.name = n
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    def vload(self, b, ptr, align):
        return b.load(_cast_ptr(b, ptr, self.VP), align=align)

    def vstore(self, b, val, ptr, align):
        b.store(val, _cast_ptr(b, ptr, self.VP), align=align)

    def splat(self, b, scalar):
        v = b.insert_element(ir.Constant(self.V, ir.Undefined), scalar, _c64(0))
        return b.shuffle_vector(v, ir.Constant(self.V, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, self.VL), [0] * self.VL))

    def do_prefetch(self, b, ptr, write=False, locality=3):
        b.call(self.prefetch, [_cast_ptr(b, ptr, I8P), ir.Constant(I32, int(write)),
                               ir.Constant(I32, locality), ir.Constant(I32, 1)])

    # -- microkernel -------------------------------------------------------------------

    def emit_microkernel(self, rows: int | None = None, nv: int | None = None,
                         strided_a: bool = False) -> ir.Function:
        """void ukernel(i64 kc, T* pa, T* pb, T* c, i64 ldc, i32 beta, i64 mr, i64 nr, T* tmp
                        [, i64 rs, i64 ks])

        C[0:mr, 0:nr] (+)= packed A (MR x kc, k-major) @ packed B (kc x NR, k-major).
        A narrower variant computes only the first `rows` rows and `nv` vectors of the
        tile (mr <= rows, nr <= nv * VL): edge tiles of small matrices (8 output channels,
        4 pixels) then do not pay for a full MR x NR tile of FMAs. Variants always
        store through the temp tile. With `strided_a`, A is read where it lies, element
        (i, p) at pa[i*rs + p*ks], rows past mr reading row mr - 1 (so nothing outside A
        is touched): for few columns of B, packing A would cost more than the tile work."""
        MR, NR, VL, NV = self.bl.mr, self.bl.nr, self.VL, self.NV
        full_tile = rows in (None, MR) and nv in (None, NV) and not strided_a
        MR_P, NR_P = MR, NR  # packed panel strides
        MR, NV = rows or MR, nv or NV
        U = self.target.unroll
        suffix = f"_ukernel_{MR}x{NV * VL}" + ("_strided" if strided_a else "")
        if full_tile:
            suffix = "_ukernel"
        names = ["kc", "pa", "pb", "c", "ldc", "beta", "mr", "nr", "tmp"] + (["rs", "ks"] if strided_a else [])
        fn, b = self.internal(suffix, [I64, self.TP, self.TP, self.TP, I64, I32, I64, I64,
                                       self.TP] + [I64] * (len(names) - 9), names)
        kc, pa, pb, c, ldc, beta, mr, nr, tmp = fn.args[:9]
        for i in (1, 2, 3, 8):
            fn.args[i].add_attribute("noalias")
        # Kept out of line: inlined, a dozen variants bloat the driver's tile loop.
        fn.attributes.add("noinline")
        entry = b.block
        if strided_a:  # loop-invariant offsets: row i's start, and u k-steps
            rs, ks = fn.args[9], fn.args[10]
            last = b.sub(mr, _c64(1))
            row_off = [b.mul(_imin(b, _c64(i), last), rs) for i in range(MR)]
            a_off = [[b.add(row_off[i], b.mul(_c64(u), ks)) for u in range(U)] for i in range(MR)]
            a_step = b.mul(_c64(U), ks)
        else:
            a_off = [[_c64(u * MR_P + i) for u in range(U)] for i in range(MR)]
            a_step = _c64(U * MR_P)

        if self.target.prefetch_c:
            # Bring the C tile towards L1 while the k loop runs (write intent).
            for i in range(MR):
                row = _gep(b, c, b.mul(_c64(i), ldc))
                self.do_prefetch(b, row, write=True)
                self.do_prefetch(b, _gep(b, row, NR - 1), write=True)

        # Main loop, unrolled by U: accumulators are phis, so they live in registers.
        # Narrow tiles have too few independent FMA chains to cover the FMA latency: they
        # keep two accumulator sets (even and odd k steps; tile shapes, and so the summation
        # order of every element, do not depend on the thread split).
        sets = 2 if MR * NV <= 6 else 1
        NA = sets * MR * NV
        n_main = b.and_(kc, _c64(-U)) if U & (U - 1) == 0 else b.mul(b.sdiv(kc, _c64(U)),
                                                                      _c64(U))
        main = b.append_basic_block("k.main")
        rem_head = b.append_basic_block("k.rem.head")
        rem = b.append_basic_block("k.rem")
        store = b.append_basic_block("store")
        b.cbranch(b.icmp_signed(">", n_main, _c64(0)), main, rem_head)

        def emit_steps(b, p_a, p_b, accs, steps):
            accs = list(accs)
            pf = self.target.prefetch_a
            for u in range(steps):
                if pf and not strided_a and u % max(1, 64 // (MR_P * self.esize)) == 0:
                    self.do_prefetch(b, _gep(b, p_a, (u + pf) * MR_P))
                bv = [self.vload(b, _gep(b, p_b, u * NR_P + v * VL), align=VL * self.esize)
                      for v in range(NV)]
                for i in range(MR):
                    a = self.splat(b, b.load(_gep(b, p_a, a_off[i][u]), align=self.esize))
                    for v in range(NV):
                        k = (u % sets) * MR * NV + i * NV + v
                        accs[k] = b.call(self.vfma, [a, bv[v], accs[k]])
            return accs

        # k.main
        b.position_at_end(main)
        p = b.phi(I64, "p")
        pa_phi = b.phi(self.TP, "pa.cur")
        pb_phi = b.phi(self.TP, "pb.cur")
        acc_phis = [b.phi(self.V, f"acc{k}") for k in range(NA)]
        p.add_incoming(_c64(0), entry)
        pa_phi.add_incoming(pa, entry)
        pb_phi.add_incoming(pb, entry)
        for ph in acc_phis:
            ph.add_incoming(self.vzero, entry)
        accs = emit_steps(b, pa_phi, pb_phi, acc_phis, U)
        p_next = b.add(p, _c64(U))
        pa_next = _gep(b, pa_phi, a_step)
        pb_next = _gep(b, pb_phi, U * NR_P)
        p.add_incoming(p_next, main)
        pa_phi.add_incoming(pa_next, main)
        pb_phi.add_incoming(pb_next, main)
        for ph, v in zip(acc_phis, accs):
            ph.add_incoming(v, main)
        b.cbranch(b.icmp_signed("<", p_next, n_main), main, rem_head)

        # k.rem.head: merge entry / main, then the remainder loop (kc % U steps).
        b.position_at_end(rem_head)
        p2 = b.phi(I64, "p2")
        pa2 = b.phi(self.TP, "pa2")
        pb2 = b.phi(self.TP, "pb2")
        acc2 = [b.phi(self.V, f"accr{k}") for k in range(NA)]
        for ph, v0, v1 in [(p2, _c64(0), p_next), (pa2, pa, pa_next), (pb2, pb, pb_next)] + \
                [(acc2[k], self.vzero, accs[k]) for k in range(NA)]:
            ph.add_incoming(v0, entry)
            ph.add_incoming(v1, main)
        b.cbranch(b.icmp_signed("<", p2, kc), rem, store)

        b.position_at_end(rem)
        p3 = b.phi(I64, "p3")
        pa3 = b.phi(self.TP, "pa3")
        pb3 = b.phi(self.TP, "pb3")
        acc3 = [b.phi(self.V, f"accs{k}") for k in range(NA)]
        for ph, v0 in [(p3, p2), (pa3, pa2), (pb3, pb2)] + list(zip(acc3, acc2)):
            ph.add_incoming(v0, rem_head)
        accs3 = emit_steps(b, pa3, pb3, acc3, 1)
        p3n, pa3n, pb3n = b.add(p3, _c64(1)), _gep(b, pa3, fn.args[10] if strided_a else _c64(MR_P)), _gep(b, pb3, NR_P)
        for ph, v1 in [(p3, p3n), (pa3, pa3n), (pb3, pb3n)] + list(zip(acc3, accs3)):
            ph.add_incoming(v1, rem)
        b.cbranch(b.icmp_signed("<", p3n, kc), rem, store)

        # store: full tiles go straight to C, edge tiles through tmp.
        b.position_at_end(store)
        fin = [b.phi(self.V, f"fin{k}") for k in range(NA)]
        for k in range(NA):
            fin[k].add_incoming(acc2[k], rem_head)
            fin[k].add_incoming(accs3[k], rem)
        if sets == 2:  # even and odd k steps, added once
            fin = [b.fadd(fin[k], fin[k + MR * NV]) for k in range(MR * NV)]
        full = b.and_(b.icmp_signed("==", mr, _c64(MR)), b.icmp_signed("==", nr, _c64(NR)))
        if not full_tile:
            full = ir.Constant(ir.IntType(1), 0)
        accumulate = b.icmp_signed("!=", beta, ir.Constant(I32, 0))
        with b.if_else(full) as (then, otherwise):
            with then:
                with b.if_else(accumulate) as (acc_t, acc_f):
                    with acc_t:
                        for i in range(MR):
                            row = _gep(b, c, b.mul(_c64(i), ldc))
                            for v in range(NV):
                                ptr = _gep(b, row, v * VL)
                                old = self.vload(b, ptr, align=self.esize)
                                self.vstore(b, b.fadd(fin[i * NV + v], old), ptr, self.esize)
                    with acc_f:
                        for i in range(MR):
                            row = _gep(b, c, b.mul(_c64(i), ldc))
                            for v in range(NV):
                                self.vstore(b, fin[i * NV + v], _gep(b, row, v * VL),
                                            self.esize)
            with otherwise:
                for i in range(MR):
                    for v in range(NV):
                        self.vstore(b, fin[i * NV + v], _gep(b, tmp, i * NR_P + v * VL),
                                    VL * self.esize)
                with _for(b, 0, mr, name="ei") as i:
                    crow = _gep(b, c, b.mul(i, ldc))
                    trow = _gep(b, tmp, b.mul(i, _c64(NR_P)))
                    with _for(b, 0, nr, name="ej") as j:
                        val = b.load(_gep(b, trow, j), align=self.esize)
                        cp = _gep(b, crow, j)
                        with b.if_then(accumulate):
                            val2 = b.fadd(val, b.load(cp, align=self.esize))
                            b.store(val2, cp, align=self.esize)
                        with b.if_then(b.not_(accumulate)):
                            b.store(val, cp, align=self.esize)
        b.ret_void()
        return fn
