"""Walks and estimates over kernel-IR statements the generator needs: the buffers a kernel
touches and writes, the locals an expression reads, a loop's estimated work (the parallel
threshold) and whether forcing its vectorisation can succeed."""
from __future__ import annotations

from ...ir import kernel as K
from .gemm_loops import _GemmLoops
from .gemm_plan import WORKSPACE
from .irtypes import _TRANSCENDENTAL_COST, MATH_FUNCS
from .mathcall import _mathlib
from .nodes import _EpilogueUse, _GemmCall, _GemmEpilogue


def _expr_children(e) -> list:
    """K.expr_children, and the operand of this generator's own epilogue nodes."""
    if isinstance(e, (_GemmEpilogue, _EpilogueUse)):
        return [e.expr]
    return K.expr_children(e)


def _walk_expr(e, seen=None):
    """Every node of an expression DAG once (by identity), this generator's nodes too."""
    return K.walk_expr_dag(e, _expr_children, seen)


def _local_refs(e):
    """LocalRefs an expression reads (a GEMM epilogue's `acc` is its accumulator)."""
    if isinstance(e, K.LocalRef):
        yield e
    elif isinstance(e, (_GemmEpilogue, _EpilogueUse)):
        if isinstance(e, _GemmEpilogue):
            yield e.acc
        for y in _local_refs(e.expr):
            if y.name != "acc":
                yield y
    else:
        for c in _expr_children(e):
            yield from _local_refs(c)


def _stmt_exprs(s) -> list:
    if isinstance(s, _GemmCall):  # the library calls the epilogue on finished tiles
        out = [o for o in (s.g.offset_a, s.g.offset_b, s.g.offset_c) if not isinstance(o, int)]
        return out + ([_EpilogueUse(s.g.epilogue)] if s.g.epilogue is not None else [])
    if isinstance(s, K.Store):
        return [s.index, s.value]
    if isinstance(s, K.Declare):
        return [s.init]
    if isinstance(s, K.Assign):
        return [s.value]
    if isinstance(s, K.Gemm):  # its epilogue's `acc` is the GEMM's own, not a local around it
        out = [o for o in (s.offset_a, s.offset_b, s.offset_c) if not isinstance(o, int)]
        if s.epilogue is not None:
            out.append(_EpilogueUse(s.epilogue))
        return out
    return []


def _walk_stmts(stmts):
    for s in stmts:
        yield s
        if isinstance(s, K.For):
            yield from _walk_stmts(s.body)


def buffers_used(stmts) -> tuple[list[str], set[str]]:
    """(buffers referenced in order of first use, buffers written)."""
    used: dict[str, None] = {}
    written: set[str] = set()
    for s in _walk_stmts(stmts):
        if isinstance(s, K.Store):
            used.setdefault(s.buffer)
            written.add(s.buffer)
        if isinstance(s, (K.Gemm, _GemmCall)):
            g = s if isinstance(s, K.Gemm) else s.g
            for b in (g.a, g.b, g.c, WORKSPACE):
                used.setdefault(b)
            written.add(g.c)
            written.add(WORKSPACE)
        for e in _stmt_exprs(s):
            for x in _walk_expr(e):
                if isinstance(x, K.Load):
                    used.setdefault(x.buffer)
    return list(used), written


def _expr_cost(e) -> int:
    """Operations of e, a Load's index not counted: address arithmetic is strength-reduced
    out of the loops (counted, a depthwise convolution's divisions and modulos of plane
    numbers made its estimate 3-5x its work, and 10 us kernels were forked)."""
    c = 0
    stack, seen = [e], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if not isinstance(x, K.Load):
            stack.extend(_expr_children(x))
        if isinstance(x, K.Unary) and x.op in MATH_FUNCS:
            c += _TRANSCENDENTAL_COST
        elif isinstance(x, K.Binary) and x.op in ("pow", "div", "mod"):
            c += _TRANSCENDENTAL_COST if x.op == "pow" else 4
        elif isinstance(x, (K.Const, K.Var, K.LocalRef)):
            pass
        else:
            c += 1
    return max(c, 1)


# Loops of fewer iterations are not forced to vectorise. LLVM 22 (llvmlite 0.50) rejects a
# forced two-iteration loop ("value that could not be identified as reduction is used
# outside the loop", then "unable to perform the requested transformation" on stderr) and
# then unrolls it fully and the SLP vectoriser packs it anyway (x + 1 on f32[4] split over
# two threads: one <2 x float> fadd either way); a one-iteration loop has nothing to vectorise.
MIN_FORCED_VECTOR_TRIPS = 3


def _vectorizable(body) -> bool:
    """Whether forcing vectorisation of a loop with this body can succeed: innermost (no
    nested loop or GEMM) and no scalar library calls (fallback math, integer pow)."""
    have_mathlib = _mathlib() is not None
    for st in _walk_stmts(body):
        if isinstance(st, (K.For, K.Gemm, _GemmLoops, _GemmCall)):
            return False
        for e in _stmt_exprs(st):
            for x in _walk_expr(e):
                if isinstance(x, K.Unary) and x.op in MATH_FUNCS and not have_mathlib:
                    return False
                if isinstance(x, K.Binary) and x.op == "pow" and (not have_mathlib or not x.dtype.is_float):
                    return False
    return True


def estimate_work(stmts) -> int:
    """Rough scalar-operation count of a statement list (static: extents are constants)."""
    w = 0
    for s in stmts:
        if isinstance(s, K.For):
            w += s.extent * estimate_work(s.body)
        elif isinstance(s, K.Gemm):
            w += 2 * s.batch * s.m * s.n * s.k
        elif isinstance(s, _GemmCall):
            w += 2 * s.g.m * s.g.n * s.g.k
        elif isinstance(s, K.Store):  # the store, and the value (not the address)
            w += 1 + _expr_cost(s.value)
        else:
            w += sum(_expr_cost(e) for e in _stmt_exprs(s))
    return w
