"""Vectorisable transcendental functions in LLVM IR (llvmlite.ir).

``declare_math(module, name, dtype)`` returns the function ``graphc.<name>.<f32|f64>`` of
``module``, defining it on first use (later calls find it by name).  Every function is
``internal`` and ``alwaysinline``; its body is one basic block of branch-free arithmetic,
``select``, bitcasts, integer bit manipulation, int<->float conversions through i32 and the
intrinsics ``llvm.fma``, ``llvm.fabs``, ``llvm.floor``, ``llvm.rint``, ``llvm.sqrt`` and
``llvm.copysign``.  After inlining, the loop vectoriser turns a loop that calls one into
``<8 x float>`` / ``<4 x double>`` code on AVX2 (no libm call per element).  No fast-math
flags are used, so LLVM keeps the evaluation order written here (several steps rely on it:
exact Cody-Waite products through fma, two-sum).  The target needs hardware FMA (x86-64-v3:
AVX2+FMA) to be fast: without it ``llvm.fma`` becomes a correct but slow libm call.
f16 callers compute via f32.

Functions (``MATH_FUNCS``) and accuracy
---------------------------------------
Maximum error in ulp of the result type.  The f32/f64 columns give the largest error found:
f32 over every second or third float (every float for tanh, sin and cos in the ranges
below), f64 over ~30 million random bit patterns and dense sweeps, pow over ~4 million
(x, y) pairs per type; references are float64 numpy (f32) and x87 long double numpy (f64;
erf by a long double series; the double-word log inside pow checked against mpmath).
``bound`` is what ``tests/backends/test_llvm_mathlib.py`` asserts (``ACCURACY``).

========  ======================================  ========  =====  ========  =====
name      domain                                  f32       bound  f64       bound
========  ======================================  ========  =====  ========  =====
exp       all x (overflow +inf, subnormal, 0)     0.98      1.0    1.00      1.5
expm1     all x                                   1.30      1.5    1.89      2.0
log       x >= 0 incl. subnormals                 0.84      1.0    0.84      1.0
tanh      all x                                   1.29      1.5    1.29      1.5
sigmoid   all x                                   2.40      2.5    2.36      2.5
erf       all x                                   0.99      1.5    1.03      1.5
sin       |x| <= 1e5 (f32), |x| <= 1e9 (f64)      1.49      1.5    1.49      2.0
cos       |x| <= 1e5 (f32), |x| <= 1e9 (f64)      1.49      1.5    1.50      2.0
pow       x > 0, |y*log(x)| <= 88 (f32) / 700;    1.14      1.5    1.15      1.5
          x < 0 with integer y; subnormal x
rsqrt     x >= 0                                  1.49      2.0    1.49      2.0
========  ======================================  ========  =====  ========  =====

sin and cos beyond those ranges return a bounded value (|result| <= 1) that is not
accurate (no Payne-Hanek reduction).  erf f64 is ~1e-16 relative everywhere.  Special
values follow C99: exp(+-inf) = inf/0, expm1(-0) = -0, log(0) = -inf, log(x<0) = NaN,
tanh/erf/sin(-0) = -0, tanh/erf(+-inf) = +-1, sin/cos(+-inf) = NaN, rsqrt(-0) = -inf,
sigmoid(-inf) = 0; NaN in, NaN out (except pow(x, 0) = pow(1, y) = 1).

Algorithms
----------
* exp: Cody-Waite reduction x = n*ln2 + r (ln2 in two parts; the first step is exact through
  fma), exp(r) = 1 + r + r^2*P(r) (minimax, degree 7 f32 / 12 f64), scaled by 2^n as two
  exponent-bit multiplications 2^(n>>1) * 2^(n - (n>>1)) so results near overflow and in the
  subnormal range round once; x is clamped first (large x -> +inf, very negative -> 0); NaN
  passes through a final select (also discarding the poison of fptosi(NaN)).
* expm1: the same reduction and polynomial; 2^n*expm1(r) + (2^n - 1) while 2^n - 1 is exact,
  2^n*((expm1(r) - 2^-n) + 1) beyond; r = x exactly when n == 0.
* log: subnormals scaled by 2^23 / 2^54; exponent/mantissa split by integer arithmetic with
  the mantissa normalised to [sqrt(1/2), sqrt(2)); f = m - 1, s = f/(2+f),
  log(1+f) = f - f^2/2 + s*(f^2/2 + R(s^2)), R a minimax fit of 2*atanh(s)/s - 2 (3 terms
  f32, 7 f64); k*ln2 added in two parts (k*ln2_hi exact).
* tanh: |x| < 0.75: x + x^3*P(x^2) (minimax, 6 / 13 terms); else 1 - 2e/(1+e) with
  e = exp(-2|x|) (the error of e is damped); |x| clamped where tanh rounds to 1; copysign.
* sigmoid: e = exp(-|x|), (x >= 0 ? 1 : e) / (1 + e): never overflows, one division, small
  results are subnormal rather than flushed.
* erf: |x| < 1: x + x*P(x^2) (minimax relative, 7 / 12 terms); 1 <= |x| < 4 (f32) / 6 (f64):
  1 - exp(-x^2) * Q(|x| - c), Q a fit of exp(x^2)*erfc(x) weighted by exp(-x^2)/erf(x)
  (9 / 21 terms), x^2 carried as hi + lo through fma; beyond, +-1.  Both pieces are computed
  and a select picks one.
* sin/cos: j = rint(x*2/pi), r = x - j*pi/2 with pi/2 in three parts through fma (the first
  product exact), r clamped to the polynomial interval (so huge |x| stays bounded), minimax
  polynomials sin(r) = r + r^3*S(r^2), cos(r) = 1 - r^2/2 + r^4*C(r^2) (with the rounding
  error of 1 - r^2/2 added back); the quadrant j mod 4, computed in floating point, selects
  and negates.
* pow: log|x| as a double-word hi + lo (f32: ~2^-43, f64: ~2^-67 relative): s = f/(2+f) and
  its remainder, 2s + (2/3)s^3 + (2/5)s^5 as double-word terms (fma-exact products,
  two-sum), tail polynomial; y*log as an fma-exact product ph + pl; exp(ph + pl) with pl
  folded into the reduced argument.  So the error does not grow with |y*log(x)|, and
  small integer powers of small integers are exact.  Special cases as C99 Annex F:
  pow(x, +-0) = 1, pow(1, y) = 1, pow(-1, +-inf) = 1, x < 0 finite with y finite
  non-integer -> NaN, x < 0 (or -0, -inf) with an odd integer y -> negative, pow(+-0, y)
  and pow(+-inf, y) with signed zeros / infinities, |x| < 1 or > 1 with y = +-inf.
* rsqrt: 1 / sqrt(x) (two correctly rounded operations, < 2 ulp).

Polynomial coefficients were computed for this module by a Remez exchange in mpmath
(50 digits) on the stated intervals and weights, then rounded to the target precision (the
lowest-order coefficient first with the rest refitted, when that was better).

Throughput, f32, one thread, AMD EPYC (znver3, 2 cores, AVX2+FMA), this module at O3
(host CPU, new pass manager) vs numpy 2.4 (``out=`` given), 16M elements (64 MiB in and
out; np.copyto of the same runs at ~2.2e9 elements/s), elements per second; run by hand:

========  ===========  =============================================
name      mathlib      numpy
========  ===========  =============================================
exp       1.5e9        0.57e9  (np.exp)
expm1     1.2e9        0.07e9  (np.expm1)
log       1.2e9        0.49e9  (np.log)
tanh      0.97e9       0.38e9  (np.tanh)
sigmoid   1.2e9        0.40e9  (negative, exp, add, reciprocal in place)
erf       0.9e9        --      (numpy has no erf)
sin       1.2e9        0.53e9  (np.sin)
cos       1.2e9        0.53e9  (np.cos)
pow       0.26e9       0.16e9  (np.power)
rsqrt     2.1e9        1.2e9   (sqrt, reciprocal in place; memory bound)
========  ===========  =============================================

In cache (8192 elements) the rates are about the same (compute bound except rsqrt).
"""
from __future__ import annotations

import llvmlite.ir as ir

from ...ir import kernel as K

__all__ = ["MATH_FUNCS", "ACCURACY", "declare_math"]

MATH_FUNCS = K.MATH_FUNCS  # the kernel IR's table (ir/kernel.py): one list of them

# Maximum error in ulp asserted by the tests, per (name, dtype).  See the table above.
ACCURACY = {
    ("exp", "f32"): 1.0, ("exp", "f64"): 1.5,
    ("expm1", "f32"): 1.5, ("expm1", "f64"): 2.0,
    ("log", "f32"): 1.0, ("log", "f64"): 1.0,
    ("tanh", "f32"): 1.5, ("tanh", "f64"): 1.5,
    ("sigmoid", "f32"): 2.5, ("sigmoid", "f64"): 2.5,
    ("erf", "f32"): 1.5, ("erf", "f64"): 1.5,
    ("sin", "f32"): 1.5, ("sin", "f64"): 2.0,
    ("cos", "f32"): 1.5, ("cos", "f64"): 2.0,
    ("pow", "f32"): 1.5, ("pow", "f64"): 1.5,
    ("rsqrt", "f32"): 2.0, ("rsqrt", "f64"): 2.0,
}

_ARITY = {"pow": 2}

# ---------------------------------------------------------------------------------------
# Constants and polynomial coefficients (see the module docstring for how they were made).
# Polynomials are listed lowest order first.

_C = {
    "f32": dict(
        LOG2E=1.4426950216293335,
        LN2_C1=0.6931471824645996, LN2_C2=-1.9046542121259336e-09,  # exp reduction
        LN2_HI=0.693145751953125, LN2_LO=1.428606765330187e-06,      # log: k*HI exact
        EXP_LO=-104.0, EXP_HI=89.0,         # exp(EXP_LO) rounds to 0, exp(EXP_HI) = inf
        EXPM1_LO=-87.0,                     # expm1 = -1 below; keeps 2^n normal
        SUB_SCALE=2.0 ** 23, SUB_EXP=23.0, MIN_NORMAL=2.0 ** -126,
        SQRTH_BITS=0x3F3504F3, BIAS=127, MBITS=23,
        TWO_OVER_PI=0.6366197466850281,
        PIO2_1=1.5707963705062866, PIO2_2=-4.371138828673793e-08,
        PIO2_3=-1.7151245100058819e-15,
        TRIG_RMAX=0.8, TANH_SAT=10.0, ERF_SPLIT=1.0, ERF_MAX=4.0, ERF_CENTER=2.5,
    ),
    "f64": dict(
        LOG2E=1.4426950408889634,
        LN2_C1=0.6931471805599453, LN2_C2=2.3190468138462996e-17,
        LN2_HI=0.6931471806019545, LN2_LO=-4.2009150726810846e-11,
        EXP_LO=-746.0, EXP_HI=710.0,
        EXPM1_LO=-708.0,
        SUB_SCALE=2.0 ** 54, SUB_EXP=54.0, MIN_NORMAL=2.0 ** -1022,
        SQRTH_BITS=0x3FE6A09E667F3BCD, BIAS=1023, MBITS=52,
        TWO_OVER_PI=0.6366197723675814,
        PIO2_1=1.5707963267948966, PIO2_2=6.123233995736766e-17,
        PIO2_3=-1.4973849048591698e-33,
        TRIG_RMAX=0.7854, TANH_SAT=20.0, ERF_SPLIT=1.0, ERF_MAX=6.0, ERF_CENTER=3.5,
    ),
}

# expm1(r) ~ r + r^2 * P(r) on |r| <= 0.35, relative to expm1: 2^-30.9 (f32), 2^-56.2 (f64)
_EXPM1 = {
    "f32": (0.5, 0.1666666567325592, 0.041666459292173386, 0.008333634585142136,
            0.0013935917522758245, 0.0001967513671843335),
    "f64": (0.5000000000000001, 0.1666666666666667, 0.041666666666652294,
            0.008333333333326155, 0.001388888889559628, 0.00019841269874760502,
            2.4801574539143835e-05, 2.7557255467751786e-06, 2.756792680199967e-07,
            2.5105191720599175e-08, 1.7687690851870496e-09),
}
# R(z) = z * P(z) ~ 2*atanh(s)/s - 2, z = s^2 <= 0.02944, absolute: 2^-29.2 / 2^-58.5
_LOG = {
    "f32": (0.6666677594184875, 0.39977580308914185, 0.29870927333831787),
    "f64": (0.6666666666666734, 0.39999999999416525, 0.28571428742071303,
            0.2222219859928035, 0.1818356320934617, 0.15314074394488233,
            0.1479574939285953),
}
# sin(r) ~ r + r^3 * P(r^2), |r| <= 0.8 / 0.7854, relative: 2^-32.5 / 2^-57.9
_SIN = {
    "f32": (-0.1666666716337204, 0.008333377540111542, -0.00019852067634928972,
            2.820354666255298e-06),
    "f64": (-0.1666666666666663, 0.00833333333332184, -0.00019841269829358528,
            2.7557313538513654e-06, -2.505073438905552e-08, 1.5895433272440378e-10),
}
# cos(r) ~ 1 - r^2/2 + r^4 * P(r^2), relative: 2^-31.3 / 2^-59.7
_COS = {
    "f32": (0.0416666641831398, -0.0013888025423511863, 2.449880412314087e-05),
    "f64": (0.041666666666666595, -0.0013888888888873056, 2.4801587288851524e-05,
            -2.755731417923925e-07, 2.087570083348649e-09, -1.1358536051967588e-11),
}
# tanh(x) ~ x + x^3 * P(x^2) on |x| <= 0.75, relative: 2^-29.1 / 2^-59.2
_TANH = {
    "f32": (-0.33333316445350647, 0.1333272010087967, -0.0538945347070694,
            0.021457793191075325, -0.007665812503546476, 0.001741756685078144),
    "f64": (-0.3333333333333327, 0.13333333333324343, -0.05396825396377876,
            0.021869488423934352, -0.008863233866933103, 0.0035921121500437263,
            -0.001455731372870438, 0.0005895600110584119, -0.00023762139128404624,
            9.344509697458881e-05, -3.3619335340733315e-05, 9.493840403146476e-06,
            -1.4860660001065434e-06),
}
# erf(x) ~ x + x * P(x^2) on |x| <= 1, relative: 2^-29.4 / 2^-56.0
_ERF_SMALL = {
    "f32": (0.12837916612625122, -0.3761262595653534, 0.11283578723669052,
            -0.026853347197175026, 0.005187162198126316, -0.0007997853099368513,
            7.806903886375949e-05),
    "f64": (0.12837916709551256, -0.37612638903183343, 0.11283791670936952,
            -0.026866170641959602, 0.005223977596741741, -0.0008548325485381069,
            0.00012055280511025328, -1.4924465973525358e-05, 1.6444155340644333e-06,
            -1.6184032260708138e-07, 1.3616894436130323e-08, -7.608204399238629e-10),
}
# exp(x^2) * erfc(x) ~ P(x - ERF_CENTER) on [1, ERF_MAX], error weighted by
# exp(-x^2) / erf(x) (i.e. relative to erf): 2^-28.5 / 2^-56.3
_ERF_LARGE = {
    "f32": (0.2108076512813568, -0.07434240728616714, 0.024912036955356598,
            -0.008137458935379982, 0.0023033861070871353, -0.0006475456757470965,
            0.0005598337738774717, 0.00023328920360654593, 0.00010836268484126776),
    "f64": (0.1552936556071879, -0.041323577831085104, 0.010661133346205512,
            -0.002673073803247177, 0.0006526865373483884, -0.00015547287569526931,
            3.617228397315637e-05, -8.24300058581343e-06, 1.8495376352315975e-06,
            -3.7728403959996306e-07, 1.0099064211728474e-07, -2.4029369832680445e-08,
            -1.1778262740166338e-08, -1.114739904896125e-08, -1.7818714386537522e-09,
            1.7480251735754948e-09, 1.603182071748255e-09, 6.390611193985781e-10,
            1.4926913989070728e-10, 1.9692905960665613e-11, 1.1885076569668162e-12),
}

# log_dd (pow): G(z) ~ (2*atanh(s)/s - 2 - 2z/3 - 2z^2/5) / z^3 on z = s^2 <= 0.02944;
# error of s^7*G relative to log(1+f) ~ 2s: 2^-43.0 (f32), 2^-72.9 (f64)
_LOG_DD = {
    "f32": (0.2857159972190857, 0.22198008000850677, 0.19270767271518707),
    "f64": (0.2857142857143316, 0.2222222222001258, 0.18181818605412803,
            0.15384572901387977, 0.13335763009472731, 0.11685044187133543,
            0.11910952773075534),
}
_TWO_THIRDS = {                                  # 2/3 = hi + lo
    "f32": (0.6666666865348816, -1.9868215517249155e-08),
    "f64": (0.6666666666666666, 3.700743415417188e-17),
}
_TWO_FIFTHS = {                                  # 2/5 = hi + lo
    "f32": (0.4000000059604645, -5.9604645663569045e-09),
    "f64": (0.4, -2.2204460492503132e-17),
}

_INF = float("inf")
_NAN = float("nan")


# ---------------------------------------------------------------------------------------
# IR emission helpers


class _Emit:
    """Emits scalar IR for one float type at the builder's position."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module, dtype: str):
        self.b = builder
        self.module = module
        self.dtype = dtype
        self.c = _C[dtype]
        if dtype == "f32":
            self.ty, self.ity = ir.FloatType(), ir.IntType(32)
        else:
            self.ty, self.ity = ir.DoubleType(), ir.IntType(64)
        self.i32 = ir.IntType(32)

    # constants
    def k(self, v):
        return ir.Constant(self.ty, v)

    def ki(self, v):
        return ir.Constant(self.ity, v)

    # intrinsics (declared with explicit types: llvmlite's declare_intrinsic gets some
    # multi-operand ones wrong)
    def intr(self, name, *args):
        full = f"llvm.{name}.{self.dtype}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(self.ty, [self.ty] * len(args)), full)
        return self.b.call(fn, list(args))

    def fma(self, a, b, c):
        return self.intr("fma", a, b, c)

    def fabs(self, a):
        return self.intr("fabs", a)

    def floor(self, a):
        return self.intr("floor", a)

    def rint(self, a):
        return self.intr("rint", a)

    def sqrt(self, a):
        return self.intr("sqrt", a)

    def copysign(self, a, b):
        return self.intr("copysign", a, b)

    # arithmetic
    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def neg(self, a):
        return self.b.fneg(a)

    def cmp(self, op, a, b):
        """Ordered comparison (false when either side is NaN)."""
        return self.b.fcmp_ordered(op, a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def sel(self, c, a, b):
        return self.b.select(c, a, b)

    def clamp(self, x, lo, hi):
        """min(max(x, lo), hi) by compare+select: NaN stays NaN (lowers to vmaxps/vminps)."""
        x = self.sel(self.cmp("<", x, self.k(lo)), self.k(lo), x)
        return self.sel(self.cmp(">", x, self.k(hi)), self.k(hi), x)

    def poly(self, x, coeffs):
        """Horner with fma: coeffs lowest order first."""
        acc = self.k(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.fma(acc, x, self.k(c))
        return acc

    # bits
    def to_bits(self, x):
        return self.b.bitcast(x, self.ity)

    def from_bits(self, i):
        return self.b.bitcast(i, self.ty)

    def pow2i(self, n32):
        """2^n for an i32 n in the normal exponent range, by building the exponent bits."""
        t = self.b.add(n32, ir.Constant(self.i32, self.c["BIAS"]))
        if self.dtype == "f64":
            t = self.b.zext(t, self.ity)
        return self.from_bits(self.b.shl(t, self.ki(self.c["MBITS"])))

    def to_i32(self, n):
        # fptosi to i32 vectorises for both types on AVX2 (f64 -> i64 would not)
        return self.b.fptosi(n, self.i32)

    def scale2(self, p, n32):
        """p * 2^n in two steps, so results near overflow / in the subnormal range round
        once: 2^(n>>1) * 2^(n - n>>1)."""
        n1 = self.b.ashr(n32, ir.Constant(self.i32, 1))
        n2 = self.b.sub(n32, n1)
        return self.mul(self.mul(p, self.pow2i(n1)), self.pow2i(n2))


# ---------------------------------------------------------------------------------------
# Cores (arguments already range-limited; callers handle NaN and special values)


def _reduce_ln2(e: _Emit, x, lo=None):
    """x (+ lo) = n*ln2 + r.  Returns (n as float, r)."""
    c = e.c
    n = e.rint(e.mul(x, e.k(c["LOG2E"])))
    r = e.fma(n, e.k(-c["LN2_C1"]), x)        # exact
    if lo is not None:
        r = e.add(r, lo)
    r = e.fma(n, e.k(-c["LN2_C2"]), r)
    return n, r


def _expm1_poly(e: _Emit, r):
    return e.fma(e.mul(r, r), e.poly(r, _EXPM1[e.dtype]), r)


def _exp_core(e: _Emit, xc, lo=None):
    """exp(xc + lo) for xc in [EXP_LO, EXP_HI] (gives +inf / 0 at the ends)."""
    n, r = _reduce_ln2(e, xc, lo)
    p = e.add(_expm1_poly(e, r), e.k(1.0))
    return e.scale2(p, e.to_i32(n))


def _exp_small_core(e: _Emit, xc):
    """exp(xc) for xc where 2^n is normal (no subnormal or overflowing results)."""
    n, r = _reduce_ln2(e, xc)
    p = e.add(_expm1_poly(e, r), e.k(1.0))
    return e.mul(p, e.pow2i(e.to_i32(n)))


def _expm1_core(e: _Emit, xc):
    """expm1(xc) for xc in [EXPM1_LO, EXP_HI]."""
    c = e.c
    n, r = _reduce_ln2(e, xc)
    r = e.sel(e.cmp("==", n, e.k(0.0)), xc, r)   # exact r for |x| < ln2/2
    em = _expm1_poly(e, r)
    n32 = e.to_i32(n)
    # n <= MBITS + 1: 2^n * expm1(r) + (2^n - 1), where 2^n - 1 is exact (garbage for
    # larger n: not selected)
    s = e.pow2i(n32)
    res = e.fma(s, em, e.sub(s, e.k(1.0)))
    # n > MBITS + 1: 2^n * ((expm1(r) - 2^-n) + 1), scaled in two steps (overflow)
    i32 = e.i32
    nc = e.b.select(e.b.icmp_signed(">", n32, ir.Constant(i32, 64)), ir.Constant(i32, 64), n32)
    tiny = e.pow2i(e.b.sub(ir.Constant(i32, 0), nc))
    big = e.scale2(e.add(e.sub(em, tiny), e.k(1.0)), n32)
    return e.sel(e.cmp(">", n, e.k(c["MBITS"] + 1.0)), big, res)


def _log_split(e: _Emit, x):
    """x > 0 finite -> (k, f) with x = 2^k * (1 + f), 1 + f in [sqrt(1/2), sqrt(2))."""
    c = e.c
    sub = e.cmp("<", x, e.k(c["MIN_NORMAL"]))
    xs = e.sel(sub, e.mul(x, e.k(c["SUB_SCALE"])), x)
    kadj = e.sel(sub, e.k(-c["SUB_EXP"]), e.k(0.0))
    # ix = bits - bits(sqrt(1/2)) + BIAS << MBITS >= 0, so a logical shift gives k + BIAS
    # (AVX2 has no 64-bit arithmetic shift).
    off = c["SQRTH_BITS"] - (c["BIAS"] << c["MBITS"])
    ix = e.b.sub(e.to_bits(xs), e.ki(off))
    kb = e.b.lshr(ix, e.ki(c["MBITS"]))
    mbits = e.b.add(e.b.and_(ix, e.ki((1 << c["MBITS"]) - 1)), e.ki(c["SQRTH_BITS"]))
    m = e.from_bits(mbits)
    if e.dtype == "f64":
        kb = e.b.trunc(kb, e.i32)                 # i32 -> double converts natively
    k = e.b.sitofp(e.b.sub(kb, ir.Constant(e.i32, c["BIAS"])), e.ty)
    k = e.add(k, kadj)
    f = e.sub(m, e.k(1.0))                        # exact (Sterbenz)
    return k, f


def _log_specials(e: _Emit, x, res):
    res = e.sel(e.cmp("==", x, e.k(_INF)), e.k(_INF), res)
    res = e.sel(e.cmp("==", x, e.k(0.0)), e.k(-_INF), res)
    # x < 0 or NaN -> NaN
    return e.sel(e.b.fcmp_unordered("<", x, e.k(0.0)), e.k(_NAN), res)


def _log_core(e: _Emit, x):
    c = e.c
    k, f = _log_split(e, x)
    s = e.div(f, e.add(f, e.k(2.0)))
    z = e.mul(s, s)
    R = e.mul(z, e.poly(z, _LOG[e.dtype]))
    hfsq = e.mul(e.mul(f, f), e.k(0.5))
    # k*ln2_hi - ((hfsq - (s*(hfsq + R) + k*ln2_lo)) - f)
    t = e.fma(k, e.k(c["LN2_LO"]), e.mul(s, e.add(hfsq, R)))
    res = e.fma(k, e.k(c["LN2_HI"]), e.neg(e.sub(e.sub(hfsq, t), f)))
    return _log_specials(e, x, res)


def _two_sum(e: _Emit, a, b):
    s = e.add(a, b)
    bb = e.sub(s, a)
    err = e.add(e.sub(a, e.sub(s, bb)), e.sub(b, bb))
    return s, err


def _dd_mul_const(e: _Emit, a, a_lo, cst):
    """(a + a_lo) * (cst[0] + cst[1]) as hi + lo (fma-exact leading product)."""
    hi = e.mul(a, e.k(cst[0]))
    lo = e.add(e.fma(a, e.k(cst[0]), e.neg(hi)), e.fma(a_lo, e.k(cst[0]), e.mul(a, e.k(cst[1]))))
    return hi, lo


def _log_dd(e: _Emit, x):
    """log(x) as hi + lo (about 2^-70 relative in f64) for x >= 0; specials in hi, lo = 0.

    log(1 + f) = 2s + (2/3) s^3 + (2/5) s^5 + s^7 G(s^2), s = f / (2 + f), with s, s^3,
    s^5 and the first three terms carried as double-word numbers (fma-exact products) and
    summed by two-sum; the tail is below 2^-18 of the result, so plain arithmetic does."""
    c = e.c
    k, f = _log_split(e, x)
    d = e.add(f, e.k(2.0))
    d_lo = e.sub(f, e.sub(d, e.k(2.0)))           # 2 + f = d + d_lo exactly
    s = e.div(f, d)
    rem = e.sub(e.fma(e.neg(s), d, f), e.mul(s, d_lo))   # f - s*(2 + f)
    s_lo = e.div(rem, d)                          # f / (2 + f) = s + s_lo
    z = e.mul(s, s)
    z_lo = e.fma(s, s, e.neg(z))                  # s^2 = z + z_lo (s_lo terms below)
    cub = e.mul(s, z)                             # s^3 = cub + cub_lo
    cub_lo = e.add(e.fma(s, z, e.neg(cub)),
                   e.fma(s, z_lo, e.mul(e.mul(z, s_lo), e.k(3.0))))
    q5 = e.mul(cub, z)                            # s^5 = q5 + q5_lo
    zs = e.fma(e.mul(s, s_lo), e.k(2.0), z_lo)    # s^2 - z incl. the s_lo term
    q5_lo = e.add(e.fma(cub, z, e.neg(q5)), e.fma(cub_lo, z, e.mul(cub, zs)))
    t3, t3_lo = _dd_mul_const(e, cub, cub_lo, _TWO_THIRDS[e.dtype])
    t5, t5_lo = _dd_mul_const(e, q5, q5_lo, _TWO_FIFTHS[e.dtype])
    tail = e.mul(e.mul(q5, z), e.poly(z, _LOG_DD[e.dtype]))
    kh = e.mul(k, e.k(c["LN2_HI"]))               # exact
    h, l1 = _two_sum(e, kh, e.add(s, s))
    h, l2 = _two_sum(e, h, t3)
    h, l3 = _two_sum(e, h, t5)
    lo = e.add(e.add(l1, l2), e.add(l3, e.add(t3_lo, t5_lo)))
    lo = e.add(lo, e.add(e.add(s_lo, s_lo), e.fma(k, e.k(c["LN2_LO"]), tail)))
    hi = e.add(h, lo)
    lo = e.sub(lo, e.sub(hi, h))
    # x in {0, +inf} or x < 0 or NaN
    spec = e.b.or_(e.cmp("==", x, e.k(0.0)), e.cmp("==", x, e.k(_INF)))
    spec = e.b.or_(spec, e.b.fcmp_unordered("<", x, e.k(0.0)))
    hi = _log_specials(e, x, hi)
    lo = e.sel(spec, e.k(0.0), lo)
    return hi, lo


def _trig(e: _Emit, x, is_cos: bool):
    c = e.c
    j = e.rint(e.mul(x, e.k(c["TWO_OVER_PI"])))
    r = e.fma(j, e.k(-c["PIO2_1"]), x)            # exact
    r = e.fma(j, e.k(-c["PIO2_2"]), r)
    r = e.fma(j, e.k(-c["PIO2_3"]), r)
    r = e.sel(e.cmp("==", j, e.k(0.0)), x, r)     # keeps -0, exact for |x| <= pi/4
    r = e.clamp(r, -c["TRIG_RMAX"], c["TRIG_RMAX"])     # bounded results for huge |x|
    z = e.mul(r, r)
    sin_r = e.fma(e.mul(r, z), e.poly(z, _SIN[e.dtype]), r)
    hz = e.mul(z, e.k(0.5))
    w = e.sub(e.k(1.0), hz)
    corr = e.fma(e.mul(z, z), e.poly(z, _COS[e.dtype]), e.sub(e.sub(e.k(1.0), w), hz))
    cos_r = e.add(w, corr)
    # quadrant q = j mod 4 in floating point (no float->int conversion of huge j)
    q = e.fma(e.floor(e.mul(j, e.k(0.25))), e.k(-4.0), j)
    q1 = e.cmp("==", q, e.k(1.0))
    q2 = e.cmp("==", q, e.k(2.0))
    q3 = e.cmp("==", q, e.k(3.0))
    odd = e.b.or_(q1, q3)
    if is_cos:
        res = e.sel(odd, sin_r, cos_r)
        negate = e.b.or_(q1, q2)
    else:
        res = e.sel(odd, cos_r, sin_r)
        negate = e.b.or_(q2, q3)
    return e.sel(negate, e.neg(res), res)   # inf / NaN give NaN through r


# ---------------------------------------------------------------------------------------
# Public function bodies


def _f_exp(e: _Emit, x):
    res = _exp_core(e, e.clamp(x, e.c["EXP_LO"], e.c["EXP_HI"]))
    return e.sel(e.isnan(x), x, res)


def _f_expm1(e: _Emit, x):
    res = _expm1_core(e, e.clamp(x, e.c["EXPM1_LO"], e.c["EXP_HI"]))
    res = e.sel(e.cmp("==", x, e.k(0.0)), x, res)   # expm1(-0) = -0
    return e.sel(e.isnan(x), x, res)


def _f_log(e: _Emit, x):
    return _log_core(e, x)


def _f_tanh(e: _Emit, x):
    a = e.fabs(x)
    a = e.sel(e.cmp(">", a, e.k(e.c["TANH_SAT"])), e.k(e.c["TANH_SAT"]), a)
    # |x| < 0.75: x + x^3 P(x^2); else 1 - 2e / (1 + e) with e = exp(-2|x|) (the error
    # of e is damped by the subtraction)
    z = e.mul(a, a)
    small = e.fma(e.mul(a, z), e.poly(z, _TANH[e.dtype]), a)
    ex = _exp_small_core(e, e.mul(a, e.k(-2.0)))
    large = e.sub(e.k(1.0), e.div(e.add(ex, ex), e.add(ex, e.k(1.0))))
    res = e.sel(e.cmp("<", a, e.k(0.75)), small, large)
    res = e.copysign(res, x)
    return e.sel(e.isnan(x), x, res)


def _f_sigmoid(e: _Emit, x):
    a = e.fabs(x)
    a = e.sel(e.cmp(">", a, e.k(-e.c["EXP_LO"])), e.k(-e.c["EXP_LO"]), a)
    ex = _exp_core(e, e.neg(a))
    num = e.sel(e.cmp(">=", x, e.k(0.0)), e.k(1.0), ex)
    res = e.div(num, e.add(ex, e.k(1.0)))
    return e.sel(e.isnan(x), x, res)


def _f_erf(e: _Emit, x):
    c = e.c
    a = e.fabs(x)
    # |x| < 1: x + x*P(x^2)
    small = e.fma(a, e.poly(e.mul(a, a), _ERF_SMALL[e.dtype]), a)
    # 1 <= |x| < ERF_MAX: 1 - exp(-x^2) * Q(|x| - center)
    ac = e.sel(e.cmp(">", a, e.k(c["ERF_MAX"])), e.k(c["ERF_MAX"]), a)
    ac = e.sel(e.cmp("<", ac, e.k(c["ERF_SPLIT"])), e.k(c["ERF_SPLIT"]), ac)
    q = e.poly(e.sub(ac, e.k(c["ERF_CENTER"])), _ERF_LARGE[e.dtype])
    hi = e.mul(ac, ac)
    lo = e.fma(ac, ac, e.neg(hi))                 # ac^2 = hi + lo exactly
    ex = _exp_small_core(e, e.neg(hi))
    ex = e.fma(e.neg(ex), lo, ex)                 # exp(-hi - lo)
    large = e.fma(e.neg(ex), q, e.k(1.0))
    res = e.sel(e.cmp("<", a, e.k(c["ERF_SPLIT"])), small, large)
    res = e.sel(e.cmp(">=", a, e.k(c["ERF_MAX"])), e.k(1.0), res)
    res = e.copysign(res, x)
    return e.sel(e.isnan(x), x, res)


def _f_sin(e: _Emit, x):
    return e.sel(e.cmp("==", x, e.k(0.0)), x, _trig(e, x, False))   # sin(-0) = -0


def _f_cos(e: _Emit, x):
    return _trig(e, x, True)


def _pow_core(e: _Emit, x, y):
    c = e.c
    ax = e.fabs(x)
    lh, ll = _log_dd(e, ax)
    ph = e.mul(y, lh)
    pl = e.fma(y, ll, e.fma(y, lh, e.neg(ph)))       # y*(lh + ll) = ph + pl
    pl = e.sel(e.cmp("<", e.fabs(ph), e.k(1e4)), pl, e.k(0.0))   # inf - inf -> 0
    res = _exp_core(e, e.clamp(ph, c["EXP_LO"], c["EXP_HI"]), pl)
    res = e.sel(e.isnan(ph), ph, res)
    # sign and the C99 special cases
    one = e.k(1.0)
    y_int = e.cmp("==", e.floor(y), y)
    yh = e.mul(y, e.k(0.5))
    y_odd = e.b.and_(y_int, e.cmp("!=", e.floor(yh), yh))
    x_neg = e.b.icmp_signed("<", e.to_bits(x), e.ki(0))          # sign bit, -0 included
    res = e.sel(e.b.and_(x_neg, y_odd), e.neg(res), res)
    y_fin = e.cmp("<", e.fabs(y), e.k(_INF))
    x_negfin = e.b.and_(e.cmp("<", x, e.k(0.0)), e.cmp(">", x, e.k(-_INF)))
    invalid = e.b.and_(e.b.and_(x_negfin, y_fin), e.b.not_(y_int))
    res = e.sel(invalid, e.k(_NAN), res)
    unit = e.b.or_(e.cmp("==", x, one), e.cmp("==", y, e.k(0.0)))
    unit = e.b.or_(unit, e.b.and_(e.cmp("==", ax, one), e.cmp("==", e.fabs(y), e.k(_INF))))
    return e.sel(unit, one, res)


def _f_pow(e: _Emit, x, y):
    return _pow_core(e, x, y)


def _f_rsqrt(e: _Emit, x):
    return e.div(e.k(1.0), e.sqrt(x))


_BODIES = {
    "exp": _f_exp, "expm1": _f_expm1, "log": _f_log, "tanh": _f_tanh,
    "sigmoid": _f_sigmoid, "erf": _f_erf, "sin": _f_sin, "cos": _f_cos,
    "pow": _f_pow, "rsqrt": _f_rsqrt,
}
assert set(_BODIES) == set(MATH_FUNCS)


def declare_math(module: ir.Module, name: str, dtype: str) -> ir.Function:
    """Return ``graphc.<name>.<dtype>`` in ``module``, defining it on first use.

    ``name`` is one of ``MATH_FUNCS``; ``dtype`` is ``"f32"`` or ``"f64"``.  The function
    takes one argument of that type (two for ``pow``) and returns that type.  It is
    internal and alwaysinline, and vectorises inside loops (see the module docstring).
    """
    if name not in _BODIES:
        raise ValueError(f"unsupported math function {name!r}; supported: {MATH_FUNCS}")
    if dtype not in _C:
        raise ValueError(f"unsupported dtype {dtype!r} for math function {name!r}: "
                         "expected 'f32' or 'f64' (compute f16 via f32)")
    fname = f"graphc.{name}.{dtype}"
    ty = ir.FloatType() if dtype == "f32" else ir.DoubleType()
    fnty = ir.FunctionType(ty, [ty] * _ARITY.get(name, 1))
    fn = module.globals.get(fname)
    if fn is not None:
        if not isinstance(fn, ir.Function) or fn.function_type != fnty:
            raise ValueError(f"{fname} already exists in the module with another type")
        if not fn.is_declaration:
            return fn
    else:
        fn = ir.Function(module, fnty, fname)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    e = _Emit(builder, module, dtype)
    builder.ret(_BODIES[name](e, *fn.args))
    return fn
