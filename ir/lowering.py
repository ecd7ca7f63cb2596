"""Building blocks for lowering graph nodes to kernel IR.

Op registry entries use these through their `scalar` and `lower` hooks; passes/lower.py
drives them over a whole graph. Index arithmetic is explicit: every buffer is dense and
row-major, and an operand that numpy-broadcasts gets stride 0 on the broadcast axes.
"""
from __future__ import annotations

import itertools
from math import prod
from typing import Any, Callable, Sequence

import numpy as np

from .dtypes import DType, bool_, i32, i64
from .graph import Node, Value
from .kernel import (Assign, Binary, Cast, Compare, Const, Declare, Expr, For, Kernel, Load,
                     LocalRef, Select, Stmt, Store, Var)

PARALLEL_MIN_ELEMENTS = 1 << 15  # below this, a fork/join costs more than it saves


def row_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """Strides of an operand read at output coordinates (0 on broadcast axes)."""
    lead = len(out_shape) - len(shape)
    own = row_strides(shape)
    return tuple(0 if i < lead or shape[i - lead] == 1 and out_shape[i] != 1 else own[i - lead]
                 for i in range(len(out_shape)))


def c64(v: int) -> Const:
    return Const(int(v), i64)


def add(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and a.value == 0:
        return b
    return Binary("add", a, b, a.dtype)


def mul(a: Expr, b: Expr) -> Expr:
    if isinstance(b, Const) and b.value == 1:
        return a
    if isinstance(a, Const) and a.value == 1:
        return b
    if (isinstance(a, Const) and a.value == 0) or (isinstance(b, Const) and b.value == 0):
        return c64(0)
    return Binary("mul", a, b, a.dtype)


def linear_index(vars_: Sequence[Expr], strides: Sequence[int], base: Expr | int = 0) -> Expr:
    out: Expr = base if not isinstance(base, int) else c64(base)
    for v, s in zip(vars_, strides):
        if s:
            out = add(out, mul(v, c64(s)))
    return out


def collapse(out_shape: Sequence[int], operand_shapes: Sequence[Sequence[int]]
             ) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
    """Merge adjacent output axes over which every operand is either present or broadcast
    alike, so an elementwise loop nest has as few, as long loops as possible. Returns the
    collapsed output shape and each operand's strides over it."""
    present = [[st != 0 for st in broadcast_strides(sh, out_shape)] for sh in operand_shapes]
    groups: list[list[int]] = []
    signatures: list[tuple[bool, ...] | None] = []  # None: only size-1 axes so far
    for ax, d in enumerate(out_shape):
        sig = None if d == 1 else tuple(p[ax] for p in present)
        if groups and (sig is None or signatures[-1] is None or signatures[-1] == sig):
            groups[-1].append(ax)
            if sig is not None:
                signatures[-1] = sig
        else:
            groups.append([ax])
            signatures.append(sig)
    new_shape = tuple(prod(out_shape[a] for a in g) for g in groups)
    strides = []
    for k in range(len(operand_shapes)):
        has = [sig is not None and sig[k] for sig in signatures]
        own = row_strides([d if h else 1 for d, h in zip(new_shape, has)])
        strides.append(tuple(s if h else 0 for s, h in zip(own, has)))
    return new_shape, strides


class LowerCtx:
    """What a lowering hook needs: buffer names of values, fresh names, kernel emission."""

    def __init__(self, buffer_of: Callable[[Value], str], new_temp: Callable[[int, DType], str],
                 emit_kernel: Callable[[Kernel], None], add_error: Callable[[str], int],
                 alias: Callable[[Value, Value], bool], status_buffer: str,
                 new_constant: Callable[[Any, DType], str],
                 gemm_panels: dict[str, int] | None = None) -> None:
        self._buffer_of = buffer_of
        self.gemm_panels = dict(gemm_panels or {})  # dtype name -> B panel width (K.Gemm.b_panels)
        self._new_temp = new_temp
        self._emit = emit_kernel
        self._add_error = add_error
        self._new_constant = new_constant
        self._alias = alias
        self.status = status_buffer
        self._names = itertools.count()
        self.node: Node | None = None

    def buf(self, v: Value) -> str:
        return self._buffer_of(v)

    def temp(self, size: int, dtype: DType) -> str:
        return self._new_temp(size, dtype)

    def constant(self, data, dtype: DType) -> str:
        """A new constant buffer holding data (a flat numpy array computed at lowering time
        from constant inputs: a weight in another layout)."""
        return self._new_constant(data, dtype)

    def var(self, prefix: str = "i") -> Var:
        return Var(f"{prefix}{next(self._names)}")

    def error_code(self, message: str) -> int:
        """Register a runtime error message; kernels store its code into the status buffer."""
        return self._add_error(message)

    def alias(self, out: Value, src: Value) -> bool:
        """Make out a view of src's buffer (no copy) when the driver allows it."""
        return self._alias(out, src)

    def kernel(self, body: list[Stmt], reads: Sequence[str], writes: Sequence[str],
               suffix: str = "") -> None:
        node = self.node
        name = f"{node.op}{next(self._names)}{suffix}" if node else f"k{next(self._names)}"
        source = ""
        if node is not None:  # deterministic (no value ids): the program text keys the cache
            ins = ", ".join(str(v.type) for v in node.inputs)
            outs = ", ".join(str(v.type) for v in node.outputs)
            source = f"{node.op}({ins}) -> {outs}" + (f" @ {node.loc}" if node.loc else "")
        self._emit(Kernel(name, body, list(dict.fromkeys(reads)), list(dict.fromkeys(writes)), source))

    # -- loop nests -------------------------------------------------------------------
    def loops(self, shape: Sequence[int], body: Callable[[list[Var]], list[Stmt]],
              parallel: bool = True, innermost: str = "vectorize") -> list[Stmt]:
        """A loop nest over shape; body gets the loop variables. The outermost loop is
        parallel when the nest is big enough; the innermost carries `innermost`."""
        shape = list(shape)
        vars_ = [self.var() for _ in shape]
        stmts = body(vars_)
        total = prod(shape)
        for depth in reversed(range(len(shape))):
            mark = "serial"
            if depth == len(shape) - 1:
                mark = innermost
            if depth == 0 and parallel and total >= PARALLEL_MIN_ELEMENTS and shape[0] > 1:
                mark = "parallel"
            stmts = [For(vars_[depth], shape[depth], stmts, mark)]
        return stmts

    def check_index(self, index: Expr, limit: int, what: str) -> tuple[Expr, Stmt]:
        """(a clamped index, a statement flagging an out-of-range one): compiled code never
        reads outside a buffer, and the runtime raises the registered error afterwards (the
        status buffer is an i32[2] output the runtime zeroes before and reads after a call)."""
        where = ""
        if self.node is not None:
            ins = ", ".join(str(v.type) for v in self.node.inputs)
            where = f"\n  in {self.node.op}({ins})" + (f"\n  at {self.node.loc}" if self.node.loc else "")
        code = self.error_code(f"{what}: an index is out of range 0..{limit - 1}{where}")
        bad = Binary("or", Compare("lt", index, c64(0)), Compare("ge", index, c64(limit)), bool_)
        safe = Select(bad, c64(0), index, i64)
        # status has two slots: a bad index writes its code to slot 0, a good one writes to
        # the scratch slot 1, so no thread ever overwrites a flag with "no error".
        flag = Store(self.status, Select(bad, c64(0), c64(1), i64), Const(code, i32))
        return safe, flag


# --- generic lowerings used by registry hooks ------------------------------------------------

def lower_elementwise(ctx: LowerCtx, node: Node, scalar: Callable[..., Expr]) -> None:
    out = node.outputs[0]
    shape, strides = collapse(out.shape, [v.shape for v in node.inputs])
    out_strides = row_strides(shape)
    ins = [ctx.buf(v) for v in node.inputs]
    obuf = ctx.buf(out)

    def body(vs: list[Var]) -> list[Stmt]:
        loads = [Load(b, linear_index(vs, st), v.dtype) for b, st, v in zip(ins, strides, node.inputs)]
        return [Store(obuf, linear_index(vs, out_strides), scalar(loads, node.attrs, out.dtype))]
    ctx.kernel(ctx.loops(shape, body), ins, [obuf])


def reduce_init(kind: str, dtype: DType) -> Const:
    if kind in ("sum", "mean"):
        return Const(0 if not dtype.is_float else 0.0, dtype)
    if dtype.is_float:
        return Const(float("-inf") if kind == "max" else float("inf"), dtype)
    info = np.iinfo(dtype.np_dtype)
    return Const(int(info.min if kind == "max" else info.max), dtype)


def combine(kind: str, acc: Expr, x: Expr) -> Expr:
    if kind in ("sum", "mean"):
        return Binary("add", acc, x, acc.dtype)
    return Binary("max" if kind == "max" else "min", acc, x, acc.dtype)


def lower_reduction(ctx: LowerCtx, node: Node, kind: str) -> None:
    """sum/mean/max/min over canonical axes. Reductions over the innermost axis keep the
    accumulator in a register (a `reduce` loop that vectorises); reductions over outer axes
    accumulate rows of the output in place so the inner loop stays contiguous."""
    x, out = node.inputs[0], node.outputs[0]
    axes = node.attrs["axes"]
    xs, xb, ob = x.shape, ctx.buf(x), ctx.buf(out)
    dt = out.dtype
    count = prod(xs[a] for a in axes) if axes else 1
    # a mean over no elements is NaN (0 * NaN), as numpy's
    scale = Const(1.0 / count if count else float("nan"), dt) if kind == "mean" else None
    kept = [a for a in range(len(xs)) if a not in axes]
    kept_shape = [xs[a] for a in kept]
    xstr = row_strides(xs)
    ostr = row_strides(kept_shape)
    if not axes or (axes and axes[-1] == len(xs) - 1) or prod(xs[a] for a in kept) == 1:
        red_shape = [xs[a] for a in axes]
        acc = LocalRef("acc", dt)

        def body(vs: list[Var]) -> list[Stmt]:
            rvars = [ctx.var("r") for _ in axes]
            coords: dict[int, Expr] = dict(zip(kept, vs))
            coords.update(zip(axes, rvars))
            idx = linear_index([coords[a] for a in range(len(xs))], xstr)
            inner: list[Stmt] = [Assign(acc, combine(kind, acc, Load(xb, idx, dt)))]
            for depth in reversed(range(len(axes))):
                inner = [For(rvars[depth], red_shape[depth], inner,
                             "reduce" if depth == len(axes) - 1 else "serial")]
            result: Expr = acc if scale is None else Binary("mul", acc, scale, dt)
            return [Declare(acc, reduce_init(kind, dt)), *inner,
                    Store(ob, linear_index(vs, ostr), result)]
        ctx.kernel(ctx.loops(kept_shape, body, innermost="serial"), [xb], [ob])
        return
    # Outer-axis reduction: out[k] = init; for all x in row order: out[k] op= x.
    size = prod(kept_shape)
    init = ctx.loops([size], lambda vs: [Store(ob, vs[0], reduce_init(kind, dt))])
    last = axes[-1]
    suffix_axes = list(range(last + 1, len(xs)))  # kept axes after the last reduced one

    def body(vs: list[Var]) -> list[Stmt]:
        coords = dict(zip(range(len(xs)), vs))
        oidx = linear_index([coords[a] for a in kept], ostr)
        return [Store(ob, oidx, combine(kind, Load(ob, oidx, dt), Load(xb, linear_index(vs, xstr), dt)))]
    vars_ = [ctx.var() for _ in xs]
    stmts = body(vars_)
    for a in reversed(range(len(xs))):
        mark = "vectorize" if a == len(xs) - 1 and a in suffix_axes else "serial"
        stmts = [For(vars_[a], xs[a], stmts, mark)]
    fin: list[Stmt] = []
    if scale is not None:
        fin = ctx.loops([size], lambda vs: [Store(ob, vs[0], Binary("mul", Load(ob, vs[0], dt), scale, dt))])
    ctx.kernel(init + stmts + fin, [xb], [ob])


def lower_argmax(ctx: LowerCtx, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    axis = node.attrs["axis"]
    xs, xb, ob = x.shape, ctx.buf(x), ctx.buf(out)
    kept = [a for a in range(len(xs)) if a != axis]
    xstr = row_strides(xs)
    best = LocalRef("best", x.dtype)
    where = LocalRef("where", i64)

    def body(vs: list[Var]) -> list[Stmt]:
        r = ctx.var("r")
        coords: dict[int, Expr] = dict(zip(kept, vs))
        coords[axis] = r
        val = Load(xb, linear_index([coords[a] for a in range(len(xs))], xstr), x.dtype)
        # strictly greater keeps the first maximum; NaN wins (as numpy's argmax)
        better = Binary("or", Compare("gt", val, best),
                        Binary("and", Compare("ne", val, val), Compare("eq", best, best), bool_), bool_)
        loop = For(r, xs[axis], [Assign(where, Select(better, r, where, i64)),
                                 Assign(best, Select(better, val, best, x.dtype))])
        first = Load(xb, linear_index([coords[a] if a != axis else c64(0) for a in range(len(xs))], xstr),
                     x.dtype)
        return [Declare(best, first), Declare(where, c64(0)), loop,
                Store(ob, linear_index(vs, row_strides([xs[a] for a in kept])), where)]
    ctx.kernel(ctx.loops([xs[a] for a in kept], body, innermost="serial"), [xb], [ob])


def lower_copy_map(ctx: LowerCtx, node: Node, index_of: Callable[[list[Var]], Expr],
                   src: Value | None = None, guard: Callable[[list[Var]], Expr] | None = None,
                   fill: Expr | None = None) -> None:
    """out[o] = src[index_of(o)] (or `fill` where guard(o) is false): transpose, slice,
    broadcast, pad and friends."""
    out = node.outputs[0]
    src = src if src is not None else node.inputs[0]
    sb, ob = ctx.buf(src), ctx.buf(out)
    ostr = row_strides(out.shape)

    def body(vs: list[Var]) -> list[Stmt]:
        idx = index_of(vs)
        if guard is None:
            value: Expr = Load(sb, idx, src.dtype)
        else:
            ok = guard(vs)
            # an empty source has no element 0 to read instead: then every position is fill
            value = fill if src.type.size == 0 else \
                Select(ok, Load(sb, Select(ok, idx, c64(0), i64), src.dtype), fill, out.dtype)
        return [Store(ob, linear_index(vs, ostr), value)]
    ctx.kernel(ctx.loops(out.shape, body), [sb], [ob])
