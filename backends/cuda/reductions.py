"""Reductions on the GPU: a group of threads per output folding in registers, warp shuffles
and shared memory, and reductions the lowering wrote into memory (column sums) folded by
blocks of warps (codegen.py, "Reductions -> groups of threads"). A mixin of
codegen._ModuleWriter."""
from __future__ import annotations

from math import prod

from ...ir import kernel as K
from . import analysis as A
from .cexpr import reg_type
from .module import _declare_locals, _decompose, _Plan


class ReductionRenderer:
    """Grouped and memory reductions (state in codegen._ModuleWriter)."""

    # .. reductions into memory: out[i] = out[i] op x[r, i] over serial loops r ..
    def memory_reduction(self, plan: _Plan) -> tuple[K.Store, str, K.Expr, int] | None:
        """(store, op, x, L) when the body left for each thread folds its serial loops into
        one memory location, `out[f] = out[f] op x` with f free of those loops and x not
        reading `out` (a column sum after loop interchange: the bias gradient). Then a
        block of 32 x L threads takes 32 neighbouring outputs (coalesced loads), its L
        warps split the serial iterations, fold in registers and combine through shared
        memory (add reassociates, as in `reduce` loops; max and min are exact)."""
        if not plan.serial or len(plan.body) != 1 or not isinstance(plan.body[0], K.Store):
            return None
        s = plan.body[0]
        v = s.value
        if not (isinstance(v, K.Binary) and v.op in A.COMBINE_OPS and isinstance(v.a, K.Load)
                and v.a.buffer == s.buffer and v.a.index == s.index and v.dtype == self.dtypes[s.buffer]
                and not v.dtype.is_bool and s.buffer != self.p.status):
            return None
        serial = {l.var.name for l in plan.serial}
        index_vars = {x.name for x in K.walk_exprs(s.index) if isinstance(x, K.Var)}
        if index_vars & serial:
            return None
        out = self.storage[s.buffer]
        if any(self.storage[ld.buffer].overlaps(out) for ld in A.loads(v.b)):
            return None
        count = prod(l.extent for l in plan.serial)
        if count < self.opt.group_reduce_min:
            return None
        lanes = 1
        while lanes < 32 and lanes * 16 < count:
            lanes *= 2
        return s, v.op, v.b, lanes

    def render_memory_reduction(self, k: K.Kernel, fname: str, plan: _Plan, s: K.Store, op: str,
                                x: K.Expr, lanes: int) -> None:
        from ...ir.lowering import reduce_init
        stmts = plan.nest[:1]
        used, written = self.buffers_of(stmts)
        w = self.writer(k, used, A.loop_extents(stmts))
        dt = self.dtypes[s.buffer]
        t = reg_type(dt)
        block, ix = 32 * lanes, w.idx
        rows = prod(l.extent for l in plan.parallel) if plan.parallel else 1
        count = prod(l.extent for l in plan.serial)
        kind = {"add": "Add", "max": "Max", "min": "Min"}[op] + ("F" if dt.is_float and op != "add" else
                                                                 "I" if not dt.is_float else "")
        lines = [f"  __shared__ double gc_red[{block}];",
                 "  const int col = threadIdx.x % 32;",
                 "  const int lane = threadIdx.x / 32;",
                 f"  for ({ix} base = ({ix})blockIdx.x * 32; base < {rows}; base += ({ix})gridDim.x * 32) {{",
                 f"    {ix} row = base + col;",
                 f"    const bool active = row < {rows};",
                 f"    if (!active) row = {rows - 1};  // idle columns redo the last one, storing nothing"]
        lines += _decompose(w, "row", plan.parallel, "    ")
        lines.append(f"    {t} acc = {w.expr(reduce_init(op if op != 'add' else 'sum', dt))};")
        lines.append(f"    for ({ix} r = lane; r < {count}; r += {lanes}) {{")
        lines += _decompose(w, "r", plan.serial, "      ")
        lines.append(f"      acc = {w.binary(op, 'acc', w.conv(w.expr(x), x.dtype, dt), dt)};")
        lines.append("    }")
        lines.append(f"    acc = gc_column_reduce<Gc{kind}, {lanes}, {t}>(acc, ({t}*)gc_red);")
        w.locals["acc"] = ("acc", dt)
        combined = K.Binary(op, K.Load(s.buffer, s.index, dt), K.LocalRef("acc", dt), dt)
        lines.append(f"    if (active && lane == 0) {w.store(s.buffer, s.index, combined)}")
        lines.append("  }")
        self.emit(k, fname, used, self.grid_for(rows, 32), block, "\n".join(lines) + "\n", written)

    # .. a group of threads per output, for reductions ..
    def group_size(self, plan: _Plan) -> int:
        """G > 0 when the thread body reduces in groups of G threads (see the docstring)."""
        body = plan.body
        declared = {s.local.name for s in body if isinstance(s, K.Declare)}
        reductions = []
        for s in body:
            r = A.as_reduction(s, declared)
            if r is not None:
                reductions.append(r)
            elif not isinstance(s, (K.Declare, K.Assign, K.Store)):
                return 0
        if not reductions:
            return 0
        count = max(r.count for r in reductions)
        rows = prod(l.extent for l in plan.parallel)
        if count < self.opt.group_reduce_min and rows > 1:
            return 0
        stmts = plan.nest[:1] if plan.nest else body
        acc = [a for a in A.accesses(stmts) if a.buffer != self.p.status]
        stored = [self.storage[a.buffer] for a in acc if a.store]
        if any(not a.store and any(self.storage[a.buffer].overlaps(st) for st in stored) for a in acc):
            return 0
        outer = [l.var.name for l in plan.nest]
        for r in reductions:
            dep = self.dependence([r.loops[0]], r.accumulators, fixed=outer)
            if not all(dep.independent(l.var.name) for l in r.loops if l.extent > 1):
                return 0
        g = 32
        limit = 1024 if rows <= 1 else 256
        while g < limit and g * 4 < count:
            g *= 2
        return g

    def render_grouped(self, k: K.Kernel, fname: str, plan: _Plan, g: int) -> None:
        stmts = plan.nest[:1] if plan.nest else plan.body
        used, written = self.buffers_of(stmts)
        w = self.writer(k, used, A.loop_extents(stmts))
        block = max(g, self.opt.block) if plan.parallel else g
        rpb = block // g
        rows = prod(l.extent for l in plan.parallel)
        ix = w.idx
        declared = {s.local.name for s in plan.body if isinstance(s, K.Declare)}
        lines = [f"  __shared__ double gc_red[{block // 32}];",
                 f"  const int lane = threadIdx.x % {g};",
                 f"  const int grp = threadIdx.x / {g};"]
        decls = _declare_locals(w, stmts)
        lines.append(f"  for ({ix} base = ({ix})blockIdx.x * {rpb}; base < {rows}; "
                     f"base += ({ix})gridDim.x * {rpb}) {{")
        lines.append(f"    {ix} row = base + grp;")
        lines.append(f"    const bool active = row < {rows};")
        lines.append(f"    if (!active) row = {rows - 1};  // idle groups redo the last row, storing nothing")
        lines += _decompose(w, "row", plan.parallel, "    ")

        def body(ind: str) -> list[str]:
            out: list[str] = []
            for s in plan.body:
                r = A.as_reduction(s, declared)
                if r is None:
                    out += self.stmts(w, [s], ind, lane_guard="active && lane == 0")
                    continue
                out.append(f"{ind}for ({ix} r = lane; r < {r.count}; r += {g}) {{")
                out += _decompose(w, "r", r.loops, ind + "  ")
                out += self.stmts(w, r.body, ind + "  ", guard="active")
                out.append(f"{ind}}}")
                for name, op in r.accumulators.items():
                    cname, dt = w.locals[name]
                    kind = {"add": "Add", "max": "Max", "min": "Min"}[op]
                    kind = kind + ("F" if dt.is_float and op != "add" else "I" if not dt.is_float else "")
                    t = reg_type(dt)
                    out.append(f"{ind}{cname} = gc_group_reduce<Gc{kind}, {g}, {t}>({cname}, ({t}*)gc_red);")
            return out

        lines += self.serial_loops(w, plan, "    ", body)
        lines.append("  }")
        grid = self.grid_for(rows, rpb)
        self.emit(k, fname, used, grid, block, decls + "\n".join(lines) + "\n", written)
