"""Generated BLIS-style GEMM for the LLVM backend (llvmlite IR, no BLAS, no C compiler).

`declare_gemm(module, dtype, target)` adds (or reuses by name) to an `llvmlite.ir.Module`

    void graphc_gemm_<f32|f64>(i64 M, i64 N, i64 K,
                               T* A, i64 lda, i32 transA,
                               T* B, i64 ldb, i32 transB,
                               T* C, i64 ldc, i32 accumulate,
                               T* workspace, i64 thread_id, i64 num_threads,
                               void (*epilogue)(i8* ctx, i64 row, i64 col, i64 rows,
                                                i64 cols, T* c, i64 ldc),
                               i8* epilogue_ctx)

computing this thread's share of ``C = op(A) @ op(B)`` (``+ C`` when ``accumulate != 0``)
for row-major matrices. ``op(A)`` is M x K: A is stored M x K (``A[i*lda + p]``), or K x M
when ``transA`` (``A[p*lda + i]``); likewise ``op(B)`` is K x N, stored N x K when
``transB``. Leading dimensions are in elements and may exceed the row length (views).
``transB == 2`` says B is already packed: column panels of NR (zero-padded), each holding
all K rows, ``op(B)[p, j]`` at ``B[(j // NR)*K*NR + p*NR + j % NR]`` (ldb unused): a
producer that writes B this way (convolution columns) spares the packing copy.

Algorithm (Goto/BLIS): five loops around a register-blocked microkernel::

    for jc in [n0, n1) step NC:                    # this thread's columns (or all)
      for pc in [0, K) step KC:
        pack op(B)[pc:pc+kc, jc:jc+nc] -> KC x NR panels (zero-padded)   # L3-resident
        for ic in [m0, m1) step MC:
          pack op(A)[ic:ic+mc, pc:pc+kc] -> MR x KC panels (zero-padded) # L2-resident
          for jr in [0, nc) step NR:                                     # B panel in L1
            for ir in [0, mc) step MR:
              microkernel: MR x NR tile += A panel @ B panel  (kc rank-1 updates)

The microkernel keeps the MR x NR tile in vector registers (AVX2 f32: 6 x 16 = 12 ymm
accumulators, two vector loads of B and six broadcasts of A per k, `llvm.fma`), unrolls
the k loop by `target.unroll`, and writes a full tile straight to C (loading C only when
accumulating, so garbage/NaN in C never leaks into a non-accumulating result). Edge tiles
(mr < MR or nr < NR) go through a small MR x NR temp tile in the workspace and a scalar
copy, so the kernel always computes full, zero-padded tiles.

Threading contract. The caller runs the function once per thread with ``thread_id`` in
``[0, num_threads)``; each call computes a disjoint part of C, so no synchronisation is
needed and the calls may run concurrently. The split is over N (in units of NR columns)
or over M (in units of MR rows), chosen at run time by a small cost model (padded tile
work of the largest share + redundant packing of the operand each thread must pack in
full); every thread evaluates the same model, so the shares always tile C exactly. The
arithmetic for each element is the same for every thread count and split (one FMA chain
per KC block, blocks added in order), so results are bitwise identical for any
``num_threads``. `emit_parallel_gemm_entry` generates a ready-made OpenMP (libgomp)
entry that does this, and `emit_gomp_parallel_call` / `emit_parallel_region` are the
generic outlining helpers the code generator can reuse for any parallel loop.

Workspace. ``workspace`` must hold ``workspace_elements(M, N, K, num_threads, target,
dtype)`` elements of T; each thread uses its own region (base ``workspace + thread_id *
region``, rounded up to 64 bytes inside the function), so the same buffer serves all
threads. Only element alignment is required of A, B, C and workspace. A, B, C must not
overlap the workspace; C must not overlap A or B.

Batched GEMM is the caller's loop: for b in batch, call the function with
``A + b*stride_a``, ``B + b*stride_b``, ``C + b*stride_c`` (stride 0 broadcasts an
operand), the same workspace and thread arguments. The function is kept per-matrix so a
caller can parallelise over the batch instead when the matrices are small: worker w calls
it with ``thread_id=0, num_threads=1`` and workspace ``ws + w * workspace_elements(M, N,
K, 1, target, dtype)``.

Calling it from generated code. ``declare_gemm`` once per module and dtype (it defines
internal helpers ``graphc_gemm_<dt>_{ukernel,pack_a,pack_b}`` beside it), then either
call it inside your own outlined parallel region with the team's (thread_id,
num_threads) -- `emit_parallel_region` does the outlining -- or call
``graphc_gemm_<dt>_parallel`` (from `emit_parallel_gemm_entry`), which opens its own
team. Do not open a team from inside a team (nested GOMP_parallel runs serially). The
process must have libgomp loaded before the module is finalised (`load_libgomp`); an AOT
shared library must list libgomp.so.1 as a dependency. libgomp reads OMP_WAIT_POLICY and
GOMP_SPINCOUNT when it is loaded: its default (spin ~300k iterations before sleeping) gives
~1 us per parallel call on an idle machine; passive waiting costs ~10 us per call but
degrades far less when other processes compete for the cores.

Fused epilogue. When ``epilogue`` is not null, each MR x NR tile of C is handed to it as
soon as its last KC block is accumulated, while the tile is still in L1:
``epilogue(epilogue_ctx, row, col, rows, cols, &C[row*ldc + col], ldc)`` may rewrite those
``rows x cols`` elements in place (bias, activation, residual add: the caller's generated
code). Every element of C goes through it exactly once, on the thread that computed it;
when K == 0 it gets the thread's whole share at once. A null ``epilogue`` leaves C as the
product (alpha is not part of this function: fold it into an operand or the epilogue).
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from dataclasses import dataclass

import llvmlite.ir as ir

__all__ = [
    "GemmBlocking", "GemmTarget", "declare_gemm", "workspace_elements", "gemm_name",
    "emit_parallel_gemm_entry", "emit_gomp_parallel_call", "emit_parallel_region",
    "declare_omp_thread_info", "create_host_target_machine", "optimize_module",
    "CompiledGemm", "load_libgomp",
]

I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
I8P = I8.as_pointer()
VOID = ir.VoidType()

_ELEM = {"f32": (ir.FloatType, 4), "f64": (ir.DoubleType, 8)}
_ALIGN_BYTES = 64  # packed panels and the temp tile start on a cache line


def _c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


# -- target description --------------------------------------------------------------------

@dataclass(frozen=True)
class GemmBlocking:
    """Register tile MR x NR and cache blocks: KC (k depth of a panel), MC (rows of A
    packed per L2 block, a multiple of MR) and NC (columns of B packed per L3 block, a
    multiple of NR)."""
    mr: int
    nr: int
    kc: int
    mc: int
    nc: int

    def __post_init__(self):
        if min(self.mr, self.nr, self.kc, self.mc, self.nc) <= 0:
            raise ValueError(f"GEMM blocking must be positive: {self}")
        if self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"MC must be a multiple of MR and NC of NR: {self}")


@dataclass(frozen=True)
class GemmTarget:
    """What the GEMM generator needs to know about the CPU.

    `vector_width` is in f32 lanes (8 for AVX/AVX2, 16 for AVX-512, 4 for SSE);
    `num_registers` the vector register count (16, or 32 with AVX-512); `has_fma` selects
    `llvm.fma` (else `llvm.fmuladd`, which LLVM splits into mul + add). `f32`/`f64` hold the
    blocking per dtype, whose NR must be a multiple of that dtype's lane count.
    `unroll` is the k-loop unroll factor of the microkernel; `prefetch_a` the distance
    (in k steps, 0 = off) at which the microkernel prefetches the packed A panel."""
    vector_width: int = 8
    num_registers: int = 16
    has_fma: bool = True
    # AVX2 (16 ymm), tuned on Zen 3 (32 KB L1d, 512 KB L2): the KC x NR B micro-panel
    # (24 KB) stays in L1 while A micro-panels stream, the MC x KC A block (216 KB) sits in
    # L2, and NC bounds the KC x NC B block (L3). KC=384 measured ~3% faster than 256 at
    # 2048 (fewer C tile updates per flop); MC and the A prefetch made no measurable difference.
    f32: GemmBlocking = GemmBlocking(mr=6, nr=16, kc=384, mc=144, nc=4080)
    f64: GemmBlocking = GemmBlocking(mr=6, nr=8, kc=384, mc=72, nc=4080)
    unroll: int = 4
    prefetch_a: int = 0
    prefetch_c: bool = True

    def __post_init__(self):
        for dt in ("f32", "f64"):
            bl, lanes = self.blocking(dt), self.lanes(dt)
            if bl.nr % lanes:
                raise ValueError(f"{dt} NR={bl.nr} is not a multiple of {lanes} lanes")
            if bl.mr * (bl.nr // lanes) + bl.nr // lanes + 1 > self.num_registers:
                raise ValueError(f"{dt} tile {bl.mr}x{bl.nr} needs more than "
                                 f"{self.num_registers} vector registers")
        if self.unroll < 1:
            raise ValueError("unroll must be >= 1")

    def lanes(self, dtype: str) -> int:
        return self.vector_width * 4 // _ELEM[_check_dtype(dtype)][1]

    def blocking(self, dtype: str) -> GemmBlocking:
        return getattr(self, _check_dtype(dtype))

    @classmethod
    def for_features(cls, features) -> "GemmTarget":
        """From a feature map (name -> enabled), e.g. llvmlite's get_host_cpu_features()."""
        on = {k for k, v in dict(features).items() if v}
        if "avx512f" in on:
            # 32 zmm: 14 x 32 f32 tile = 28 accumulators + 2 B vectors + 1 broadcast.
            return cls(vector_width=16, num_registers=32, has_fma=True,
                       f32=GemmBlocking(mr=14, nr=32, kc=256, mc=168, nc=4096),
                       f64=GemmBlocking(mr=14, nr=16, kc=256, mc=84, nc=4096))
        if "avx" in on:
            return cls(vector_width=8, num_registers=16, has_fma="fma" in on)
        return cls(vector_width=4, num_registers=16, has_fma="fma" in on,
                   f32=GemmBlocking(mr=6, nr=8, kc=256, mc=144, nc=4080),
                   f64=GemmBlocking(mr=6, nr=4, kc=256, mc=72, nc=4080))

    @classmethod
    def for_host(cls) -> "GemmTarget":
        import llvmlite.binding as llvm
        return cls.for_features(llvm.get_host_cpu_features())


def _check_dtype(dtype: str) -> str:
    if dtype not in _ELEM:
        raise ValueError(f"GEMM dtype must be 'f32' or 'f64', got {dtype!r}")
    return dtype


def gemm_name(dtype: str) -> str:
    return f"graphc_gemm_{_check_dtype(dtype)}"


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _region_elements(M: int, N: int, K: int, bl: GemmBlocking, esize: int) -> int:
    """Per-thread workspace region in elements; `_Gen.emit_driver` computes the same."""
    al = _ALIGN_BYTES // esize
    kc = min(bl.kc, max(K, 1))
    mc = min(bl.mc, _round_up(max(M, 1), bl.mr))
    nc = min(bl.nc, _round_up(max(N, 1), bl.nr))
    return (_round_up(mc * kc, al) + _round_up(kc * nc, al) + _round_up(bl.mr * bl.nr, al)
            + al)


def workspace_elements(M: int, N: int, K: int, num_threads: int, target: GemmTarget,
                       dtype: str = "f32") -> int:
    """Elements of `dtype` the `workspace` argument must hold for this problem when run
    on `num_threads` threads (one region per thread, each 64-byte aligned internally)."""
    _, esize = _ELEM[_check_dtype(dtype)]
    return max(int(num_threads), 1) * _region_elements(int(M), int(N), int(K),
                                                       target.blocking(dtype), esize)


# -- IR helpers ------------------------------------------------------------------------------

def _imin(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _imax(b, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _round_up_ir(b, x, m: int):
    return b.mul(b.sdiv(b.add(x, _c64(m - 1)), _c64(m)), _c64(m))


def _ceil_div_ir(b, x, y):
    return b.sdiv(b.sub(b.add(x, y), _c64(1)), y)


@contextmanager
def _for(b: ir.IRBuilder, start, stop, step=1, name="i"):
    """``for (iv = start; iv < stop; iv += step)`` on signed i64; yields iv."""
    start = _c64(start) if isinstance(start, int) else start
    stop = _c64(stop) if isinstance(stop, int) else stop
    step = _c64(step) if isinstance(step, int) else step
    pre = b.block
    head = b.append_basic_block(name + ".head")
    body = b.append_basic_block(name + ".body")
    end = b.append_basic_block(name + ".end")
    b.branch(head)
    b.position_at_end(head)
    iv = b.phi(I64, name)
    iv.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", iv, stop), body, end)
    b.position_at_end(body)
    yield iv
    iv.add_incoming(b.add(iv, step, name + ".next"), b.block)
    b.branch(head)
    b.position_at_end(end)


def _get_or_declare(module: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, fnty, name)
    return fn


def _gep(b, ptr, idx):
    return b.gep(ptr, [idx if not isinstance(idx, int) else _c64(idx)])


def _cast_ptr(b, ptr, ty):
    return ptr if ptr.type == ty else b.bitcast(ptr, ty)


class _Gen:
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


# Packing one element costs about this many multiply-adds of tile work (split choice).
_PACK_WEIGHT = 8
# A thread's share of at most this many columns reads A unpacked (see emit_microkernel).
DIRECT_A_COLS = 32


def epilogue_fnty(T) -> ir.FunctionType:
    """void epilogue(i8* ctx, i64 row, i64 col, i64 rows, i64 cols, T* c, i64 ldc)."""
    return ir.FunctionType(VOID, [I8P, I64, I64, I64, I64, T.as_pointer(), I64])


def _gemm_fnty(T) -> ir.FunctionType:
    TP = T.as_pointer()
    return ir.FunctionType(VOID, [I64, I64, I64, TP, I64, I32, TP, I64, I32, TP, I64, I32,
                                  TP, I64, I64, epilogue_fnty(T).as_pointer(), I8P])


def declare_gemm(module: ir.Module, dtype: str, target: GemmTarget) -> ir.Function:
    """Define ``graphc_gemm_<dtype>`` (and its internal helpers) in `module`, or return the
    existing definition. See the module docstring for the contract."""
    name = gemm_name(dtype)
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    gen = _Gen(module, dtype, target)
    fn = ir.Function(module, _gemm_fnty(gen.T), name)
    gen.emit_driver(fn)
    return fn


# -- OpenMP (libgomp) outlining ----------------------------------------------------------

def emit_gomp_parallel_call(builder: ir.IRBuilder, module: ir.Module, outlined_fn: ir.Function,
                            data_ptr, num_threads) -> None:
    """Emit ``GOMP_parallel(outlined_fn, data_ptr, num_threads, 0)`` at `builder`.

    `outlined_fn` is ``void (i8*)`` (any pointer parameter type is bitcast); it runs on
    every thread of the team, the calling thread included, and GOMP_parallel returns
    after all have finished (implicit barrier). `num_threads` is an integer value or
    Python int; 0 means the OpenMP default (OMP_NUM_THREADS, else the core count). Inside,
    use `declare_omp_thread_info` for the thread's id and the team size (the team may be
    smaller than requested). The process must have libgomp loaded (`load_libgomp`)."""
    fnptr_ty = ir.FunctionType(VOID, [I8P]).as_pointer()
    gomp = _get_or_declare(module, "GOMP_parallel",
                           ir.FunctionType(VOID, [fnptr_ty, I8P, I32, I32]))
    if isinstance(num_threads, int):
        nt = ir.Constant(I32, num_threads)
    elif num_threads.type.width > 32:
        nt = builder.trunc(num_threads, I32)
    elif num_threads.type.width < 32:
        nt = builder.zext(num_threads, I32)
    else:
        nt = num_threads
    builder.call(gomp, [_cast_ptr(builder, outlined_fn, fnptr_ty),
                        _cast_ptr(builder, data_ptr, I8P), nt, ir.Constant(I32, 0)])


def declare_omp_thread_info(builder: ir.IRBuilder, module: ir.Module):
    """Emit calls returning (thread_num, num_threads) of the current OpenMP team as i64."""
    fty = ir.FunctionType(I32, [])
    tid = builder.call(_get_or_declare(module, "omp_get_thread_num", fty), [])
    nt = builder.call(_get_or_declare(module, "omp_get_num_threads", fty), [])
    return builder.sext(tid, I64), builder.sext(nt, I64)


def emit_parallel_region(builder: ir.IRBuilder, module: ir.Module, name: str, values,
                         body, num_threads) -> ir.Function:
    """Outline a parallel region: pack `values` into a stack struct, define an internal
    ``void name(i8*)`` that unpacks them and calls ``body(b, unpacked, thread_id,
    num_threads)`` (i64 ids from omp_get_thread_num/omp_get_num_threads), and call it
    through GOMP_parallel from `builder`. `body` must leave `b` in an open block (the
    helper adds ``ret void``). Returns the outlined function."""
    values = list(values)
    sty = ir.LiteralStructType([v.type for v in values])
    fn = ir.Function(module, ir.FunctionType(VOID, [I8P]), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    ob = ir.IRBuilder(fn.append_basic_block("entry"))
    sp = ob.bitcast(fn.args[0], sty.as_pointer())
    unpacked = [ob.load(ob.gep(sp, [ir.Constant(I32, 0), ir.Constant(I32, i)]))
                for i in range(len(values))]
    tid, nt = declare_omp_thread_info(ob, module)
    body(ob, unpacked, tid, nt)
    ob.ret_void()

    # The struct lives in the caller's frame for the duration of the (synchronous) call.
    fn_entry = builder.function.entry_basic_block
    with builder.goto_block(fn_entry):
        if fn_entry.instructions:
            builder.position_before(fn_entry.instructions[0])
        slot = builder.alloca(sty, name=name + ".args")
    for i, v in enumerate(values):
        builder.store(v, builder.gep(slot, [ir.Constant(I32, 0), ir.Constant(I32, i)]))
    emit_gomp_parallel_call(builder, module, fn, slot, num_threads)
    return fn


def emit_parallel_gemm_entry(module: ir.Module, dtype: str, target: GemmTarget) -> ir.Function:
    """Define ``void graphc_gemm_<dtype>_parallel(M, N, K, A, lda, transA, B, ldb, transB,
    C, ldc, accumulate, workspace, i64 num_threads)``: runs the GEMM on an OpenMP team of
    `num_threads` (0 = OpenMP default) threads, each computing its share. The workspace
    must be sized for the team size actually obtained, which is at most `num_threads`
    (or the default team size when 0)."""
    name = gemm_name(dtype) + "_parallel"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    gemm = declare_gemm(module, dtype, target)
    T = gemm.function_type.args[3]
    fty = ir.FunctionType(VOID, [I64, I64, I64, T, I64, I32, T, I64, I32, T, I64, I32, T,
                                 I64])
    fn = ir.Function(module, fty, name)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    no_epi = ir.Constant(gemm.function_type.args[15], None)

    def body(ob, vals, tid, nt):
        ob.call(gemm, list(vals) + [tid, nt, no_epi, ir.Constant(I8P, None)])

    emit_parallel_region(b, module, name + ".omp_fn", fn.args[:13], body, fn.args[13])
    b.ret_void()
    return fn


# -- compiling and calling (tests, benchmarks, standalone use) ----------------------------

def create_host_target_machine(opt: int = 3):
    """A TargetMachine for this CPU (name and features from LLVM's host detection)."""
    import llvmlite.binding as llvm
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=opt, codemodel="jitdefault")


def optimize_module(llmod, tm, speed_level: int = 3) -> None:
    """Run LLVM's default per-module O<speed_level> pipeline (new pass manager)."""
    import llvmlite.binding as llvm
    pto = llvm.create_pipeline_tuning_options(speed_level=speed_level)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    mpm.run(llmod, pb)


_libgomp_loaded = False


def load_libgomp(spin_count: int | None = None) -> None:
    """Make libgomp's symbols (GOMP_parallel, omp_get_*) visible to the MCJIT linker.

    libgomp reads its wait policy from the environment when it is first loaded. With
    `spin_count` given, and neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set by the user,
    GOMP_SPINCOUNT is set to it first (e.g. 10000: idle workers spin ~0.1 ms instead of
    several ms, which keeps ~1 us parallel-call latency but yields the core much sooner to
    other processes). It has no effect if libgomp is already loaded in the process."""
    global _libgomp_loaded
    if _libgomp_loaded:
        return
    import ctypes.util
    import os
    import llvmlite.binding as llvm
    if spin_count is not None and not ({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)):
        os.environ["GOMP_SPINCOUNT"] = str(int(spin_count))
    errors = []
    for cand in ("libgomp.so.1", ctypes.util.find_library("gomp"),
                 "/lib/x86_64-linux-gnu/libgomp.so.1", "/usr/lib/x86_64-linux-gnu/libgomp.so.1"):
        if not cand:
            continue
        try:
            llvm.load_library_permanently(cand)
            _libgomp_loaded = True
            return
        except Exception as exc:  # noqa: BLE001 - try the next candidate
            errors.append(f"{cand}: {exc}")
    raise RuntimeError("cannot load libgomp: " + "; ".join(errors))


class CompiledGemm:
    """JIT-compiled GEMMs (f32 and f64, per-thread and OpenMP entries) callable on numpy
    arrays. For tests, benchmarks and as a reference for how generated code calls it."""

    _ARGS = (ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
             ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p,
             ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p)

    def __init__(self, target: GemmTarget | None = None, dtypes=("f32", "f64"),
                 openmp: bool = True):
        import llvmlite.binding as llvm
        self.target = target or GemmTarget.for_host()
        self.tm = create_host_target_machine()
        if openmp:
            load_libgomp()
        module = ir.Module(name="graphc_gemm")
        module.triple = llvm.get_process_triple()
        module.data_layout = str(self.tm.target_data)
        for dt in dtypes:
            declare_gemm(module, dt, self.target)
            if openmp:
                emit_parallel_gemm_entry(module, dt, self.target)
        self.llvm_ir = str(module)
        llmod = llvm.parse_assembly(self.llvm_ir)
        llmod.verify()
        optimize_module(llmod, self.tm)
        self.optimized_ir = str(llmod)
        self.engine = llvm.create_mcjit_compiler(llmod, self.tm)
        self.engine.finalize_object()
        self.kernels, self.parallel = {}, {}
        for dt in dtypes:
            self.kernels[dt] = ctypes.CFUNCTYPE(None, *self._ARGS, ctypes.c_int64,
                                                ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p)(
                self.engine.get_function_address(gemm_name(dt)))
            if openmp:
                self.parallel[dt] = ctypes.CFUNCTYPE(None, *self._ARGS, ctypes.c_int64)(
                    self.engine.get_function_address(gemm_name(dt) + "_parallel"))
        self._ws: dict[str, object] = {}

    def assembly(self) -> str:
        """Machine code (text) of the optimised module, for inspection."""
        import llvmlite.binding as llvm
        return self.tm.emit_assembly(llvm.parse_assembly(self.optimized_ir))

    @staticmethod
    def operands(a, b, c, trans_a=False, trans_b=False):
        """(M, N, K, lda, ldb, ldc) for 2-D numpy views with unit inner stride."""
        for name, x in (("a", a), ("b", b), ("c", c)):
            if x.ndim != 2 or (x.size and ((x.shape[1] > 1 and x.strides[1] != x.itemsize)
                                           or x.strides[0] % x.itemsize or x.strides[0] < 0)):
                raise ValueError(f"{name} must be a 2-D row-major view with unit column "
                                 f"stride, got strides {x.strides}")
            if x.dtype != c.dtype:
                raise ValueError("a, b, c must share a dtype")
        M, K = (a.shape[1], a.shape[0]) if trans_a else a.shape
        Kb, N = (b.shape[1], b.shape[0]) if trans_b else b.shape
        if Kb != K or c.shape != (M, N):
            raise ValueError(f"shape mismatch: op(a) {M}x{K}, op(b) {Kb}x{N}, c {c.shape}")
        ld = [max(x.strides[0] // x.itemsize if x.shape[0] > 1 else 0, x.shape[1], 1)
              for x in (a, b, c)]
        return M, N, K, ld[0], ld[1], ld[2]

    def workspace(self, dtype: str, M, N, K, num_threads):
        import numpy as np
        n = workspace_elements(M, N, K, num_threads, self.target, dtype)
        ws = self._ws.get(dtype)
        if ws is None or ws.size < n:
            ws = np.empty(n, dtype=np.float32 if dtype == "f32" else np.float64)
            self._ws[dtype] = ws
        return ws

    def args(self, a, b, c, trans_a=False, trans_b=False, accumulate=False, num_threads=1):
        dt = {"float32": "f32", "float64": "f64"}[c.dtype.name]
        M, N, K, lda, ldb, ldc = self.operands(a, b, c, trans_a, trans_b)
        ws = self.workspace(dt, M, N, K, num_threads)
        return dt, (M, N, K, a.ctypes.data, lda, int(trans_a), b.ctypes.data, ldb,
                    int(trans_b), c.ctypes.data, ldc, int(accumulate), ws.ctypes.data)

    def __call__(self, a, b, c, trans_a=False, trans_b=False, accumulate=False,
                 num_threads=1, thread_id=None, openmp=True):
        """c (+)= op(a) @ op(b). With `thread_id` given, computes only that share of a
        `num_threads` split; else all of it, on an OpenMP team when `openmp` and
        num_threads > 1, otherwise sequentially share by share."""
        dt, args = self.args(a, b, c, trans_a, trans_b, accumulate, num_threads)
        if thread_id is not None:
            self.kernels[dt](*args, thread_id, num_threads, None, None)
        elif openmp and num_threads > 1 and dt in self.parallel:
            self.parallel[dt](*args, num_threads)
        else:
            for t in range(num_threads):
                self.kernels[dt](*args, t, num_threads, None, None)
        return c
