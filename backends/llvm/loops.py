"""Statements and loop nests of a kernel function: canonical loops with their `llvm.loop`
metadata, stores, locals, and `parallel` loops outlined into an OpenMP region
(codegen.py, "Loops" and "Parallel loops"). A mixin of function._FuncGen."""
from __future__ import annotations

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType
from . import omp
from .analysis import (MIN_FORCED_VECTOR_TRIPS, _local_refs, _stmt_exprs, _vectorizable, _walk_stmts,
                       buffers_used, estimate_work)
from .gemm_loops import _GemmLoops
from .irtypes import F16, I8, I32, I64, PTR, VOID, _opaque_alloca, _sanitize, ctype, mtype
from .nodes import _GemmCall


class LoopEmitter:
    """Statements, loops and parallel regions (state in function._FuncGen)."""

    # .. statements ..
    def emit_body(self, stmts, top: bool = False) -> None:
        for s in stmts:
            self._memo = {}
            if isinstance(s, K.For):
                if top and s.mark == "parallel" and self.mg.opt.parallel and s.extent > 1:
                    self.emit_parallel(s)
                else:
                    self.emit_for(s)
            elif isinstance(s, K.Store):
                self.emit_store(s)
            elif isinstance(s, K.Declare):
                self.emit_declare(s)
            elif isinstance(s, K.Assign):
                self.emit_assign(s)
            elif isinstance(s, K.Gemm):
                self.emit_gemm(s, top)
            elif isinstance(s, _GemmCall):
                self.emit_gemm_call(s)
            elif isinstance(s, _GemmLoops):
                self.emit_body(s.build(self.mg.dtypes), top=top)
            else:
                raise self.error(f"unknown statement {type(s).__name__}")

    def emit_for(self, s: K.For) -> None:
        if s.extent <= 0:
            return
        mark = s.mark
        if mark == "vectorize" and (s.extent < MIN_FORCED_VECTOR_TRIPS or not _vectorizable(s.body)):
            mark = "serial"  # forcing it would only make LLVM print a warning
        self.loop(s.var.name, ir.Constant(I64, 0), ir.Constant(I64, s.extent), mark,
                  lambda: self.emit_body(s.body), nonempty=True)

    def loop(self, var: str, lo: ir.Value, hi: ir.Value, mark: str, body, nonempty: bool) -> None:
        b = self.b
        pre = b.block
        header = self.fn.append_basic_block(f"{_sanitize(var)}.loop")
        exit_ = self.fn.append_basic_block(f"{_sanitize(var)}.end")
        if nonempty:
            b.branch(header)
        else:
            b.cbranch(b.icmp_signed("<", lo, hi), header, exit_)
        b.position_at_end(header)
        phi = b.phi(I64, name=_sanitize(var))
        phi.add_incoming(lo, pre)
        saved = self.vars.get(var)
        self.vars[var] = phi
        self.in_loop += 1
        if mark == "reduce":
            self.reduce_depth += 1
        body()
        if mark == "reduce":
            self.reduce_depth -= 1
        self.in_loop -= 1
        if saved is None:
            self.vars.pop(var, None)
        else:
            self.vars[var] = saved
        nxt = b.add(phi, ir.Constant(I64, 1), name=f"{_sanitize(var)}.next", flags=("nuw", "nsw"))
        phi.add_incoming(nxt, b.block)
        br = b.cbranch(b.icmp_signed("<", nxt, hi), header, exit_)
        br.set_metadata("llvm.loop", self.mg.loop_id(mark))
        b.position_at_end(exit_)
        self._memo = {}

    def emit_store(self, s: K.Store) -> None:
        if s.buffer not in self.bufs:
            raise self.error(f"store to unknown buffer {s.buffer!r}")
        dt = self.mg.dtypes[s.buffer]
        idx = self.index(s.index)
        val = self.expr(s.value)
        val = self.convert(val, s.value.dtype, dt)
        self.store_mem(val, dt, s.buffer, idx)

    def store_mem(self, val: ir.Value, dt: DType, buffer: str, idx: ir.Value) -> None:
        b = self.b
        if dt.name == "f16":
            val = b.fptrunc(val, F16)
        elif dt.is_bool:
            val = b.zext(val, I8)
        ptr = b.gep(self.bufs[buffer], [idx], inbounds=True, source_etype=mtype(dt))
        b.store(val, ptr, align=dt.itemsize)

    def emit_declare(self, s: K.Declare) -> None:
        dt = s.local.dtype
        slot = self.alloca_builder.alloca(ctype(dt), name=_sanitize(s.local.name))
        val = self.convert(self.expr(s.init), s.init.dtype, dt)
        self.b.store(val, slot)
        self.locals[s.local.name] = (slot, dt)
        self.captured.pop(s.local.name, None)

    def emit_assign(self, s: K.Assign) -> None:
        name = s.local.name
        if name not in self.locals:
            if name in self.captured:
                raise self.error(f"local ${name} is declared outside a parallel loop and assigned "
                                 "inside it (a data race); declare it inside the loop")
            raise self.error(f"assignment to undeclared local ${name}")
        slot, dt = self.locals[name]
        self.fm = ("reassoc", "contract") if self.reduce_depth else ()
        try:
            val = self.convert(self.expr(s.value), s.value.dtype, dt)
        finally:
            self.fm = ()
        self.b.store(val, slot)

    # .. parallel loops ..
    def emit_parallel(self, s: K.For) -> None:
        mg = self.mg
        used, written = buffers_used(s.body)
        # locals read inside but declared outside: captured by value
        declared_inside = {x.local.name for x in _walk_stmts(s.body) if isinstance(x, K.Declare)}
        reads: dict[str, DType] = {}
        for st in _walk_stmts(s.body):
            if isinstance(st, K.Assign) and st.local.name not in declared_inside:
                raise self.error(f"local ${st.local.name} is declared outside a parallel loop and "
                                 "assigned inside it (a data race); declare it inside the loop")
            for e in _stmt_exprs(st):
                for x in _local_refs(e):
                    if x.name not in declared_inside:
                        if x.name not in self.locals and x.name not in self.captured:
                            raise self.error(f"use of undeclared local ${x.name}")
                        reads[x.name] = x.dtype
        cap_names = list(reads)
        cap_types = [ctype(self.local_dtype(n)) for n in cap_names]
        stem = self.fn.name + ".par"
        cname = mg.fresh(stem)
        # chunk function
        cfn = ir.Function(mg.module, ir.FunctionType(VOID, [PTR] * len(used) + cap_types + [I64, I64]),
                          name=cname)
        cfn.linkage = "internal"
        cfn.attributes.add("nounwind")
        cfn.attributes.add("noinline")  # called from the serial path and the OpenMP body
        for arg, name in zip(cfn.args, used):
            arg.name = _sanitize(name)
            mg.param_attrs(arg, name, used, written)
        sub = type(self)(mg, cfn, dict(zip(used, cfn.args[:len(used)])), self.kernel)
        for n, a in zip(cap_names, cfn.args[len(used):len(used) + len(cap_names)]):
            a.name = _sanitize(n)
            sub.captured[n] = a
            sub.captured_dtypes[n] = self.local_dtype(n)
        lo, hi = cfn.args[-2], cfn.args[-1]
        sub.loop(s.var.name, lo, hi, "serial", lambda: sub.emit_body(s.body), nonempty=False)
        sub.finish()
        # values to pass
        vals = [self.bufs[n] for n in used] + [self.local_value(n) for n in cap_names]
        b = self.b
        work = estimate_work([s])
        from .engine import gomp_available
        if work < mg.opt.parallel_min_work or not gomp_available():
            b.call(cfn, vals + [ir.Constant(I64, 0), ir.Constant(I64, s.extent)])
            return
        ext = ir.Constant(I64, s.extent)

        def body(ob, fields, tid, nt):  # this thread's static chunk
            chunk = ob.sdiv(ob.add(ext, ob.sub(nt, ir.Constant(I64, 1))), nt)
            if s.extent > 64:
                rounded = ob.and_(ob.add(chunk, ir.Constant(I64, 15)), ir.Constant(I64, -16))
                chunk = ob.select(ob.icmp_signed(">", chunk, ir.Constant(I64, 64)), rounded, chunk)
            lo_v = ob.mul(tid, chunk)
            lo_v = ob.select(ob.icmp_signed("<", lo_v, ext), lo_v, ext)
            hi_v = ob.add(lo_v, chunk)
            hi_v = ob.select(ob.icmp_signed("<", hi_v, ext), hi_v, ext)
            ob.call(cfn, fields + [lo_v, hi_v])

        self.parallel_region(cname + ".omp", vals,
                             lambda bb: bb.call(cfn, vals + [ir.Constant(I64, 0), ext]), body)

    def parallel_region(self, name: str, vals: list, serial, body) -> None:
        """`serial(builder)` when num_threads == 1, else GOMP_parallel of an outlined
        `void name(ptr data)` that unpacks `vals` from a stack struct and runs
        `body(builder, values, thread_id, num_threads)` (i64 ids) on every thread."""
        mg = self.mg
        b = self.b
        ofn = omp.outline(mg.module, name, [v.type for v in vals], body, mg.intrinsic)
        # the call site
        ntv = b.load(mg.nthreads_gv, typ=I32)
        serial_bb = self.fn.append_basic_block("par.serial")
        par_bb = self.fn.append_basic_block("par.fork")
        done_bb = self.fn.append_basic_block("par.done")
        b.cbranch(b.icmp_signed("==", ntv, ir.Constant(I32, 1)), serial_bb, par_bb)
        b.position_at_end(serial_bb)
        serial(b)
        b.branch(done_bb)
        b.position_at_end(par_bb)
        data = _opaque_alloca(self.alloca_builder, ir.LiteralStructType([v.type for v in vals]), "par.data")
        omp.fork(b, data, ofn, vals, ntv, mg.intrinsic)
        b.branch(done_bb)
        b.position_at_end(done_bb)

    def local_dtype(self, name: str) -> DType:
        if name in self.locals:
            return self.locals[name][1]
        return self.captured_dtypes[name]

    def local_value(self, name: str) -> ir.Value:
        if name in self.locals:
            slot, dt = self.locals[name]
            return self.b.load(slot, typ=ctype(dt))
        return self.captured[name]
