"""Kernel-IR scalar expressions as CUDA C, with numpy's semantics (prelude.py's helpers).

`ExprWriter` renders an expression as a C expression of the register type of its dtype
(f16 computes in float, bool is C++ bool) and a statement's loads and stores in memory
types (`__half`, one-byte bools). Index expressions built from loop variables and
constants stay in the kernel's index type (int when every buffer and loop fits in 2^30
elements, else 64-bit; intermediates that could leave int's range are widened), and
divide with C's truncation where their operands are provably non-negative.
"""
from __future__ import annotations

import re

import numpy as np

from ...ir import kernel as K
from ...ir.dtypes import DType, bool_, f32, i64
from ...ir.errors import GraphcError

NARROW_LIMIT = 1 << 30        # 32-bit index arithmetic below this many elements


class CudaCodegenError(GraphcError):
    """The kernel IR cannot be rendered as CUDA C (malformed program or unsupported construct)."""


# -- types -------------------------------------------------------------------------------------

_REG = {"f16": "float", "f32": "float", "f64": "double", "i32": "int", "i64": "gc_i64", "bool": "bool"}
_MEM = {"f16": "__half", "f32": "float", "f64": "double", "i32": "int", "i64": "gc_i64",
        "bool": "unsigned char"}


def reg_type(dt: DType) -> str:
    return _REG[dt.name]


def mem_type(dt: DType) -> str:
    return _MEM[dt.name]


def compute_dtype(dt: DType) -> DType:
    return f32 if dt.name == "f16" else dt


def sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and not s[0].isdigit() else "_" + s


def _promote(a: DType, b: DType) -> DType:
    order = ["bool", "i32", "i64", "f16", "f32", "f64"]
    return a if order.index(a.name) >= order.index(b.name) else b



# -- expressions -------------------------------------------------------------------------------

class ExprWriter:
    """Renders kernel-IR expressions as C expressions of the dtype's register type."""

    def __init__(self, dtypes: dict[str, DType], narrow: bool, where: str) -> None:
        self.dtypes = dtypes
        self.narrow = narrow
        self.idx = "int" if narrow else "gc_i64"
        self.vars: dict[str, str] = {}          # loop variable -> C name
        self.ranges: dict[str, int] = {}        # loop variable -> extent
        self.locals: dict[str, tuple[str, DType]] = {}
        self.buffers: dict[str, str] = {}       # buffer -> C pointer name
        self.declared: dict[int, str] = {}      # id(Declare) -> C variable
        self.vector_loads: dict[tuple[str, str], str] = {}  # (buffer, index text) -> vector
        self.lane = 0                           # the element of a vector this copy computes
        self.where = where

    def error(self, msg: str) -> CudaCodegenError:
        return CudaCodegenError(f"{self.where}: {msg}")

    # .. conversions ..
    def conv(self, code: str, src: DType, dst: DType) -> str:
        if src == dst:
            return code
        if dst.is_bool:
            return f"(({code}) != 0)"
        if dst.name == "f16":
            if src.is_float:
                return f"gc_round_half({code})"
            return f"gc_round_half((float)({code}))"
        if src.is_float and dst.is_int:  # saturating, NaN -> 0, as the hardware's cvt.rzi
            return f"gc_float_to_int<{reg_type(dst)}>({code})"
        return f"(({reg_type(dst)})({code}))"

    # .. index expressions (loop variables and constants only) ..
    def is_index(self, e: K.Expr) -> bool:
        if isinstance(e, K.Var):
            return True
        if isinstance(e, K.Const):
            return e.dtype.is_int and abs(int(e.value)) < NARROW_LIMIT
        if isinstance(e, K.Binary):
            return (e.dtype.is_int and e.op in ("add", "sub", "mul", "div", "mod")
                    and self.is_index(e.a) and self.is_index(e.b))
        if isinstance(e, K.Select):
            return e.dtype.is_int and self.is_index(e.a) and self.is_index(e.b)
        return False

    def bounds(self, e: K.Expr) -> tuple[int, int] | None:
        if isinstance(e, K.Var):
            n = self.ranges.get(e.name)
            return None if n is None else (0, max(n - 1, 0))
        if isinstance(e, K.Const):
            return int(e.value), int(e.value)
        if isinstance(e, K.Select):
            a, b = self.bounds(e.a), self.bounds(e.b)
            return None if a is None or b is None else (min(a[0], b[0]), max(a[1], b[1]))
        if isinstance(e, K.Binary):
            a, b = self.bounds(e.a), self.bounds(e.b)
            if a is None or b is None:
                return None
            if e.op == "add":
                return a[0] + b[0], a[1] + b[1]
            if e.op == "sub":
                return a[0] - b[1], a[1] - b[0]
            if e.op == "mul":
                ps = [x * y for x in a for y in b]
                return min(ps), max(ps)
            if e.op in ("div", "mod") and b[0] == b[1] and b[0] > 0 and a[0] >= 0:
                return (a[0] // b[0], a[1] // b[0]) if e.op == "div" else (0, b[0] - 1)
        return None

    def index(self, e: K.Expr) -> str:
        """A C expression of an index (an integer of the index type or wider)."""
        if self.is_index(e):
            return self._index(e)
        if e.dtype.is_float:
            raise self.error(f"floating-point index expression {e}")
        return self.expr(e)

    def _index(self, e: K.Expr) -> str:
        if isinstance(e, K.Var):
            return self.var(e.name)
        if isinstance(e, K.Const):
            return str(int(e.value))
        if isinstance(e, K.Select):
            return f"({self.cond(e.cond)} ? {self._index(e.a)} : {self._index(e.b)})"
        a, b = self._index(e.a), self._index(e.b)
        if e.op in ("add", "sub", "mul"):
            if self.narrow:  # an intermediate that could leave int's range is computed in 64 bits
                r = self.bounds(e)
                if r is None or max(abs(r[0]), abs(r[1])) >= 2**31 - 1:
                    a, b = f"(gc_i64){a}", f"(gc_i64){b}"
            return f"({a} {'+' if e.op == 'add' else '-' if e.op == 'sub' else '*'} {b})"
        if e.op in ("div", "mod") and self.bounds(e) is not None:
            return f"({a} {'/' if e.op == 'div' else '%'} {b})"
        fn = "gc_idiv" if e.op == "div" else "gc_imod"
        return f"{fn}<{self.idx}>({a}, {b})"

    def var(self, name: str) -> str:
        v = self.vars.get(name)
        if v is None:
            raise self.error(f"loop variable {name!r} used outside its loop")
        return v

    def cond(self, e: K.Expr) -> str:
        return self.conv(self.expr(e), e.dtype, bool_) if not e.dtype.is_bool else self.expr(e)

    # .. general expressions ..
    def expr(self, e: K.Expr) -> str:
        if isinstance(e, K.Const):
            return self.const(e.value, e.dtype)
        if isinstance(e, K.Var):
            return self.conv(f"((gc_i64){self.var(e.name)})", i64, e.dtype)
        if isinstance(e, K.LocalRef):
            if e.name not in self.locals:
                raise self.error(f"use of undeclared local ${e.name}")
            cname, dt = self.locals[e.name]
            return self.conv(cname, dt, e.dtype)
        if isinstance(e, K.Load):
            return self.conv(self.load(e.buffer, e.index), self.buffer_dtype(e.buffer), e.dtype)
        if isinstance(e, K.Cast):
            return self.conv(self.expr(e.x), e.x.dtype, e.dtype)
        if isinstance(e, K.Unary):
            return self.unary(e.op, self.conv(self.expr(e.x), e.x.dtype, e.dtype), e.dtype)
        if isinstance(e, K.Binary):
            if self.is_index(e) and e.dtype == i64:
                return f"((gc_i64){self._index(e)})"
            a = self.conv(self.expr(e.a), e.a.dtype, e.dtype)
            b = self.conv(self.expr(e.b), e.b.dtype, e.dtype)
            return self.binary(e.op, a, b, e.dtype)
        if isinstance(e, K.Compare):
            sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.get(e.op)
            if sym is not None and self.is_index(e.a) and self.is_index(e.b):  # bounds guards
                return f"({self._index(e.a)} {sym} {self._index(e.b)})"
            dt = e.a.dtype if e.b.dtype == e.a.dtype else _promote(e.a.dtype, e.b.dtype)
            a = self.conv(self.expr(e.a), e.a.dtype, dt)
            b = self.conv(self.expr(e.b), e.b.dtype, dt)
            if sym is None:
                raise self.error(f"unknown compare op {e.op!r}")
            return f"({a} {sym} {b})"
        if isinstance(e, K.Select):
            a = self.conv(self.expr(e.a), e.a.dtype, e.dtype)
            b = self.conv(self.expr(e.b), e.b.dtype, e.dtype)
            return f"({self.cond(e.cond)} ? {a} : {b})"
        raise self.error(f"unknown expression {type(e).__name__}")

    def buffer_dtype(self, name: str) -> DType:
        if name not in self.buffers:
            raise self.error(f"unknown buffer {name!r}")
        return self.dtypes[name]

    def load(self, buffer: str, index: K.Expr) -> str:
        dt = self.buffer_dtype(buffer)
        vec = self.vector_loads.get((buffer, str(index)))
        if vec is not None:
            return f"{vec}.{'xyzw'[self.lane]}"
        ref = f"{self.buffers[buffer]}[{self.index(index)}]"
        if dt.name == "f16":
            return f"__half2float({ref})"
        if dt.is_bool:
            return f"({ref} != 0)"
        return ref

    def store(self, buffer: str, index: K.Expr, value: K.Expr) -> str:
        dt = self.buffer_dtype(buffer)
        v = self.conv(self.expr(value), value.dtype, dt)
        ref = f"{self.buffers[buffer]}[{self.index(index)}]"
        if dt.name == "f16":
            v = f"__float2half_rn({v})"
        elif dt.is_bool:
            v = f"(unsigned char)({v})"
        return f"{ref} = {v};"

    def const(self, value, dt: DType) -> str:
        if dt.is_bool:
            return "true" if value else "false"
        if dt.is_float:
            v = float(value)
            if dt.name != "f64":  # round to the dtype first: out-of-range values become inf
                with np.errstate(over="ignore"):
                    v = float(np.float16(v) if dt.name == "f16" else np.float32(v))
            if v != v:
                return "__int_as_float(0x7fc00000)" if dt.name != "f64" else \
                    "__longlong_as_double(0x7ff8000000000000LL)"
            if v in (float("inf"), float("-inf")):
                sign = "-" if v < 0 else ""
                return f"({sign}__int_as_float(0x7f800000))" if dt.name != "f64" else \
                    f"({sign}__longlong_as_double(0x7ff0000000000000LL))"
            text = repr(v)
            return text if dt.name == "f64" else f"{text}f"
        v = int(value)
        bits = 32 if dt.name == "i32" else 64
        v = ((v + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))  # wrap like numpy casts
        if bits == 32:
            return f"({v})" if v != -(1 << 31) else "(-2147483647 - 1)"
        return f"((gc_i64){v}LL)" if v != -(1 << 63) else "((gc_i64)(-9223372036854775807LL - 1))"

    def unary(self, op: str, x: str, dt: DType) -> str:
        if dt.is_float:
            d = dt.name == "f64"
            simple = {"neg": f"(-{x})", "abs": f"{'fabs' if d else 'fabsf'}({x})",
                      "sign": f"gc_fsign({x})", "sqrt": f"{'sqrt' if d else 'sqrtf'}({x})",
                      "rsqrt": f"gc_rsqrt({x})", "sigmoid": f"gc_sigmoid({x})",
                      "not": f"(({x}) == 0)"}
            if op in simple:
                return simple[op]
            if op in K.MATH_FUNCS:  # the rest of the table's library functions: CUDA's own
                return f"{op}{'' if d else 'f'}({x})"
        elif dt.is_bool:
            if op == "not":
                return f"(!{x})"
            if op in ("abs", "neg", "sign"):
                return x
        else:
            t = reg_type(dt)
            simple = {"neg": f"gc_wsub<{t}>(0, {x})", "abs": f"gc_iabs<{t}>({x})",
                      "sign": f"gc_isign<{t}>({x})", "not": f"(~{x})"}
            if op in simple:
                return simple[op]
        raise self.error(f"unary {op} is not defined for {dt}")

    def binary(self, op: str, a: str, b: str, dt: DType) -> str:
        if dt.is_float:
            d = dt.name == "f64"
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
            if op in sym:
                return f"({a} {sym[op]} {b})"
            t = reg_type(dt)
            if op == "pow":
                return f"{'pow' if d else 'powf'}({a}, {b})"
            if op == "max":
                return f"gc_fmax<{t}>({a}, {b})"
            if op == "min":
                return f"gc_fmin<{t}>({a}, {b})"
            if op == "mod":
                return f"gc_fmod({a}, {b})"
            if op in ("and", "or"):
                return f"(({t})(({a}) != 0 {'&&' if op == 'and' else '||'} ({b}) != 0))"
        elif dt.is_bool:
            if op in ("add", "or", "max"):
                return f"({a} || {b})"
            if op in ("mul", "and", "min"):
                return f"({a} && {b})"
            if op == "sub":
                return f"({a} != {b})"
        else:
            t = reg_type(dt)
            fns = {"add": "gc_wadd", "sub": "gc_wsub", "mul": "gc_wmul", "div": "gc_idiv",
                   "mod": "gc_imod", "max": "gc_imax", "min": "gc_imin", "pow": "gc_ipow"}
            if op in fns:
                return f"{fns[op]}<{t}>({a}, {b})"
            if op == "and":
                return f"({a} & {b})"
            if op == "or":
                return f"({a} | {b})"
        raise self.error(f"binary {op} is not defined for {dt}")
