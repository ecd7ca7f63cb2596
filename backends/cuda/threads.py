"""One thread per iteration: a phase's independent loops spread over the grid (one launch,
or several independent nests laid end to end in one), and straight-line bodies of 4-byte
elements with `float4`/`int4` loads and stores (codegen.py, "Loops -> grid"). A mixin of
codegen._ModuleWriter."""
from __future__ import annotations

from math import prod

from ...ir import kernel as K
from . import analysis as A
from .cexpr import ExprWriter, sanitize
from .module import VEC, _declare_locals, _decompose, _Plan


class ThreadRenderer:
    """Thread-per-iteration phases (state in codegen._ModuleWriter)."""

    # .. one thread per iteration ..
    def render_threads(self, k: K.Kernel, fname: str, plan: _Plan) -> None:
        stmts = plan.nest[:1] if plan.nest else plan.body
        used, written = self.buffers_of(stmts)
        w = self.writer(k, used, A.loop_extents(stmts))
        total = prod(l.extent for l in plan.parallel)
        lines: list[str] = []
        decls = _declare_locals(w, stmts)
        vector = self.vectorizable(plan)
        if vector:
            block, ix = self.opt.block, w.idx
            last = plan.parallel[-1]
            quads = [*plan.parallel[:-1], K.For(K.Var(last.var.name + "_q"), last.extent // VEC, [])]
            lines.append(f"  for ({ix} t = ({ix})blockIdx.x * blockDim.x + threadIdx.x; t < {total // VEC}; "
                         f"t += ({ix})gridDim.x * blockDim.x) {{")
            lines += _decompose(w, "t", quads, "    ")
            lines += self.vector_body(w, plan.body, last.var.name, vector, "    ")
            lines.append("  }")
            grid = self.grid_for(total // VEC, block)
            self.emit(k, fname, used, grid, block, decls + "\n".join(lines) + "\n", written)
            return
        if plan.parallel:
            block = self.opt.block if total > 32 else 32
            ix = w.idx
            lines.append(f"  for ({ix} t = ({ix})blockIdx.x * blockDim.x + threadIdx.x; t < {total}; "
                         f"t += ({ix})gridDim.x * blockDim.x) {{")
            lines += _decompose(w, "t", plan.parallel, "    ")
            inner = "    "
            grid = self.grid_for(total, block)
        else:
            block, grid, inner = 1, 1, "  "
            lines.append("  {")
        body = self.serial_loops(w, plan, inner, lambda ind: self.stmts(w, plan.body, ind))
        lines += body
        lines.append("  }")
        self.emit(k, fname, used, grid, block, decls + "\n".join(lines) + "\n", written)

    def render_merged(self, k: K.Kernel, fname: str, plans: list[_Plan]) -> None:
        """Phases that touch disjoint bytes (analysis.independent_nests; e.g. the nine
        nests of a 3x3 im2col) as one launch: their index spaces laid end to end."""
        stmts = [p.nest[0] for p in plans]
        used, written = self.buffers_of(stmts)
        w = self.writer(k, used, A.loop_extents(stmts))
        decls = _declare_locals(w, stmts)
        totals = [prod(l.extent for l in p.parallel) for p in plans]
        ix = w.idx
        lines = [f"  for ({ix} t = ({ix})blockIdx.x * blockDim.x + threadIdx.x; t < {sum(totals)}; "
                 f"t += ({ix})gridDim.x * blockDim.x) {{"]
        start = 0
        for n, (p, total) in enumerate(zip(plans, totals)):
            cond = f"if (t < {start + total})" if n < len(plans) - 1 else ""
            lines.append(f"    {'} else ' if n else ''}{cond} {{" if cond or n else "    {")
            lines.append(f"      const {ix} u{n} = t - {start};")
            lines += _decompose(w, f"u{n}", p.parallel, "      ")
            lines += self.serial_loops(w, p, "      ", lambda ind, p=p: self.stmts(w, p.body, ind))
            start += total
        lines += ["    }", "  }"]
        grid = self.grid_for(sum(totals), self.opt.block)
        self.emit(k, fname, used, grid, self.opt.block, decls + "\n".join(lines) + "\n", written)

    # .. vectorised elementwise bodies ..
    def vectorizable(self, plan: _Plan) -> dict[str, str] | None:
        """{buffer: vector type} when each thread can take VEC consecutive iterations of
        the innermost parallel loop with 16-byte loads and stores: a straight-line body,
        4-byte elements, every access either contiguous in that loop (coefficient 1, all
        other terms and the storage offset multiples of VEC elements, so every vector is
        16-byte aligned; the runtime guarantees 16-byte aligned buffer bases) or
        independent of it, and no load of what the body has already stored."""
        if not plan.parallel or plan.serial or not self.opt.vectorize:
            return None
        last = plan.parallel[-1]
        if last.extent % VEC or prod(l.extent for l in plan.parallel) < 4 * self.opt.block:
            return None
        if any(not isinstance(s, (K.Declare, K.Assign, K.Store)) for s in plan.body):
            return None
        types: dict[str, str] = {}
        stored: list[A.Storage] = []
        v = last.var.name
        for s in plan.body:
            for e in A.stmt_exprs(s) if not isinstance(s, K.Store) else [s.value]:
                for ld in A.loads(e):
                    st = self.storage[ld.buffer]
                    if any(st.overlaps(o) for o in stored):
                        return None
                    if not self._vector_access(ld.buffer, ld.index, v, types):
                        return None
            if isinstance(s, K.Store):
                if s.buffer == self.p.status or not self._vector_access(s.buffer, s.index, v, types):
                    return None
                stored.append(self.storage[s.buffer])
        return types if any(t for t in types.values()) else None

    def _vector_access(self, buffer: str, index: K.Expr, v: str, types: dict[str, str]) -> bool:
        f = A.affine(index)
        if f is None:
            return False
        c = f.get(v, 0)
        if c == 0:
            return True
        dt = self.dtypes[buffer]
        if c != 1 or dt.name not in ("f32", "i32") or self.storage[buffer].offset % (4 * VEC):
            return False
        if any(coef % VEC for k, coef in f.items() if k != v):
            return False
        types[buffer] = "float4" if dt.name == "f32" else "int4"
        return True

    def vector_body(self, w: ExprWriter, body: list[K.Stmt], v: str, types: dict[str, str],
                    ind: str) -> list[str]:
        """The body VEC times (lane by lane) between vector loads and vector stores."""
        base = f"v_{sanitize(v)}"
        quad = w.vars[v + "_q"]
        out = [f"{ind}const {w.idx} {base} = {quad} * {VEC};"]
        w.vars[v] = base
        loads: dict[tuple[str, str], str] = {}
        for s in body:
            for e in A.stmt_exprs(s) if not isinstance(s, K.Store) else [s.value]:
                for ld in A.loads(e):
                    key = (ld.buffer, str(ld.index))
                    if ld.buffer in types and A.affine(ld.index).get(v, 0) and key not in loads:
                        name = f"vec{len(loads)}"
                        loads[key] = name
                        t = types[ld.buffer]
                        out.append(f"{ind}const {t} {name} = *reinterpret_cast<const {t}*>"
                                   f"(&{w.buffers[ld.buffer]}[{w.index(ld.index)}]);")
        stores: list[tuple[K.Store, str]] = []
        for s in body:
            if isinstance(s, K.Store) and A.affine(s.index).get(v, 0):
                name = f"out{len(stores)}"
                stores.append((s, name))
                out.append(f"{ind}{types[s.buffer]} {name};")
        w.vector_loads = loads
        for lane in range(VEC):
            w.lane = lane
            w.vars[v] = f"({base} + {lane})"
            for s in body:
                vec = next((n for st, n in stores if st is s), None)
                if vec is None:
                    out += self.stmts(w, [s], ind)
                else:
                    dt = self.dtypes[s.buffer]
                    value = w.conv(w.expr(s.value), s.value.dtype, dt)
                    out.append(f"{ind}{vec}.{'xyzw'[lane]} = {value};")
        w.vector_loads, w.lane, w.vars[v] = {}, 0, base
        for s, name in stores:
            t = types[s.buffer]
            out.append(f"{ind}*reinterpret_cast<{t}*>(&{w.buffers[s.buffer]}[{w.index(s.index)}]) = {name};")
        return out
