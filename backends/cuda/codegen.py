"""Kernel IR `Program` -> CUDA C: one `__global__` function per phase of each kernel.

What the generated code does:

Phases
    A kernel's top-level statements are split into *phases*: runs of statements tied
    together by the scalar locals they share (a reduction to a scalar, `let acc; for ...;
    out = acc`, stays one phase); every other top-level loop nest or GEMM is a phase of
    its own. Phases run one after the other on the stream, as the statements did. A loop
    nest whose loops are all independent (analysis.py) and whose body holds several loop
    nests is split into one phase per inner nest (loop distribution).

Loops -> grid
    In a phase's perfect loop nest, the independent loops (analysis.Dependence; a loop
    marked `parallel` below independent ones counts too, as the lowering promises it) are
    flattened into one index space spread over the grid with a grid-stride loop (256
    threads a block, the innermost loop fastest so that neighbouring threads touch
    neighbouring elements); the other loops of the nest run inside each thread in their
    original order (loop interchange: legal, since an independent loop's iterations never
    touch the same written byte). Index arithmetic is 32-bit when every buffer and loop
    fits in 2^30 elements, 64-bit otherwise (cexpr.py).
    Straight-line bodies over 4-byte elements whose accesses are contiguous in the
    innermost parallel loop and 16-byte aligned take four iterations per thread with
    `float4`/`int4` loads and stores. Consecutive phases that provably touch disjoint
    bytes (analysis.independent_nests: the nine nests of a 3x3 im2col) share one launch,
    their index spaces laid end to end.

Reductions -> groups of threads
    When the body left for one thread contains reduction loop nests (`acc = acc + x`,
    max, min; analysis.as_reduction), a group of G threads (32..1024, a power of two
    sized to the reduction) shares each output: its lanes take interleaved iterations of
    the flattened reduction loops (coalesced along the innermost one), fold them in
    registers, then combine with warp shuffles and, across the warps of a group, shared
    memory (prelude.gc_group_reduce). Statements outside the reduction run redundantly on
    every lane and only lane 0 stores. This needs the body never to load what it stores.
    Softmax, layer norm and cross-entropy lower to such fused row reductions: one pass
    per reduction, the normalisation fused into the next kernel. A reduction the lowering
    wrote into memory (`out[i] = out[i] + x[r, i]` over serial loops r: column sums, bias
    gradients) is folded after interchange by blocks of 32 outputs x L warps: the warps
    split the r iterations, neighbouring threads read neighbouring columns
    (prelude.gc_column_reduce). Reassociating a float sum is what `reduce` loops allow.

GEMM
    gemm.py: tiled shared-memory kernels with register blocking; f16 inputs on tensor
    cores (WMMA) with f32 accumulation; batched over `Gemm.batch` and over the loops
    around it in `gridDim.z`.

Semantics of scalar operations are numpy's, as in the LLVM backend (prelude.py).
Compiled with `-fmad=false`: elementwise arithmetic rounds as numpy does.

`render(program)` returns a `CudaModule`: the translation unit and the launches (function,
grid, block, buffer arguments) the runtime issues in order.
"""
from __future__ import annotations

from ...ir import kernel as K
from ...ir.errors import KernelVerificationError
from ...ir.kernel_verify import verify_layout
from . import analysis as A
from .cexpr import NARROW_LIMIT, CudaCodegenError, ExprWriter, mem_type, sanitize
from .gemm import render_gemm
from .gemm_templates import GEMM_TEMPLATES
from .module import BLOCK, MAX_BLOCKS, VEC, CodegenOptions, CudaModule, Launch, _local_name, _Plan
from .prelude import PRELUDE
from .reductions import ReductionRenderer
from .threads import ThreadRenderer

__all__ = ["render", "render_body", "translation_unit", "program_prefix", "split_phases", "sanitize",
           "CodegenOptions", "CudaModule", "Launch", "BLOCK", "MAX_BLOCKS", "VEC"]


# -- phases ------------------------------------------------------------------------------------

def split_phases(body: list[K.Stmt]) -> list[list[K.Stmt]]:
    """Top-level statements grouped into runs connected by the locals they share."""
    last_use: dict[str, int] = {}
    for i, s in enumerate(body):
        names: set[str] = set()
        for x in A.walk_stmts([s]):
            if isinstance(x, (K.Declare, K.Assign)):
                names.add(x.local.name)
            for e in A.stmt_exprs(x):
                names |= A.local_names(e)
        for n in names:
            last_use[n] = i
    phases: list[list[K.Stmt]] = []
    end = -1
    for i, s in enumerate(body):
        if i > end:
            phases.append([])
        phases[-1].append(s)
        if isinstance(s, K.Declare):
            end = max(end, last_use.get(s.local.name, i))
    return phases


class _ModuleWriter(ThreadRenderer, ReductionRenderer):
    """Renders one program: phases, their grid plans and launches. The kinds of phase are
    split by idea: threads.py (one thread per iteration, vectorised bodies), reductions.py
    (groups of threads per output, memory reductions), gemm.py (GEMM statements)."""

    def __init__(self, program: K.Program, options: CodegenOptions, prefix: str) -> None:
        self.p = program
        self.opt = options
        self.prefix = prefix
        self.dtypes = {n: b.dtype for n, b in program.buffers.items()}
        self.storage = A.storage_map(program)
        self.parts: list[str] = []
        self.launches: list[Launch] = []
        self.functions: list[str] = []
        sizes = [b.size for b in program.buffers.values()] + [program.arena_bytes]
        extents = [s.extent for k in program.kernels for s in A.walk_stmts(k.body) if isinstance(s, K.For)]
        self.narrow = max(sizes + extents + [0]) < NARROW_LIMIT
        self._check()

    def _check(self) -> None:
        p = self.p
        for k in p.kernels:
            for a in A.accesses(k.body):
                if a.buffer not in p.buffers:
                    raise CudaCodegenError(f"kernel {k.name!r} uses unknown buffer {a.buffer!r}"
                                           + (f" (computes {k.source})" if k.source else ""))
        try:  # buffers, aliases and arena: the kernel-IR verifier's checks, not a copy
            verify_layout(p)
        except KernelVerificationError as e:
            raise CudaCodegenError(e.message) from None

    # .. driver ..
    def render(self) -> None:
        checks = None
        if self.opt.check_numerics:
            if self.p.status is None:
                raise CudaCodegenError(f"check_numerics needs a status buffer; program "
                                       f"{self.p.name!r} has none")
            from ..numerics import check_plan
            checks = check_plan(self.p)
        for ki, k in enumerate(self.p.kernels):
            phases = []
            for ph in split_phases(k.body):
                phases.extend(self.distribute(ph))
            run: list[tuple[str, list[K.Stmt], _Plan]] = []  # independent phases, one launch
            for pi, ph in enumerate(phases):
                fname = f"{self.prefix}_k{ki}_{sanitize(k.name)}_p{pi}"
                plan = self.plan(ph)
                if self.mergeable(plan):
                    if all(A.independent_nests(other, ph, self.storage, self.p.status) for _, other, _ in run):
                        run.append((fname, ph, plan))
                        continue
                    self.flush(k, run)
                    run = [(fname, ph, plan)]
                    continue
                self.flush(k, run)
                run = []
                self.render_phase(k, fname, ph)
            self.flush(k, run)
            if checks and checks[ki]:
                self.render_check(k, ki, checks[ki])

    def render_check(self, k: K.Kernel, ki: int, names: tuple[str, ...]) -> None:
        """A grid-stride launch over the buffers check_plan names for kernel ki: a thread that
        sees NaN or +-inf sets the status flag to len(errors) + 1 + ki unless a flag is
        already set. Launches run in stream order, so the flag names the first kernel that
        went non-finite (the runtime then re-runs the kernels before it to locate the node)."""
        status = self.p.status
        fname = f"{self.prefix}_k{ki}_{sanitize(k.name)}_check"
        used = list(names) + [status]
        code = len(self.p.errors) + 1 + ki
        lines = ["  int found = 0;",
                 "  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;",
                 "  const long long step = (long long)blockDim.x * gridDim.x;"]
        for n in names:
            b = self.p.buffers[n]
            x = f"b_{sanitize(n)}[i]"
            value = f"__half2float({x})" if b.dtype.name == "f16" else x
            ct = "double" if b.dtype.name == "f64" else "float"  # x - x is NaN iff x is NaN or inf
            lines.append(f"  for (long long i = first; i < {b.size}LL; i += step) "
                         f"{{ {ct} d = ({ct}){value} - ({ct}){value}; found |= d != d; }}")
        st = f"b_{sanitize(status)}"
        lines.append(f"  if (found && {st}[0] == 0) {st}[0] = {code};")
        head = (f'extern "C" __global__ void __launch_bounds__({BLOCK}) '
                f"{fname}({self.signature(used, {status})})")
        self.parts.append(f"// check_numerics after {k.name}\n{head} {{\n" + "\n".join(lines) + "\n}\n")
        grid = self.grid_for(max(self.p.buffers[n].size for n in names), BLOCK)
        self.launches.append(Launch(fname, (grid, 1, 1), (BLOCK, 1, 1), used, k.name, k.source,
                                    check=True))
        self.functions.append(fname)

    def mergeable(self, plan: _Plan) -> bool:
        """A phase of one thread per iteration, no vector path: it can share a launch."""
        return (self.opt.merge_phases and bool(plan.parallel) and all(l.extent > 0 for l in plan.nest)
                and not any(isinstance(s, K.Gemm) for s in A.walk_stmts(plan.nest[:1]))
                and self.memory_reduction(plan) is None and not self.group_size(plan)
                and self.vectorizable(plan) is None)

    def flush(self, k: K.Kernel, run: list[tuple[str, list[K.Stmt], "_Plan"]]) -> None:
        if len(run) == 1:
            self.render_phase(k, run[0][0], run[0][1])
        elif run:
            self.render_merged(k, run[0][0] + f"_to_{len(run) - 1}", [plan for _, _, plan in run])

    def dependence(self, stmts: list[K.Stmt], accs=(), fixed=()) -> A.Dependence:
        """Dependences among the iterations of `stmts`' loops; variables of loops around
        them (`fixed`) are constants there."""
        extents = {**{v: 1 for v in fixed}, **A.loop_extents(stmts)}
        return A.Dependence(stmts, self.storage, extents, self.p.status, accs)

    def distribute(self, phase: list[K.Stmt]) -> list[list[K.Stmt]]:
        """Split `for (independent loops) { nest1; nest2; ... }` into one phase per nest."""
        if len(phase) != 1 or not isinstance(phase[0], K.For):
            return [phase]
        nest, body = A.perfect_nest(phase[0])
        if len(body) < 2 or not all(isinstance(s, (K.For, K.Gemm)) for s in body):
            return [phase]
        dep = self.dependence(phase)
        if not all(dep.independent(l.var.name) for l in nest):
            return [phase]
        out = []
        for s in body:
            inner: K.Stmt = s
            for l in reversed(nest):
                inner = K.For(l.var, l.extent, [inner], l.mark)
            out.extend(self.distribute([inner]))
        return out

    def plan(self, phase: list[K.Stmt]) -> _Plan:
        if len(phase) == 1 and isinstance(phase[0], K.For):
            nest, body = A.perfect_nest(phase[0])
        else:
            return _Plan([], phase, [], [])
        dep = self.dependence(phase)
        par, ser = [], []
        for l in nest:
            if l.extent <= 1:
                ser.append(l)
            elif dep.independent(l.var.name) or (l.mark == "parallel" and not ser):
                par.append(l)
            else:
                ser.append(l)
        return _Plan(nest, body, par, ser)

    # .. one phase ..
    def render_phase(self, k: K.Kernel, fname: str, phase: list[K.Stmt]) -> None:
        plan = self.plan(phase)
        if any(l.extent <= 0 for l in plan.nest):
            return  # an empty loop nest does nothing
        if len(plan.body) == 1 and isinstance(plan.body[0], K.Gemm):
            render_gemm(self, k, fname, plan)
            return
        if any(isinstance(s, K.Gemm) for s in A.walk_stmts(phase)):
            raise CudaCodegenError(f"kernel {k.name!r}: a GEMM must be the only statement of "
                                   "its loop nest" + (f" (computes {k.source})" if k.source else ""))
        folded = self.memory_reduction(plan)
        if folded is not None:
            self.render_memory_reduction(k, fname, plan, *folded)
            return
        group = self.group_size(plan)
        if group:
            self.render_grouped(k, fname, plan, group)
        else:
            self.render_threads(k, fname, plan)

    def buffers_of(self, stmts: list[K.Stmt]) -> tuple[list[str], set[str]]:
        used: dict[str, None] = {}
        written: set[str] = set()
        for a in A.accesses(stmts):
            used.setdefault(a.buffer)
            if a.store:
                written.add(a.buffer)
        return list(used), written

    def signature(self, used: list[str], written: set[str]) -> str:
        params = []
        for n in used:
            st = self.storage[n]
            overlaps = any(o != n and self.storage[o].overlaps(st) and (n in written or o in written)
                           for o in used)
            const = "" if n in written else "const "
            restrict = "" if overlaps else " __restrict__"
            params.append(f"{const}{mem_type(self.dtypes[n])}*{restrict} b_{sanitize(n)}")
        return ", ".join(params)

    def writer(self, k: K.Kernel, used: list[str], extents: dict[str, int]) -> ExprWriter:
        w = ExprWriter(self.dtypes, self.narrow, f"kernel {k.name!r}"
                       + (f" (computes {k.source})" if k.source else ""))
        w.buffers = {n: f"b_{sanitize(n)}" for n in used}
        w.ranges = dict(extents)
        return w

    def emit(self, k: K.Kernel, fname: str, used: list[str], grid: int, block: int, text: str,
             written: set[str]) -> None:
        head = f'extern "C" __global__ void __launch_bounds__({block}) {fname}({self.signature(used, written)})'
        self.parts.append(f"// {k.name}: {k.source}\n{head} {{\n{text}}}\n" if k.source
                          else f"{head} {{\n{text}}}\n")
        self.launches.append(Launch(fname, (grid, 1, 1), (block, 1, 1), used, k.name, k.source))
        self.functions.append(fname)

    def grid_for(self, total: int, per_block: int) -> int:
        return max(1, min(-(-total // per_block), self.opt.max_blocks))

    def serial_loops(self, w: ExprWriter, plan: _Plan, ind: str, inner) -> list[str]:
        """The nest's serial loops around the body, outermost first."""
        lines: list[str] = []
        depth = ind
        for l in plan.serial:
            c = f"v_{sanitize(l.var.name)}"
            w.vars[l.var.name] = c
            lines.append(f"{depth}for ({w.idx} {c} = 0; {c} < {l.extent}; ++{c}) {{")
            depth += "  "
        lines += inner(depth)
        for _ in plan.serial:
            depth = depth[:-2]
            lines.append(f"{depth}}}")
        return lines

    def stmts(self, w: ExprWriter, stmts: list[K.Stmt], ind: str, guard: str = "",
              lane_guard: str = "") -> list[str]:
        """Statements for one thread. `guard` wraps stores inside loops, `lane_guard`
        (lane 0 of a group) stores outside the reductions of a grouped body."""
        out: list[str] = []
        for s in stmts:
            if isinstance(s, K.For):
                if s.extent <= 0:
                    continue
                c = f"v_{sanitize(s.var.name)}"
                w.vars[s.var.name] = c
                out.append(f"{ind}for ({w.idx} {c} = 0; {c} < {s.extent}; ++{c}) {{")
                out += self.stmts(w, s.body, ind + "  ", guard, lane_guard)
                out.append(f"{ind}}}")
            elif isinstance(s, K.Store):
                g = lane_guard or guard
                text = w.store(s.buffer, s.index, s.value)
                out.append(f"{ind}if ({g}) {text}" if g else f"{ind}{text}")
            elif isinstance(s, K.Declare):
                cname = _local_name(w, s)
                out.append(f"{ind}{cname} = {w.conv(w.expr(s.init), s.init.dtype, s.local.dtype)};")
            elif isinstance(s, K.Assign):
                if s.local.name not in w.locals:
                    raise w.error(f"assignment to undeclared local ${s.local.name}")
                cname, dt = w.locals[s.local.name]
                out.append(f"{ind}{cname} = {w.conv(w.expr(s.value), s.value.dtype, dt)};")
            else:
                raise w.error(f"unsupported statement {type(s).__name__} here")
        return out



# -- public API --------------------------------------------------------------------------------

def program_prefix(program: K.Program) -> str:
    return "gc_" + sanitize(program.name)


def render_body(program: K.Program, options: CodegenOptions | None = None,
                prefix: str | None = None) -> tuple[str, list[Launch], list[str]]:
    """The program's kernels as CUDA C (without the prelude) and its launches."""
    mw = _ModuleWriter(program, options or CodegenOptions(), prefix or program_prefix(program))
    mw.render()
    return "\n".join(mw.parts), mw.launches, mw.functions


def translation_unit(bodies: list[str]) -> str:
    return PRELUDE + GEMM_TEMPLATES + "\n" + "\n".join(bodies)


def render(program: K.Program, options: CodegenOptions | None = None) -> CudaModule:
    """Render a kernel-IR program as one CUDA translation unit (see the module docstring)."""
    body, launches, functions = render_body(program, options)
    return CudaModule(translation_unit([body]), launches, A.storage_map(program), program.arena_bytes,
                      program.external(), functions)
