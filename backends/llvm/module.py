"""The module and its entry: one internal function per kernel, the entry and Python entry
that compute every buffer's address and call the kernels, the status and numerics checks
between them, the cycle counters (codegen.py, "Module layout" and "Buffers")."""
from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from ...ir import kernel as K
from ...ir.dtypes import DType
from ...ir.errors import KernelVerificationError
from ...ir.kernel_verify import verify_layout
from .analysis import buffers_used
from .function import _FuncGen
from .gemm_plan import (WORKSPACE, _gemm_lib, _gemm_target, gemm_function_type, gemm_workspace,
                        library_gemm_dtypes)
from .irtypes import I1, I8, I32, I64, PTR, VOID, CodegenError, _LoopID, _sanitize
from .options import CodegenOptions


@dataclass
class GeneratedModule:
    module: ir.Module
    entry: str                 # void entry(ptr args)
    py_entry: str | None       # void py_entry(ptr slots)
    num_threads_global: str    # i32 global
    external: list[str]        # ABI order of args
    arena_bytes: int           # bytes the runtime must provide at the arena base
    kernel_functions: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return str(self.module)


@dataclass(frozen=True)
class ABI:
    """What the runtime needs to call a generated module, computable without generating it
    (so that a cache hit skips code generation)."""
    entry: str
    py_entry: str | None
    num_threads_global: str
    external: list[str]
    arena_bytes: int
    gemm_dtypes: tuple[str, ...] = ()   # library GEMMs the module calls (external symbols)
    profile_global: str | None = None   # i64[len(kernels)] cycle counters (options.profile)


def abi(program: K.Program, options: CodegenOptions) -> ABI:
    prefix = _sanitize(program.name)
    ws_off, ws_bytes = gemm_workspace(program, options)
    arena = ws_off + ws_bytes if ws_bytes else program.arena_bytes
    return ABI(f"{prefix}_entry", f"{prefix}_pyentry" if options.py_data_offset else None,
               f"{prefix}_num_threads", program.external(), arena,
               () if options.gemm_in_module else library_gemm_dtypes(program),
               f"{prefix}_kernel_cycles" if options.profile else None)


class _ModuleGen:
    def __init__(self, program: K.Program, options: CodegenOptions) -> None:
        self.p = program
        self.opt = options
        self.prefix = _sanitize(program.name)
        self.module = ir.Module(name=self.prefix)
        self.decls: dict[str, ir.Function] = {}
        self.nthreads_gv = ir.GlobalVariable(self.module, I32, f"{self.prefix}_num_threads")
        self.nthreads_gv.initializer = ir.Constant(I32, 0)
        self.nthreads_gv.linkage = ""
        self._md_cache: dict[str, ir.values.MDValue] = {}
        self._counter = 0
        self.dtypes = {n: b.dtype for n, b in program.buffers.items()}
        self._check_program()
        self.storage = {n: self._storage(n, 0) for n in program.buffers}
        self.ws_offset, self.ws_bytes = gemm_workspace(program, options)
        self.storage[WORKSPACE] = ("<arena>", self.ws_offset)

    # .. program checks and buffer storage ..
    def _check_program(self) -> None:
        p = self.p
        for k in p.kernels:
            used, _ = buffers_used(k.body)
            for b in used:
                if b not in p.buffers and b != WORKSPACE:
                    raise CodegenError(f"kernel {k.name!r} uses unknown buffer {b!r}"
                                       + (f" (computes {k.source})" if k.source else ""))
        try:  # buffers, aliases and arena: the kernel-IR verifier's checks, not a copy
            verify_layout(p)
        except KernelVerificationError as e:
            raise CodegenError(e.message) from None

    def _storage(self, name: str, depth: int) -> tuple[str, int]:
        """(root, byte offset): root is an external buffer name or '<arena>'."""
        if depth > 64:
            raise CodegenError(f"alias cycle through buffer {name!r}")
        p = self.p
        if name in p.aliases:
            base, off = p.aliases[name]
            root, boff = self._storage(base, depth + 1)
            return root, boff + int(off) * p.buffers[base].dtype.itemsize
        b = p.buffers[name]
        if b.kind == "temp":
            return "<arena>", p.arena[name]
        return name, 0

    def byte_range(self, name: str) -> tuple[str, int, int]:
        root, off = self.storage[name]
        if name == WORKSPACE:
            return root, off, off + self.ws_bytes
        b = self.p.buffers[name]
        return root, off, off + b.size * b.dtype.itemsize

    # .. declarations ..
    def intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = self.decls.get(name)
        if fn is None:
            fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
        self.decls[name] = fn
        return fn

    def md(self, *ops) -> ir.values.MDValue:
        return self.module.add_metadata(list(ops))

    def loop_id(self, mark: str) -> ir.values.MDValue:
        ops = [self.md("llvm.loop.mustprogress")]
        if mark == "vectorize":
            ops.append(self.md("llvm.loop.vectorize.enable", ir.Constant(I1, 1)))
        elif mark == "unroll":
            ops.append(self.md("llvm.loop.unroll.enable"))
        return _LoopID(self.module, ops, name=str(len(self.module.metadata)))

    def gemm_function(self, dt: DType) -> ir.Function:
        lib = _gemm_lib()
        if self.opt.gemm_in_module:
            return lib.declare_gemm(self.module, dt.name, _gemm_target())
        return self.intrinsic(lib.gemm_name(dt.name), VOID, list(gemm_function_type().args))

    def fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}{self._counter}"

    # .. top level ..
    def generate(self) -> GeneratedModule:
        p = self.p
        ext = p.external()
        kfuncs = []
        kernels = []
        for idx, k in enumerate(p.kernels):
            used, written = buffers_used(k.body)
            fname = f"{self.prefix}.k{idx}_{_sanitize(k.name)}"
            fn = self.kernel_function(fname, used, written, k)
            kernels.append((fn, used, p.status is not None and p.status in written))
            kfuncs.append(fname)
        # entry
        entry_name = f"{self.prefix}_entry"
        entry = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=entry_name)
        entry.attributes.add("nounwind")
        entry.args[0].name = "args"
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        ptrs: dict[str, ir.Value] = {}
        for i, name in enumerate(ext):
            slot = b.gep(entry.args[0], [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
            ptrs[name] = b.load(slot, name=_sanitize(name), typ=PTR, align=8)
        slot = b.gep(entry.args[0], [ir.Constant(I64, len(ext))], inbounds=True, source_etype=PTR)
        arena = b.load(slot, name="arena", typ=PTR, align=8)

        def address(name: str) -> ir.Value:
            root, off = self.storage[name]  # includes WORKSPACE
            base = arena if root == "<arena>" else ptrs[root]
            if off == 0:
                return base
            return b.gep(base, [ir.Constant(I64, off)], inbounds=True, source_etype=I8)

        checks = self.numerics_plan()
        counters = None
        if self.opt.profile:
            arr_t = ir.ArrayType(I64, max(len(kernels), 1))
            counters = ir.GlobalVariable(self.module, arr_t, f"{self.prefix}_kernel_cycles")
            counters.initializer = ir.Constant(arr_t, None)
            counters.type = PTR  # opaque, so GEP with source_etype yields element pointers
            clock = self.intrinsic("llvm.readcyclecounter", I64, [])
        for k, (fn, used, reports) in enumerate(kernels):
            args = [address(n) for n in used]
            if counters is None:
                b.call(fn, args)
            else:
                t0 = b.call(clock, [])
                b.call(fn, args)
                t1 = b.call(clock, [])
                slot = b.gep(counters, [ir.Constant(I64, 0), ir.Constant(I64, k)], inbounds=True,
                             source_etype=arr_t)
                b.store(b.add(b.load(slot, typ=I64), b.sub(t1, t0)), slot)
            if reports:  # a failing call stops here (Program.status)
                code = b.load(address(p.status), typ=I32, align=4)
                failed = b.icmp_signed("!=", code, ir.Constant(I32, 0))
                with b.if_then(failed, likely=False):
                    b.ret_void()
            if checks and checks[k]:
                self.emit_numerics_check(b, address, checks[k], len(p.errors) + 1 + k)
        b.ret_void()
        py_entry = None
        if self.opt.py_data_offset:
            py_entry = f"{self.prefix}_pyentry"
            pf = ir.Function(self.module, ir.FunctionType(VOID, [PTR]), name=py_entry)
            pf.attributes.add("nounwind")
            pb = ir.IRBuilder(pf.append_basic_block("entry"))
            n = len(ext) + 1
            args = pb.alloca(PTR, size=ir.Constant(I64, n), name="args")
            for i in range(n):
                src = pb.gep(pf.args[0], [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
                obj = pb.load(src, typ=PTR, align=8)
                if i < len(ext):
                    dp = pb.gep(obj, [ir.Constant(I64, self.opt.py_data_offset)], inbounds=True,
                                source_etype=I8)
                    val = pb.load(dp, typ=PTR, align=8)
                else:
                    val = obj
                dst = pb.gep(args, [ir.Constant(I64, i)], inbounds=True, source_etype=PTR)
                pb.store(val, dst, align=8)
            pb.call(entry, [args])
            pb.ret_void()
        a = abi(p, self.opt)
        assert (a.entry, a.py_entry, a.num_threads_global) == (entry_name, py_entry, self.nthreads_gv.name)
        return GeneratedModule(self.module, entry_name, py_entry, self.nthreads_gv.name, ext,
                               a.arena_bytes, kfuncs)

    # .. check_numerics ..
    def numerics_plan(self) -> list[tuple[str, ...]] | None:
        if not self.opt.check_numerics:
            return None
        if self.p.status is None:
            raise CodegenError(f"check_numerics needs a status buffer; program {self.p.name!r} has none")
        from ..numerics import check_plan
        return check_plan(self.p)

    def emit_numerics_check(self, b: ir.IRBuilder, address, names: tuple[str, ...], code: int) -> None:
        """status[0] = code and return, when one of the buffers holds NaN or +-inf."""
        flag = None
        for name in names:
            buf = self.p.buffers[name]
            f = b.call(self.nonfinite_function(buf.dtype), [address(name), ir.Constant(I64, buf.size)])
            flag = f if flag is None else b.or_(flag, f)
        with b.if_then(flag, likely=False):
            b.store(ir.Constant(I32, code), address(self.p.status), align=4)
            b.ret_void()

    def nonfinite_function(self, dt: DType) -> ir.Function:
        """i1 <prefix>.nonfinite_<dt>(ptr p, i64 n): some p[0..n) is NaN or +-inf. Integer
        ops on the bits (exact for every float width), an unsigned-max reduction LLVM
        vectorises; no early exit, so the loop streams at memory speed."""
        name = f"{self.prefix}.nonfinite_{dt.name}"
        fn = self.decls.get(name)
        if fn is not None:
            return fn
        width = dt.itemsize * 8
        it = ir.IntType(width)
        mask = {16: 0x7C00, 32: 0x7F800000, 64: 0x7FF0000000000000}[width]
        fn = ir.Function(self.module, ir.FunctionType(I1, [PTR, I64]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        ptr, n = fn.args
        ptr.add_attribute("noalias")
        entry, loop, done = (fn.append_basic_block(x) for x in ("entry", "loop", "done"))
        b = ir.IRBuilder(entry)
        b.branch(loop)
        b.position_at_end(loop)
        i = b.phi(I64, name="i")
        acc = b.phi(it, name="acc")
        i.add_incoming(ir.Constant(I64, 0), entry)
        acc.add_incoming(ir.Constant(it, 0), entry)
        elem = b.load(b.gep(ptr, [i], inbounds=True, source_etype=it), typ=it)
        bits = b.and_(elem, ir.Constant(it, mask))
        nxt_acc = b.select(b.icmp_unsigned(">", bits, acc), bits, acc)
        nxt = b.add(i, ir.Constant(I64, 1), flags=("nuw", "nsw"))
        i.add_incoming(nxt, loop)
        acc.add_incoming(nxt_acc, loop)
        br = b.cbranch(b.icmp_signed("<", nxt, n), loop, done)
        br.set_metadata("llvm.loop", self.loop_id("vectorize"))
        b.position_at_end(done)
        b.ret(b.icmp_unsigned("==", nxt_acc, ir.Constant(it, mask)))
        self.decls[name] = fn
        return fn

    def param_attrs(self, arg: ir.Argument, name: str, used: list[str], written: set[str]) -> None:
        root, lo, hi = self.byte_range(name)
        overlaps = False
        for other in used:
            if other == name:
                continue
            r2, lo2, hi2 = self.byte_range(other)
            if r2 == root and lo2 < hi and lo < hi2 and (name in written or other in written):
                overlaps = True
                break
        if not overlaps:
            arg.add_attribute("noalias")
        if hi > lo:
            arg.attributes.dereferenceable = hi - lo
        if root == "<arena>" and lo % 64 == 0:
            arg.attributes.align = 64

    def kernel_function(self, fname: str, used: list[str], written: set[str], k: K.Kernel) -> ir.Function:
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * len(used)), name=fname)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")  # see "Module layout" in the module docstring
        for arg, name in zip(fn.args, used):
            arg.name = _sanitize(name)
            self.param_attrs(arg, name, used, written)
        fg = _FuncGen(self, fn, dict(zip(used, fn.args)), k)
        fg.emit_body(k.body, top=True)
        fg.finish()
        return fn
