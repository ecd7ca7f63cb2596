"""Scalar expressions: loads, compares, unary and binary operations with numpy's semantics
(codegen.py, "Scalar semantics"; casts are casts.py). A mixin of function._FuncGen."""
from __future__ import annotations

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType, bool_, i64
from .irtypes import F32, F64, I1, I8, I32, I64, MATH_FUNCS, _compute_dtype, _fsuf, _promote, ctype, mtype
from .mathcall import _ipow, math_function
from .nodes import _GemmEpilogue


class ScalarEmitter:
    """Expressions (state in function._FuncGen)."""

    # .. expressions ..
    def index(self, e) -> ir.Value:
        v = self.expr(e)
        if e.dtype.is_bool:
            return self.b.zext(v, I64)
        if v.type == I32:
            return self.b.sext(v, I64)
        if e.dtype.is_float:
            raise self.error(f"floating-point index expression {e}")
        return v

    def expr(self, e) -> ir.Value:
        hit = self._memo.get(id(e))
        if hit is not None:
            return hit[0]
        v = self._expr(e)
        self._memo[id(e)] = (v, e)  # holding e keeps its id() unique
        return v

    def _expr(self, e) -> ir.Value:
        b = self.b
        if isinstance(e, K.Const):
            return self.const(e.value, e.dtype)
        if isinstance(e, K.Var):
            v = self.vars.get(e.name)
            if v is None:
                raise self.error(f"loop variable {e.name!r} used outside its loop")
            return self.convert(v, i64, e.dtype) if e.dtype != i64 else v
        if isinstance(e, K.LocalRef):
            if e.name in self.locals:
                slot, dt = self.locals[e.name]
                v = b.load(slot, typ=ctype(dt))
            elif e.name in self.captured:
                dt = self.captured_dtypes[e.name]
                v = self.captured[e.name]
            else:
                raise self.error(f"use of undeclared local ${e.name}")
            return self.convert(v, dt, e.dtype)
        if isinstance(e, K.Load):
            if e.buffer not in self.bufs:
                raise self.error(f"load from unknown buffer {e.buffer!r}")
            dt = self.mg.dtypes[e.buffer]
            ptr = b.gep(self.bufs[e.buffer], [self.index(e.index)], inbounds=True, source_etype=mtype(dt))
            v = b.load(ptr, typ=mtype(dt), align=dt.itemsize)
            if dt.name == "f16":
                v = b.fpext(v, F32)
            elif dt.is_bool:
                v = b.icmp_unsigned("!=", v, ir.Constant(I8, 0))
            return self.convert(v, dt, e.dtype)
        if isinstance(e, K.Cast):
            return self.convert(self.expr(e.x), e.x.dtype, e.dtype)
        if isinstance(e, K.Unary):
            x = self.convert(self.expr(e.x), e.x.dtype, e.dtype)
            return self.unary(e.op, x, e.dtype)
        if isinstance(e, K.Binary):
            a = self.convert(self.expr(e.a), e.a.dtype, e.dtype)
            bb = self.convert(self.expr(e.b), e.b.dtype, e.dtype)
            return self.binary(e.op, a, bb, e.dtype, e.contract)
        if isinstance(e, K.Compare):
            dt = e.a.dtype
            if e.b.dtype != dt:
                dt = _promote(e.a.dtype, e.b.dtype)
            a = self.convert(self.expr(e.a), e.a.dtype, dt)
            bb = self.convert(self.expr(e.b), e.b.dtype, dt)
            return self.compare(e.op, a, bb, dt)
        if isinstance(e, K.Select):
            c = self.convert(self.expr(e.cond), e.cond.dtype, bool_)
            a = self.convert(self.expr(e.a), e.a.dtype, e.dtype)
            bb = self.convert(self.expr(e.b), e.b.dtype, e.dtype)
            return b.select(c, a, bb)
        if isinstance(e, _GemmEpilogue):
            saved = {n: self.vars.get(n) for n in ("i", "j")}
            self.vars["i"] = self.vars[e.vi.name]
            self.vars["j"] = self.vars[e.vj.name]
            saved_local = self.locals.get("acc")
            self.locals["acc"] = self.locals[e.acc.name]
            memo = self._memo
            self._memo = {}
            try:
                return self.expr(e.expr)
            finally:
                self._memo = memo
                for n, v in saved.items():
                    if v is None:
                        self.vars.pop(n, None)
                    else:
                        self.vars[n] = v
                if saved_local is None:
                    self.locals.pop("acc", None)
                else:
                    self.locals["acc"] = saved_local
        raise self.error(f"unknown expression {type(e).__name__}")

    def compare(self, op: str, a: ir.Value, bb: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.get(op)
        if sym is None:
            raise self.error(f"unknown compare op {op!r}")
        if dt.is_float:
            if op == "ne":
                return b.fcmp_unordered("!=", a, bb)
            return b.fcmp_ordered(sym, a, bb)
        if dt.is_bool:
            return b.icmp_unsigned(sym, a, bb)
        return b.icmp_signed(sym, a, bb)

    def unary(self, op: str, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        t = x.type
        if dt.is_float:
            if op == "neg":
                return b.fneg(x)
            if op == "abs":
                return b.call(self.mg.intrinsic(f"llvm.fabs.{_fsuf(t)}", t, [t]), [x])
            if op == "sign":
                one, zero = ir.Constant(t, 1.0), ir.Constant(t, 0.0)
                s = b.select(b.fcmp_ordered(">", x, zero), one,
                             b.select(b.fcmp_ordered("<", x, zero), ir.Constant(t, -1.0), zero))
                return b.select(b.fcmp_unordered("uno", x, x), x, s)
            if op == "sqrt":
                return b.call(self.mg.intrinsic(f"llvm.sqrt.{_fsuf(t)}", t, [t]), [x])
            if op in MATH_FUNCS:
                return self.math(op, [x], dt)
            if op == "not":
                return b.fcmp_ordered("==", x, ir.Constant(t, 0.0))
        elif dt.is_bool:
            if op == "not":
                return b.xor(x, ir.Constant(I1, 1))
            if op in ("abs",):
                return x
            if op == "neg":
                return x
            if op == "sign":
                return x
        else:
            if op == "neg":
                return b.sub(ir.Constant(t, 0), x)
            if op == "abs":
                return b.select(b.icmp_signed("<", x, ir.Constant(t, 0)), b.sub(ir.Constant(t, 0), x), x)
            if op == "sign":
                pos = b.zext(b.icmp_signed(">", x, ir.Constant(t, 0)), t)
                neg = b.zext(b.icmp_signed("<", x, ir.Constant(t, 0)), t)
                return b.sub(pos, neg)
            if op == "not":
                return b.xor(x, ir.Constant(t, -1))
        raise self.error(f"unary {op} is not defined for {dt}")

    def binary(self, op: str, a: ir.Value, bb: ir.Value, dt: DType, contract: bool = False) -> ir.Value:
        b = self.b
        t = a.type
        fm = self.fm + ("contract",) if contract and "contract" not in self.fm else self.fm
        if dt.is_float:
            if op == "add":
                return b.fadd(a, bb, flags=fm)
            if op == "sub":
                return b.fsub(a, bb, flags=fm)
            if op == "mul":
                return b.fmul(a, bb, flags=fm)
            if op == "div":
                return b.fdiv(a, bb)
            if op == "pow":
                return self.math("pow", [a, bb], dt)
            if op in ("max", "min"):
                return self.fminmax(op, a, bb)
            if op == "mod":
                zero = ir.Constant(t, 0.0)
                r = b.frem(a, bb)
                fix = b.and_(b.fcmp_ordered("!=", r, zero),
                             b.xor(b.fcmp_ordered("<", r, zero), b.fcmp_ordered("<", bb, zero)))
                r = b.select(fix, b.fadd(r, bb), r)
                cs = self.mg.intrinsic(f"llvm.copysign.{_fsuf(t)}", t, [t, t])
                return b.select(b.fcmp_ordered("==", r, zero), b.call(cs, [zero, bb]), r)
            if op in ("and", "or"):
                za = b.fcmp_unordered("!=", a, ir.Constant(t, 0.0))
                zb = b.fcmp_unordered("!=", bb, ir.Constant(t, 0.0))
                r = b.and_(za, zb) if op == "and" else b.or_(za, zb)
                return b.uitofp(r, t)
        elif dt.is_bool:
            if op in ("add", "or", "max"):
                return b.or_(a, bb)
            if op in ("mul", "and", "min"):
                return b.and_(a, bb)
            if op == "sub":
                return b.xor(a, bb)
        else:
            if op == "add":
                return b.add(a, bb)
            if op == "sub":
                return b.sub(a, bb)
            if op == "mul":
                return b.mul(a, bb)
            if op in ("div", "mod"):
                return self.int_divmod(op, a, bb)
            if op == "max":
                return b.select(b.icmp_signed(">", a, bb), a, bb)
            if op == "min":
                return b.select(b.icmp_signed("<", a, bb), a, bb)
            if op == "and":
                return b.and_(a, bb)
            if op == "or":
                return b.or_(a, bb)
            if op == "pow":
                return b.call(_ipow(self.mg, t), [a, bb])
        raise self.error(f"binary {op} is not defined for {dt}")

    def fminmax(self, op: str, a: ir.Value, bb: ir.Value) -> ir.Value:
        """NaN-propagating max/min (numpy.maximum/minimum)."""
        b = self.b
        if self.fm:  # inside a reduction: the intrinsic the vectoriser recognises
            name = "maximum" if op == "max" else "minimum"
            fn = self.mg.intrinsic(f"llvm.{name}.{_fsuf(a.type)}", a.type, [a.type, a.type])
            return b.call(fn, [a, bb])
        # b beats a only when strictly better and ordered: x86's maxps/minps (b, a), which
        # also passes a NaN a through. A NaN b is then OR-ed into the bits (any bits OR a
        # NaN's are a NaN); the term is zero otherwise. When b is loop-invariant (a relu or
        # clip bound) the term is hoisted, or folded away for a constant: one or two
        # instructions where testing a cost four. (As a select on b's NaN test, LLVM merged
        # it into the comparison's mask and unswitched the loop on it: five per vector.)
        t = b.select(b.fcmp_ordered(">" if op == "max" else "<", bb, a), bb, a)
        it = ir.IntType(64 if a.type == F64 else 32)
        nan_bits = b.select(b.fcmp_unordered("uno", bb, bb), b.bitcast(bb, it), ir.Constant(it, 0))
        return b.bitcast(b.or_(b.bitcast(t, it), nan_bits), a.type)

    def int_divmod(self, op: str, a: ir.Value, bb: ir.Value) -> ir.Value:
        """Floor division / Python modulo with x/0 = 0, x%0 = 0 and no INT_MIN/-1 trap."""
        b = self.b
        t = a.type
        zero, one, mone = ir.Constant(t, 0), ir.Constant(t, 1), ir.Constant(t, -1)
        bad = b.or_(b.icmp_signed("==", bb, zero), b.icmp_signed("==", bb, mone))
        d = b.select(bad, one, bb)
        q = b.sdiv(a, d)
        r = b.srem(a, d)
        adj = b.and_(b.icmp_signed("!=", r, zero), b.icmp_signed("<", b.xor(r, bb), zero))
        if op == "div":
            q = b.select(adj, b.sub(q, one), q)
            special = b.select(b.icmp_signed("==", bb, zero), zero, b.sub(zero, a))
            return b.select(bad, special, q)
        r = b.select(adj, b.add(r, bb), r)
        return b.select(bad, zero, r)

    def math(self, name: str, args: list[ir.Value], dt: DType) -> ir.Value:
        fn = math_function(self.mg, name, _compute_dtype(dt))
        return self.b.call(fn, args)
