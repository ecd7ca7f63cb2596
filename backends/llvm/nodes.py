"""The generator's own statement and expression nodes, which it wraps around kernel IR
while rendering (they never leave the code generator)."""
from __future__ import annotations

from dataclasses import dataclass

from ...ir import kernel as K


@dataclass
class _GemmCall:
    """Internal statement: one matrix of a GEMM through the library, on this thread alone
    (batch index `vb` or None)."""
    g: K.Gemm
    vb: K.Var | None


@dataclass(frozen=True)
class _EpilogueUse:
    """Internal expression: what a library GEMM's epilogue reads (buffers, locals other
    than its accumulator), for the analyses of the statement that calls it."""
    expr: object


@dataclass(frozen=True)
class _GemmEpilogue:
    """Internal expression: a GEMM epilogue with acc/i/j bound."""
    expr: object
    acc: K.LocalRef
    vi: K.Var
    vj: K.Var

    @property
    def dtype(self):
        return self.expr.dtype
