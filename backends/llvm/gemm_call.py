"""`Gemm` statements of a kernel function: a call of the generated library (on this thread,
on the whole team, or per batch matrix in a parallel loop) with its epilogue outlined
into a per-tile callback, or the kernel-IR loop nest (codegen.py, "GEMM"). A mixin of
function._FuncGen."""
from __future__ import annotations

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import i64
from .analysis import _walk_expr
from .gemm_loops import gemm_loops
from .gemm_plan import WORKSPACE, _gemm_lib, _gemm_target, gemm_lds, uses_gemm_library
from .irtypes import I8, I32, I64, PTR, VOID, _compute_dtype, _opaque_alloca, mtype
from .nodes import _GemmCall, _GemmEpilogue


class GemmEmitter:
    """GEMM statements (state in function._FuncGen)."""

    # .. GEMM ..
    def emit_gemm(self, g: K.Gemm, top: bool) -> None:
        for n in (g.a, g.b, g.c):
            if n not in self.bufs:
                raise self.error(f"gemm uses unknown buffer {n!r}")
        if min(g.m, g.n, g.batch) <= 0:
            return
        tag = self.mg.fresh("")
        parallel = top and self.mg.opt.parallel
        if not uses_gemm_library(g, self.mg.dtypes):
            self.emit_body(gemm_loops(g, parallel, tag), top=top)
            return
        work = 2 * g.batch * g.m * g.n * g.k
        threaded = parallel and work >= self.mg.opt.parallel_min_work
        if g.batch == 1 and threaded:
            self.emit_gemm_team(g)
        elif g.batch == 1:
            self.emit_gemm_call(_GemmCall(g, None))
        else:
            vb = K.Var(f"_gb{tag}")
            loop = K.For(vb, g.batch, [_GemmCall(g, vb)], "parallel" if threaded else "serial")
            self.emit_body([loop], top=top)

    def gemm_epilogue_callback(self, g: K.Gemm) -> tuple[ir.Value, ir.Value]:
        """(function, context) arguments of graphc_gemm for g's epilogue (nulls without
        one): an internal function that applies the epilogue to a finished tile of C, and a
        stack struct of the buffers, enclosing loop variables and locals it reads."""
        mg = self.mg
        null = ir.Constant(PTR, None)
        if g.epilogue is None:
            return null, null
        bufs: list[str] = []
        loop_vars: list[str] = []
        locs: list[str] = []
        for x in _walk_expr(g.epilogue):
            if isinstance(x, K.Load) and x.buffer not in bufs:
                bufs.append(x.buffer)
            elif isinstance(x, K.Var) and x.name not in ("i", "j") and x.name not in loop_vars:
                loop_vars.append(x.name)
            elif isinstance(x, K.LocalRef) and x.name != "acc" and x.name not in locs:
                locs.append(x.name)
        for n in bufs:
            if n not in self.bufs:
                raise self.error(f"gemm epilogue reads unknown buffer {n!r}")
        for n in loop_vars:
            if n not in self.vars:
                raise self.error(f"gemm epilogue uses loop variable {n!r} outside its loop")
        vals = [self.bufs[n] for n in bufs] + [self.vars[n] for n in loop_vars] + \
            [self.local_value(n) for n in locs]
        st_t = ir.LiteralStructType([v.type for v in vals] or [I8])
        data = _opaque_alloca(self.alloca_builder, st_t, "epi.data")
        for i, v in enumerate(vals):
            self.b.store(v, self.b.gep(data, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                                       source_etype=st_t))
        fn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR, I64, I64, I64, I64, PTR, I64]),
                         name=mg.fresh(self.fn.name + ".epi"))
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        ctx, row, col, rows, cols, ctile, ldc = fn.args
        # C never overlaps what the epilogue reads (its operands are live inputs of the
        # kernel, and GEMM kernels never run in place): no runtime overlap checks
        ctile.add_attribute("noalias")
        dc = mg.dtypes[g.c]
        tile = f"<gemm tile {dc.name}>"  # pseudo-buffer: the tile handed to the epilogue
        mg.dtypes[tile] = dc
        sub = type(self)(mg, fn, {tile: ctile}, self.kernel)
        fields = [sub.b.load(sub.b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                                       source_etype=st_t), typ=v.type) for i, v in enumerate(vals)]
        sub.bufs.update(zip(bufs, fields))
        sub.vars.update(zip(loop_vars, fields[len(bufs):]))
        for n, v in zip(locs, fields[len(bufs) + len(loop_vars):]):
            sub.captured[n] = v
            sub.captured_dtypes[n] = self.local_dtype(n)
        sub.vars.update({"_ep_row": row, "_ep_col": col, "_ep_ldc": ldc})
        vi, vj = K.Var("_ep_i"), K.Var("_ep_j")
        idx = K.Binary("add", K.Binary("mul", K.Binary("sub", vi, K.Var("_ep_row"), i64), K.Var("_ep_ldc"), i64),
                       K.Binary("sub", vj, K.Var("_ep_col"), i64), i64)
        acc = K.LocalRef("_ep_acc", _compute_dtype(dc))
        body = [K.Declare(acc, K.Load(tile, idx, dc)), K.Store(tile, idx, _GemmEpilogue(g.epilogue, acc, vi, vj))]
        row_end = sub.b.add(row, rows)

        def tile(width: ir.Value) -> None:
            col_end = sub.b.add(col, width)
            sub.loop(vi.name, row, row_end, "serial",
                     lambda: sub.loop(vj.name, col, col_end, "vectorize", lambda: sub.emit_body(body),
                                      nonempty=False), nonempty=False)
        # Nearly every tile is NR columns wide: a constant trip count vectorises fully.
        nr = ir.Constant(I64, _gemm_target().blocking(dc.name).nr)
        with sub.b.if_else(sub.b.icmp_signed("==", cols, nr), likely=True) as (full, edge):
            with full:
                tile(nr)
            with edge:
                tile(cols)
        sub.finish()
        return fn, data

    def gemm_args(self, g: K.Gemm, vb, b: ir.IRBuilder | None = None) -> list:
        """Pointer and size arguments of graphc_gemm for one matrix (up to the workspace)."""
        b = b or self.b
        lda, ldb, ldc = gemm_lds(g)
        dtv = self.mg.dtypes[g.c]
        et = mtype(dtv)

        def ptr(buf, off, stride):
            idx = self.index(off) if not isinstance(off, int) else ir.Constant(I64, off)
            if stride and vb is not None:
                idx = b.add(idx, b.mul(self.vars[vb.name], ir.Constant(I64, stride)))
            return b.gep(self.bufs[buf], [idx], inbounds=True, source_etype=et)

        c64 = lambda v: ir.Constant(I64, v)  # noqa: E731
        c32 = lambda v: ir.Constant(I32, int(v))  # noqa: E731
        return [c64(g.m), c64(g.n), c64(g.k),
                ptr(g.a, g.offset_a, g.stride_a), c64(lda), c32(g.trans_a),
                ptr(g.b, g.offset_b, g.stride_b), c64(ldb), c32(2 if g.b_panels else g.trans_b),
                ptr(g.c, g.offset_c, g.stride_c), c64(ldc), c32(g.accumulate)]

    def emit_gemm_call(self, st: _GemmCall) -> None:
        """One matrix on this thread: its own workspace region (omp_get_thread_num() is 0
        outside a parallel region, and a part's index, below max_threads, when a batch
        split runs this program inside its own team: backends/llvm/split.py)."""
        g = st.g
        mg = self.mg
        lib = _gemm_lib()
        dt = mg.dtypes[g.c]
        fn = mg.gemm_function(dt)
        per = lib.workspace_elements(g.m, g.n, g.k, 1, _gemm_target(), dt.name)
        b = self.b
        tid = b.sext(b.call(mg.intrinsic("omp_get_thread_num", I32, []), []), I64)
        ws = b.gep(self.bufs[WORKSPACE], [b.mul(tid, ir.Constant(I64, per))], inbounds=True,
                   source_etype=mtype(dt))
        epi = list(self.gemm_epilogue_callback(g))
        b.call(fn, self.gemm_args(g, st.vb) + [ws, ir.Constant(I64, 0), ir.Constant(I64, 1)] + epi)

    def emit_gemm_team(self, g: K.Gemm) -> None:
        """One large matrix split across the team by the library (each thread its share)."""
        mg = self.mg
        dt = mg.dtypes[g.c]
        fn = mg.gemm_function(dt)
        args = self.gemm_args(g, None) + [self.bufs[WORKSPACE]]
        epi = list(self.gemm_epilogue_callback(g))
        self.parallel_region(mg.fresh(self.fn.name + ".gemm"), args + epi,
                             lambda bb: bb.call(fn, args + [ir.Constant(I64, 0), ir.Constant(I64, 1)] + epi),
                             lambda ob, vals, tid, nt: ob.call(fn, list(vals[:-2]) + [tid, nt] + list(vals[-2:])))
