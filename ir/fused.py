"""One loop nest per fusion group (passes/fusion.py assigns the groups).

An elementwise group is one loop nest over its common output shape; every member's value
is a local of the loop body, and members whose values leave the group are stored too.

A group with reductions is a row kernel. A *row space* is a domain shape D and reduced
axes A, the last axis of D among them: each kept coordinate is a row, each row has
prod(D[A]) elements. A row group holds reductions of D-shaped values over A, elementwise
nodes over D (which may read the reductions' per-row results, broadcast along A), and
elementwise nodes and views over the rows (shape D with A set to 1, or with A dropped)
that combine or reshape per-row results.

It lowers to a parallel loop over rows; each row runs *phases*. Phase p loops over the
row computing the D-shaped members it needs and the reductions that can run once the
results of phase p-1 are known; between phases the per-row members are computed as
scalars. Softmax is max | sum(exp(x - m)) | e * (1/s): three passes over a row that sits
in the cache instead of three passes over memory. A D-shaped member needed in several
phases is recomputed in each (cheaper than a trip to memory) unless it is costly
(`CACHE_MIN_FLOPS`, a transcendental function): then the first phase stores it in the
buffer of a group result that is written only later at the same index, and the later
phases load it back from the cache, so no scratch memory is needed. Members whose values
leave the group are stored in the first phase that computes them. Kept and reduced axes
merge into as few loops as the addressing allows, so index arithmetic stays linear in
the loop variables (which the in-place analysis of passes/inplace.py relies on).

A contraction group (a matmul, a view of its result, elementwise consumers) lowers through
the contraction's registry `lower_epilogue` hook: one Gemm statement whose epilogue
expression computes the last member from each accumulated element.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Sequence

from .errors import GraphcError
from .graph import Node, Value
from .kernel import (GEMM_COL, GEMM_ROW, Assign, Binary, Const, Declare, Expr, For, LocalRef, Load,
                     Stmt, Store, Var)
from .lowering import (PARALLEL_MIN_ELEMENTS, LowerCtx, broadcast_strides, collapse, combine,
                       linear_index, reduce_init, row_strides)
from .registry import Fusion, get_op


# A D-shaped value needed in several phases of a row kernel is recomputed in each, unless
# that costs at least this many flops per element (a transcendental function: exp is 10):
# then it is stored in the first and loaded back (from the cache: a row is small).
CACHE_MIN_FLOPS = 8.0


class FusionGroupError(GraphcError):
    """A fusion group that no single loop nest computes (e.g. edited text IR)."""


def combine_kind(node: Node) -> str | None:
    """How a reduction folds its operand ("sum", "mean", "max", "min"), or None."""
    return get_op(node.op).combine


def is_elementwise(node: Node) -> bool:
    """Computable per element of its output from operand elements at broadcast positions."""
    opdef = get_op(node.op)
    return len(node.outputs) == 1 and (opdef.scalar is not None or opdef.fusion is Fusion.BROADCAST)


def _squeezed(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


@dataclass(frozen=True)
class RowSpace:
    """Domain D reduced over axes A (sorted, the last axis of D among them)."""
    domain: tuple[int, ...]
    axes: tuple[int, ...]

    @staticmethod
    def fits(domain: Sequence[int], axes: Sequence[int]) -> bool:
        """Whether a row kernel can run this reduction: the innermost axis is reduced (so a
        row's inner loop is contiguous), a row has more than one element (so per-row and
        D-shaped values differ in shape) and nothing is empty."""
        return (bool(axes) and axes[-1] == len(domain) - 1 and all(d > 0 for d in domain)
                and prod(domain[a] for a in axes) > 1)

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(a for a in range(len(self.domain)) if a not in self.axes)

    @property
    def kept_shape(self) -> tuple[int, ...]:
        return tuple(self.domain[a] for a in self.kept)

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The keepdims shape of a reduction's result: broadcasts back over D."""
        return tuple(1 if a in self.axes else d for a, d in enumerate(self.domain))

    @property
    def rows(self) -> int:
        return prod(self.kept_shape)

    @property
    def extent(self) -> int:
        return prod(self.domain[a] for a in self.axes)

    def holds_rows(self, shape: Sequence[int]) -> bool:
        """A shape whose elements are the rows, in row order (keepdims or not)."""
        return _squeezed(shape) == _squeezed(self.kept_shape)

    def broadcasts_rows(self, shape: Sequence[int]) -> bool:
        """A per-row value that a D-shaped op reads along its rows: the keepdims shape."""
        pad = len(self.domain) - len(shape)
        return pad >= 0 and (1,) * pad + tuple(shape) == self.row_shape


# --- lowering ---------------------------------------------------------------------------------

@dataclass
class _Plan:
    space: RowSpace
    reductions: list[Node]
    level: dict[Value, int]     # the first phase a member value is known in
    phase: dict[Node, int]      # the phase each reduction runs in
    phases: int


def _plan(members: Sequence[Node]) -> _Plan:
    reductions = [m for m in members if combine_kind(m) is not None]
    first = reductions[0]
    space = RowSpace(first.inputs[0].shape, tuple(first.attrs["axes"]))

    def bad(node: Node, why: str) -> FusionGroupError:
        return FusionGroupError(f"fusion group {node.group}: {why}", node=node)

    if not RowSpace.fits(space.domain, space.axes):
        raise bad(first, f"a row kernel cannot reduce {first.inputs[0].type} over axes "
                         f"{list(space.axes)} (the last axis must be reduced, rows must hold "
                         "more than one element)")
    produced = {m.outputs[0] for m in members}
    level: dict[Value, int] = {}
    phase: dict[Node, int] = {}
    for m in members:
        out = m.outputs[0]
        ins = [v for v in m.inputs if v in produced]
        lv = max((level[v] for v in ins), default=0)
        if combine_kind(m) is not None:
            if m.inputs[0].shape != space.domain or tuple(m.attrs["axes"]) != space.axes:
                raise bad(m, f"reduction over axes {list(m.attrs['axes'])} of {m.inputs[0].type} "
                             f"does not match the group's {list(space.axes)} of "
                             f"{list(space.domain)}")
            if ins and ins[0].shape != space.domain:
                raise bad(m, "a reduction's operand must have the group's domain shape")
            phase[m] = lv
            level[out] = lv + 1
        elif get_op(m.op).view and space.holds_rows(out.shape) and ins:
            if not space.holds_rows(m.inputs[0].shape):
                raise bad(m, "a per-row view of a value that is not per row")
            level[out] = lv
        elif not is_elementwise(m):
            raise bad(m, f"{m.op} is neither elementwise nor a reduction")
        elif out.shape == space.domain:
            for v in ins:
                if v.shape != space.domain and not space.broadcasts_rows(v.shape):
                    raise bad(m, f"operand {v.type} is neither over the domain "
                                 f"{list(space.domain)} nor one value per row {list(space.row_shape)}")
            level[out] = lv
        elif space.holds_rows(out.shape):
            if any(not space.holds_rows(v.shape) for v in ins):
                raise bad(m, "a per-row member reads a value that is not per row")
            level[out] = lv
        else:
            raise bad(m, f"result {out.type} is neither over the domain {list(space.domain)} "
                         f"nor one value per row")
    last_reduction = max(phase.values())
    phases = max([last_reduction + 1] + [level[v] + 1 for v in level if v.shape == space.domain])
    return _Plan(space, reductions, level, phase, phases)


def _member_expr(node: Node, ins: list[Expr]) -> Expr:
    scalar = get_op(node.op).scalar
    if scalar is None:  # broadcast_to or a view: the operand read at the same position
        return ins[0]
    return scalar(ins, node.attrs, node.outputs[0].dtype)


def lower_group(ctx: LowerCtx, members: Sequence[Node], needed: set[Value]) -> None:
    """One kernel for a fusion group; `needed` holds the values read outside the group."""
    if get_op(members[0].op).lower_epilogue is not None:
        _lower_gemm_group(ctx, members, needed)
    elif any(combine_kind(m) is not None for m in members):
        _lower_row_group(ctx, members, needed)
    else:
        _lower_elementwise_group(ctx, members, needed)


def _external_inputs(members: Sequence[Node]) -> list[Value]:
    produced = {v for m in members for v in m.outputs}
    return list(dict.fromkeys(v for m in members for v in m.inputs if v not in produced))


def _lower_elementwise_group(ctx: LowerCtx, members: Sequence[Node], needed: set[Value]) -> None:
    domain = members[0].outputs[0].shape
    for m in members:
        if not is_elementwise(m) or m.outputs[0].shape != domain:
            raise FusionGroupError(f"fusion group {m.group}: {m.op} -> {m.outputs[0].type} is not "
                                   f"elementwise over the group's shape {list(domain)}", node=m)
    external = _external_inputs(members)
    shape, strides = collapse(domain, [v.shape for v in external] + [domain])
    ext_strides = dict(zip(external, strides[:-1]))
    out_strides = strides[-1]

    def body(coords: list[Var]) -> list[Stmt]:
        stmts: list[Stmt] = []
        env: dict[Value, Expr] = {}
        for v in external:
            loc = LocalRef(f"in{ctx.var().name}", v.dtype)
            stmts.append(Declare(loc, Load(ctx.buf(v), linear_index(coords, ext_strides[v]), v.dtype)))
            env[v] = loc
        for m in members:
            out = m.outputs[0]
            loc = LocalRef(f"v{ctx.var().name}", out.dtype)
            stmts.append(Declare(loc, _member_expr(m, [env[v] for v in m.inputs])))
            env[out] = loc
            if out in needed:
                stmts.append(Store(ctx.buf(out), linear_index(coords, out_strides), loc))
        return stmts
    writes = [ctx.buf(m.outputs[0]) for m in members if m.outputs[0] in needed]
    ctx.kernel(ctx.loops(shape, body), [ctx.buf(v) for v in external], writes, suffix="_fused")


def _flops_per_element(m: Node) -> float:
    out = m.outputs[0]
    cost = get_op(m.op).estimate_cost([v.type for v in m.inputs], [out.type], m.attrs)
    return cost.flops / max(out.type.size, 1)


class _RowKernel:
    """Builds the loop nest of one row group (see the module docstring)."""

    def __init__(self, ctx: LowerCtx, members: Sequence[Node], needed: set[Value]) -> None:
        self.ctx = ctx
        self.plan = plan = _plan(members)
        self.sp = sp = plan.space
        self.members = list(members)
        self.needed = needed
        self.produced = {m.outputs[0] for m in members}
        self.external = _external_inputs(members)
        self.domain_members = [m for m in members
                               if combine_kind(m) is None and m.outputs[0].shape == sp.domain]
        self.row_members = [m for m in members
                            if combine_kind(m) is None and m.outputs[0].shape != sp.domain]
        # what each phase loop must produce: its reductions' operands and the stores of
        # D-shaped results first known in it
        self.roots = {p: {r.inputs[0] for r in plan.reductions if plan.phase[r] == p}
                      | {m.outputs[0] for m in self.domain_members
                         if plan.level[m.outputs[0]] == p and m.outputs[0] in needed}
                      for p in range(plan.phases)}
        # the phase that first computes each D-shaped value (values computed nowhere: none)
        uncached = [self.computed_in(p, {}) for p in range(plan.phases)]
        self.first_use = {m.outputs[0]: next((p for p, w in enumerate(uncached) if m.outputs[0] in w), None)
                          for m in self.domain_members}
        self.cache = self._choose_cache()
        self.strides = self._strides()
        self.runs = self._runs()
        self.kept_vars: dict[tuple[int, ...], Expr] = {
            r: ctx.var("row") for r in self.runs if r[0] not in sp.axes}
        self.env: dict[Value, Expr] = {}   # per-row values known so far
        self.body: list[Stmt] = []

    # .. what each phase computes ..
    def computed_in(self, p: int, cached: dict[Value, Value]) -> set[Value]:
        """D-shaped member values phase p computes (values cached by an earlier phase are
        loaded instead)."""
        want = set(self.roots[p])
        for m in reversed(self.domain_members):
            out = m.outputs[0]
            if out in want and not (out in cached and self.first_use[out] < p):
                want.update(v for v in m.inputs if v in self.produced and v.shape == self.sp.domain)
        return want

    def _choose_cache(self) -> dict[Value, Value]:
        """value -> the group result whose buffer holds it between phases. A costly value
        (a transcendental function) needed again in a later phase is stored once and loaded
        back instead of recomputed; its home is the buffer of a D-shaped result of the same
        dtype that the kernel writes only in a phase at or after the value's last use, at
        the same index, after loading it. So no scratch memory, and the row is in cache."""
        cached: dict[Value, Value] = {}
        homes = [m.outputs[0] for m in self.domain_members
                 if m.outputs[0] in self.needed and m.outputs[0].dtype.name in ("f32", "f64")]
        for m in reversed(self.domain_members):
            v = m.outputs[0]
            uses = [p for p in range(self.plan.phases) if v in self.computed_in(p, cached)]
            if len(uses) < 2 or self._recompute_flops(v, cached) < CACHE_MIN_FLOPS:
                continue
            for home in homes:
                if home is not v and home.dtype == v.dtype and home not in cached.values() \
                        and self.plan.level[home] >= uses[-1]:
                    cached[v] = home
                    break
        return cached

    def _recompute_flops(self, v: Value, cached: dict[Value, Value]) -> float:
        flops, todo, seen = 0.0, [v], set()
        by_out = {m.outputs[0]: m for m in self.domain_members}
        while todo:
            x = todo.pop()
            if x in seen or x not in by_out or (x is not v and x in cached):
                continue
            seen.add(x)
            flops += _flops_per_element(by_out[x])
            todo.extend(by_out[x].inputs)
        return flops

    # .. index arithmetic ..
    def _strides(self) -> dict[object, tuple[int, ...]]:
        """Every way the kernel addresses memory, as strides per domain axis: operands read
        over the domain, operands of per-row members (zero along the reduced axes), and
        the domain and per-row layouts of results."""
        sp = self.sp
        rank = len(sp.domain)
        nonunit_kept = [a for a in sp.kept if sp.domain[a] != 1]

        def per_row(shape: Sequence[int], strides: Sequence[int]) -> tuple[int, ...]:
            out = [0] * rank
            for a, (d, st) in zip(nonunit_kept, [(d, st) for d, st in zip(shape, strides) if d != 1]):
                out[a] = st
            return tuple(out)
        vecs: dict[object, tuple[int, ...]] = {"domain": row_strides(sp.domain),
                                               "row": per_row(sp.kept_shape, row_strides(sp.kept_shape))}
        for v in self.external:
            for m in self.members:
                if v not in m.inputs:
                    continue
                out = m.outputs[0]
                if combine_kind(m) is not None or out.shape == sp.domain:
                    vecs[("domain", v)] = broadcast_strides(v.shape, sp.domain)
                else:
                    vecs[("row", v, out.shape)] = per_row(out.shape, broadcast_strides(v.shape, out.shape))
        return vecs

    def _runs(self) -> list[tuple[int, ...]]:
        """Domain axes merged into as few loops as the addressing allows: neighbours of the
        same kind (kept or reduced) whose strides nest in every layout; size-1 axes drop."""
        sp = self.sp
        runs: list[list[int]] = []
        for a in range(len(sp.domain)):
            if sp.domain[a] == 1:
                continue
            if runs and (runs[-1][-1] in sp.axes) == (a in sp.axes) and all(
                    st[runs[-1][-1]] == st[a] * sp.domain[a] for st in self.strides.values()):
                runs[-1].append(a)
            else:
                runs.append([a])
        return [tuple(r) for r in runs]

    def index(self, key: object, loop_vars: dict[tuple[int, ...], Expr]) -> Expr:
        st = self.strides[key]
        return linear_index([loop_vars[r] for r in self.runs if r in loop_vars],
                            [st[r[-1]] for r in self.runs if r in loop_vars])

    # .. code ..
    def local(self, prefix: str, v: Value) -> LocalRef:
        return LocalRef(f"{prefix}{self.ctx.var().name}", v.dtype)

    def row_member(self, m: Node) -> None:
        ctx, out = self.ctx, m.outputs[0]
        ins = [self.env[v] if v in self.env else
               Load(ctx.buf(v), self.index(("row", v, out.shape), self.kept_vars), v.dtype)
               for v in m.inputs]
        loc = self.local("v", out)
        self.body.append(Declare(loc, _member_expr(m, ins)))
        self.env[out] = loc
        if out in self.needed:
            self.body.append(Store(ctx.buf(out), self.index("row", self.kept_vars), loc))

    def phase_loop(self, p: int) -> None:
        ctx, sp, plan = self.ctx, self.sp, self.plan
        reds = [r for r in plan.reductions if plan.phase[r] == p]
        want = self.computed_in(p, self.cache)
        if not want:
            return
        red_runs = [r for r in self.runs if r[0] in sp.axes]
        loop_vars: dict[tuple[int, ...], Expr] = dict(self.kept_vars)
        loop_vars.update((r, ctx.var("r")) for r in red_runs)
        index = self.index("domain", loop_vars)
        inner: list[Stmt] = []
        local_of: dict[Value, Expr] = dict(self.env)
        for v in self.external:
            if any(v in m.inputs and m.outputs[0] in want for m in self.domain_members) or \
                    any(r.inputs[0] is v for r in reds):
                loc = self.local("in", v)
                inner.append(Declare(loc, Load(ctx.buf(v), self.index(("domain", v), loop_vars), v.dtype)))
                local_of[v] = loc
        loaded = [m.outputs[0] for m in self.domain_members if m.outputs[0] in want
                  and m.outputs[0] in self.cache and self.first_use[m.outputs[0]] < p]
        for out in loaded:  # before any store: a home's own result may be stored below
            local_of[out] = self.local("v", out)
            inner.append(Declare(local_of[out], Load(ctx.buf(self.cache[out]), index, out.dtype)))
        for m in self.domain_members:
            out = m.outputs[0]
            if out not in want or out in loaded:
                continue
            loc = self.local("v", out)
            inner.append(Declare(loc, _member_expr(m, [local_of[v] for v in m.inputs])))
            if out in self.cache:
                inner.append(Store(ctx.buf(self.cache[out]), index, loc))
            local_of[out] = loc
            if out in self.roots[p] and out in self.needed:
                inner.append(Store(ctx.buf(out), index, loc))
        accs = []
        for r in reds:
            out = r.outputs[0]
            acc = self.local("acc", out)
            accs.append((r, acc))
            self.body.append(Declare(acc, reduce_init(combine_kind(r), out.dtype)))
            inner.append(Assign(acc, combine(combine_kind(r), acc, local_of[r.inputs[0]])))
        loops: list[Stmt] = inner
        for depth, run in reversed(list(enumerate(red_runs))):
            mark = "serial"
            if depth == len(red_runs) - 1:
                mark = "reduce" if reds else "vectorize"
            loops = [For(loop_vars[run], prod(sp.domain[a] for a in run), loops, mark)]
        self.body.extend(loops)
        for r, acc in accs:
            out = r.outputs[0]
            value: Expr = acc
            if combine_kind(r) == "mean":
                inv = 1.0 / sp.extent if sp.extent else float("nan")  # empty mean: NaN, as numpy
                value = Binary("mul", acc, Const(inv, out.dtype), out.dtype)
            loc = self.local("red", out)
            self.body.append(Declare(loc, value))
            self.env[out] = loc
            if out in self.needed:
                self.body.append(Store(ctx.buf(out), self.index("row", self.kept_vars), loc))

    def emit(self) -> None:
        plan, sp, ctx = self.plan, self.sp, self.ctx
        for p in range(plan.phases + 1):
            for m in self.row_members:
                if plan.level[m.outputs[0]] == p:
                    self.row_member(m)
            if p < plan.phases:
                self.phase_loop(p)
        nest = self.body
        kept_runs = [r for r in self.runs if r[0] not in sp.axes]
        for depth, run in reversed(list(enumerate(kept_runs))):
            extent = prod(sp.domain[a] for a in run)
            big = extent > 1 and sp.rows * sp.extent >= PARALLEL_MIN_ELEMENTS
            nest = [For(self.kept_vars[run], extent, nest, "parallel" if depth == 0 and big else "serial")]
        reads = [ctx.buf(v) for v in self.external] + [ctx.buf(h) for h in self.cache.values()]
        writes = [ctx.buf(m.outputs[0]) for m in self.members if m.outputs[0] in self.needed]
        ctx.kernel(nest, reads, writes, suffix="_fused")


def _lower_row_group(ctx: LowerCtx, members: Sequence[Node], needed: set[Value]) -> None:
    _RowKernel(ctx, members, needed).emit()


# --- contractions with elementwise epilogues ----------------------------------------------------

def epilogue_strides(out_shape: Sequence[int], domain: Sequence[int],
                     operand: Sequence[int]) -> tuple[int, ...] | None:
    """Strides over a contraction's result axes (batch..., rows, columns) of an operand
    that an epilogue over `domain` (the result's elements under another shape, after a
    view) reads at broadcast positions; None when that is not linear in the result's
    coordinates (a result axis spans domain axes the operand does not nest over)."""
    st = broadcast_strides(operand, domain)
    axes = [a for a in range(len(domain)) if domain[a] != 1]
    out: list[int] = []
    for d in out_shape:
        if d == 1:
            out.append(0)
            continue
        seg, size = [], 1
        while axes and size < d:
            seg.append(axes.pop(0))
            size *= domain[seg[-1]]
        if size != d or any(st[a] != st[b] * domain[b] for a, b in zip(seg, seg[1:])):
            return None
        out.append(st[seg[-1]])
    return tuple(out) if not axes else None


def gemm_result_shape(node: Node) -> tuple[int, ...]:
    """A contraction's result shape as (batch..., rows, columns) of its GEMMs."""
    hook = get_op(node.op).gemm_shape
    return tuple(hook(node)) if hook is not None else tuple(node.outputs[0].shape)


def gemm_epilogue_member(contraction: Node, value: Value, node: Node) -> bool:
    """Whether `node` can extend the epilogue of `contraction` whose chain's last value is
    `value`: a view of it (the same elements in the same order, before or after elementwise
    members), or an elementwise op over its shape and dtype whose other operands the
    epilogue can index."""
    out = node.outputs[0]
    if len(node.outputs) != 1 or out.dtype != value.dtype or value not in node.inputs:
        return False
    if get_op(node.op).view:
        return node.inputs[0] is value and out.type.size == value.type.size
    if not is_elementwise(node) or out.shape != value.shape:
        return False
    o = gemm_result_shape(contraction)
    return all(epilogue_strides(o, out.shape, v.shape) is not None for v in node.inputs)


def _lower_gemm_group(ctx: LowerCtx, members: Sequence[Node], needed: set[Value]) -> None:
    """A contraction, optionally a view of its result, then elementwise members: one GEMM
    whose epilogue computes the last member from each accumulated element. Only the last
    member's value leaves the group; it is written where the contraction's result would
    be."""
    head, *rest = members
    result = members[-1].outputs[0]
    for m in members[:-1]:
        if m.outputs[0] in needed:
            raise FusionGroupError(f"fusion group {m.group}: {m.op}'s result is read outside the "
                                   "group, but only the last member of a contraction's epilogue "
                                   "is stored", node=m)
    value = head.outputs[0]
    for m in rest:
        if not gemm_epilogue_member(head, value, m):
            raise FusionGroupError(f"fusion group {m.group}: {m.op} -> {m.outputs[0].type} cannot "
                                   f"extend the epilogue of {head.op}", node=m)
        value = m.outputs[0]
    out_shape = gemm_result_shape(head)
    has_epilogue = any(not get_op(m.op).view for m in rest)
    acc = LocalRef("acc", head.outputs[0].dtype)
    rows, cols = GEMM_ROW, GEMM_COL

    def epilogue(batch: list[Expr]) -> Expr:
        coords = list(batch) + [rows, cols]
        # Every chain value is one element of the result in the same linear order, so a
        # view passes its operand's expression on unchanged, wherever it sits in the chain.
        env: dict[Value, Expr] = {head.outputs[0]: acc}
        for m in rest:
            if get_op(m.op).view:
                env[m.outputs[0]] = env[m.inputs[0]]
                continue
            ins = []
            for v in m.inputs:
                if v in env:
                    ins.append(env[v])
                else:
                    st = epilogue_strides(out_shape, m.outputs[0].shape, v.shape)
                    ins.append(Load(ctx.buf(v), linear_index(coords, st), v.dtype))
            env[m.outputs[0]] = _member_expr(m, ins)
        return env[result]
    get_op(head.op).lower_epilogue(ctx, head, out=result,
                                   epilogue=epilogue if has_epilogue else None)
