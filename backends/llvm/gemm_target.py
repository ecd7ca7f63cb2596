"""The GEMM's target description (vector width, registers, FMA, the BLIS blocking per dtype)
and the workspace a call needs (see gemm.py for the algorithm)."""
from __future__ import annotations

from dataclasses import dataclass

import llvmlite.ir as ir

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
