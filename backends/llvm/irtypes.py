"""LLVM types and small IR helpers every part of the code generator uses: register and
memory types of each dtype, the loop-ID metadata node, name sanitising, opaque allocas."""
from __future__ import annotations

import re

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType, f32
from ...ir.errors import GraphcError


class CodegenError(GraphcError):
    """The kernel IR cannot be rendered (malformed program or unsupported construct)."""


# -- types ---------------------------------------------------------------------------------

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F16 = ir.HalfType()
F32 = ir.FloatType()
F64 = ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

_CTYPE = {"f16": F32, "f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I1}
_MTYPE = {"f16": F16, "f32": F32, "f64": F64, "i32": I32, "i64": I64, "bool": I8}


def ctype(dt: DType) -> ir.Type:
    """Register type of a dtype."""
    return _CTYPE[dt.name]


def mtype(dt: DType) -> ir.Type:
    """Memory type of a dtype."""
    return _MTYPE[dt.name]


def _compute_dtype(dt: DType) -> DType:
    return f32 if dt.name == "f16" else dt


MATH_FUNCS = K.MATH_FUNCS  # the kernel IR's one scalar-function table (ir/kernel.py)
_TRANSCENDENTAL_COST = 8


class _LoopID(ir.values.MDValue):
    """A distinct, self-referential `llvm.loop` node (llvmlite cannot express one)."""

    def descr(self, buf):
        ops = [self.get_reference()] + [op.get_reference() for op in self.operands]
        buf += ("distinct !{" + ", ".join(ops) + "}", "\n")

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)


def _sanitize(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.]", "_", name)
    return s or "_"


def _opaque_alloca(b: ir.IRBuilder, typ: ir.Type, name: str) -> ir.Value:
    """An alloca whose value is an opaque `ptr` (llvmlite types allocas as typed pointers,
    which its GEP with `source_etype` then propagates to the element addresses)."""
    a = b.alloca(typ, name=name)
    a.type = PTR
    return a


def _fsuf(t: ir.Type) -> str:
    return "f64" if t == F64 else "f32"


def _promote(a: DType, b: DType) -> DType:
    order = ["bool", "i32", "i64", "f16", "f32", "f64"]
    return a if order.index(a.name) >= order.index(b.name) else b
