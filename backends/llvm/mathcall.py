"""The one switch point for transcendental functions: graphc's vectorisable math library
(mathlib.py) when present, LLVM intrinsics or libm otherwise; and integer pow."""
from __future__ import annotations

from llvmlite import ir

from .irtypes import F32, I1, CodegenError, _fsuf, ctype
from ...ir.dtypes import DType


def _mathlib():
    try:
        from . import mathlib
    except ImportError:
        return None
    return getattr(mathlib, "declare_math", None)


def math_function(mg, name: str, dt: DType) -> ir.Function:
    """The one switch point for transcendental functions: graphc's vectorisable mathlib
    when present, intrinsics/libm otherwise. Returns a function of ctype(dt) arguments."""
    declare = _mathlib()
    if declare is not None:
        return declare(mg.module, name, dt.name)
    return _fallback_math(mg, name, dt)


def _fallback_math(mg, name: str, dt: DType) -> ir.Function:
    t = ctype(dt)
    suf = _fsuf(t)
    key = f"graphc.fallback.{name}.{suf}"
    fn = mg.module.globals.get(key)
    if fn is not None:
        return fn
    nargs = 2 if name == "pow" else 1
    fn = ir.Function(mg.module, ir.FunctionType(t, [t] * nargs), name=key)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x = fn.args[0]
    one = ir.Constant(t, 1.0)

    def intr(n, *a):
        return b.call(mg.intrinsic(f"llvm.{n}.{suf}", t, [t] * len(a)), list(a))

    def libm(n, *a):
        cname = n + ("f" if t == F32 else "")
        return b.call(mg.intrinsic(cname, t, [t] * len(a)), list(a))

    if name in ("exp", "log", "sin", "cos"):
        r = intr(name, x)
    elif name == "pow":
        r = intr("pow", x, fn.args[1])
    elif name == "rsqrt":
        r = b.fdiv(one, intr("sqrt", x))
    elif name == "sigmoid":
        r = b.fdiv(one, b.fadd(one, intr("exp", b.fneg(x))))
    elif name in ("tanh", "erf", "expm1"):
        r = libm(name, x)
    else:
        raise CodegenError(f"unknown math function {name}")
    b.ret(r)
    return fn


def _ipow(mg, t: ir.Type) -> ir.Function:
    key = f"graphc.ipow.i{t.width}"
    fn = mg.module.globals.get(key)
    if fn is not None:
        return fn
    fn = ir.Function(mg.module, ir.FunctionType(t, [t, t]), name=key)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    base, exp_ = fn.args
    entry = fn.append_basic_block("entry")
    neg = fn.append_basic_block("neg")
    loop = fn.append_basic_block("loop")
    done = fn.append_basic_block("done")
    b = ir.IRBuilder(entry)
    zero, one = ir.Constant(t, 0), ir.Constant(t, 1)
    b.cbranch(b.icmp_signed("<", exp_, zero), neg, loop)
    b.position_at_end(neg)
    # numpy raises for negative integer powers; 1 and -1 have exact answers, others give 0
    is_one = b.icmp_signed("==", base, one)
    is_mone = b.icmp_signed("==", base, ir.Constant(t, -1))
    odd = b.trunc(exp_, I1)
    r_m1 = b.select(odd, ir.Constant(t, -1), one)
    b.ret(b.select(is_one, one, b.select(is_mone, r_m1, zero)))
    b.position_at_end(loop)
    acc = b.phi(t)
    bs = b.phi(t)
    e = b.phi(t)
    acc.add_incoming(one, entry)
    bs.add_incoming(base, entry)
    e.add_incoming(exp_, entry)
    cont = b.icmp_signed("!=", e, zero)
    body = fn.append_basic_block("body")
    b.cbranch(cont, body, done)
    b.position_at_end(body)
    odd = b.trunc(e, I1)
    acc2 = b.select(odd, b.mul(acc, bs), acc)
    bs2 = b.mul(bs, bs)
    e2 = b.ashr(e, one)
    acc.add_incoming(acc2, body)
    bs.add_incoming(bs2, body)
    e.add_incoming(e2, body)
    b.branch(loop)
    b.position_at_end(done)
    b.ret(acc)
    return fn
