"""Constants and conversions between dtypes with numpy's cast semantics (codegen.py,
"Scalar semantics", Cast), f16 rounding included. A mixin of function._FuncGen."""
from __future__ import annotations

import numpy as np
from llvmlite import ir

from ...ir.dtypes import DType
from .irtypes import F16, F32, F64, I1, I32, ctype


class CastEmitter:
    """Constants and casts (state in function._FuncGen)."""

    def const(self, value, dt: DType) -> ir.Value:
        if dt.is_bool:
            return ir.Constant(I1, 1 if value else 0)
        if dt.is_float:
            v = float(value)
            if dt.name == "f16":
                v = float(np.float16(v))
            return ir.Constant(ctype(dt), v)
        v = int(value)
        bits = 32 if dt.name == "i32" else 64
        v = ((v + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))  # wrap like numpy casts
        return ir.Constant(ctype(dt), v)

    def convert(self, v: ir.Value, src: DType, dst: DType) -> ir.Value:
        """Cast semantics (see the module docstring)."""
        if src == dst:
            return v
        b = self.b
        st, dt_ = ctype(src), ctype(dst)
        if dst.is_bool:
            if src.is_float:
                return b.fcmp_unordered("!=", v, ir.Constant(st, 0.0))
            return b.icmp_unsigned("!=", v, ir.Constant(st, 0))
        if src.is_bool:
            return b.uitofp(v, dt_) if dst.is_float else b.zext(v, dt_)
        if src.is_float and dst.is_float:
            if dst.name == "f16":
                return self.round_to_half(v)
            if st == dt_:
                return v
            return b.fpext(v, dt_) if dt_ == F64 else b.fptrunc(v, dt_)
        if src.is_float:  # saturating, NaN -> 0 (ir.dtypes.float_to_int); selects vectorise
            hi = float(2 ** (dt_.width - 1))
            out = b.fptosi(v, dt_)
            out = b.select(b.fcmp_ordered(">=", v, ir.Constant(st, hi)),
                           ir.Constant(dt_, 2 ** (dt_.width - 1) - 1), out)
            out = b.select(b.fcmp_ordered("<", v, ir.Constant(st, -hi)),
                           ir.Constant(dt_, -(2 ** (dt_.width - 1))), out)
            return b.select(b.fcmp_unordered("uno", v, v), ir.Constant(dt_, 0), out)
        if dst.is_float:
            v = b.sitofp(v, dt_)
            # |ints| < 2**24 convert to f32 exactly; larger ones are inf in f16 either way
            return self.round_to_half(v) if dst.name == "f16" else v
        if st == dt_:
            return v
        return b.sext(v, dt_) if dt_.width > st.width else b.trunc(v, dt_)

    def round_to_half(self, v: ir.Value) -> ir.Value:
        """Round a float or double to half precision (nearest even), kept as float.

        double -> half goes through float with round-to-odd (exact: float has more than
        11 + 2 bits), because LLVM lowers a direct fptrunc double -> half to a call of
        compiler-rt's __truncdfhf2, which the process does not provide."""
        b = self.b
        if v.type == F64:
            r = b.fptrunc(v, F32)
            bits = b.bitcast(r, I32)
            back = b.fpext(r, F64)
            fabs = self.mg.intrinsic("llvm.fabs.f64", F64, [F64])
            inexact = b.fcmp_ordered("!=", back, v)
            away = b.fcmp_ordered(">", b.call(fabs, [back]), b.call(fabs, [v]))
            toward_zero = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
            odd = b.or_(toward_zero, ir.Constant(I32, 1))
            v = b.bitcast(b.select(inexact, odd, bits), F32)
        return b.fpext(b.fptrunc(v, F16), F32)
