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

from dataclasses import dataclass, field
from math import prod

from ...ir import kernel as K
from . import analysis as A
from .cexpr import NARROW_LIMIT, CudaCodegenError, ExprWriter, mem_type, reg_type, sanitize
from .gemm_templates import GEMM_TEMPLATES
from .prelude import PRELUDE

BLOCK = 256
MAX_BLOCKS = 1 << 16          # grid-stride loops cover the rest
VEC = 4                       # elements per vector load (16 bytes of f32 or i32)


# -- output ------------------------------------------------------------------------------------

@dataclass
class Launch:
    """One kernel launch: `function<<<grid, block>>>(pointer of each buffer in buffers)`."""
    function: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    buffers: list[str]
    kernel: str           # the kernel-IR kernel it belongs to
    source: str = ""      # the graph node(s), for errors
    grid_stride: bool = True  # loops over its index space: any grid.x computes the same
    check: bool = False   # a check_numerics scan of `kernel`'s results, not part of it


@dataclass
class CudaModule:
    source: str
    launches: list[Launch]
    storage: dict[str, A.Storage]
    arena_bytes: int
    external: list[str]
    functions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CodegenOptions:
    """Knobs of the generated code (the compile cache keys on the code itself)."""
    block: int = BLOCK
    max_blocks: int = MAX_BLOCKS
    group_reduce_min: int = 32       # reductions shorter than this run one per thread
    tensor_cores: bool = True        # WMMA for f16 GEMMs
    vectorize: bool = True           # 16-byte loads and stores in elementwise kernels
    big_gemm_tiles: int = 120        # 128 x 128 GEMM tiles from this many tiles (fills an H100)
    merge_phases: bool = True        # independent loop nests of a kernel share one launch
    check_numerics: bool = False     # after each kernel, a launch scanning its results for NaN/inf


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


@dataclass
class _Plan:
    """How one phase maps onto the grid."""
    nest: list[K.For]            # the perfect nest (empty: no loops around the body)
    body: list[K.Stmt]           # innermost body of the nest
    parallel: list[K.For]        # nest loops spread over threads (nest order)
    serial: list[K.For]          # nest loops each thread runs (nest order)


class _ModuleWriter:
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
        for name, b in p.buffers.items():
            if b.kind == "temp" and name not in p.aliases:
                if name not in p.arena:
                    raise CudaCodegenError(f"temp buffer {name!r} has no arena offset")
                off = p.arena[name]
                if off < 0 or off + b.size * b.dtype.itemsize > p.arena_bytes:
                    raise CudaCodegenError(f"temp buffer {name!r} at byte {off} is outside the "
                                           f"arena of {p.arena_bytes} bytes")
        for name, (base, _) in p.aliases.items():
            if base not in p.buffers:
                raise CudaCodegenError(f"alias {name!r} of unknown buffer {base!r}")

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
            from .gemm import render_gemm
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


def _local_name(w: ExprWriter, decl: K.Declare) -> str:
    """The C variable of a Declare (declared at the top of the function)."""
    cname = w.declared.get(id(decl))
    if cname is None:
        raise w.error(f"internal: local ${decl.local.name} was not pre-declared")
    w.locals[decl.local.name] = cname, decl.local.dtype
    return cname


def _declare_locals(w: ExprWriter, stmts: list[K.Stmt]) -> str:
    """Every Declare becomes a C variable of its own at the top of the function (locals
    are per thread; a redeclaration in the IR is a new variable)."""
    lines = []
    for n, s in enumerate(x for x in A.walk_stmts(stmts) if isinstance(x, K.Declare)):
        cname = f"l{n}_{sanitize(s.local.name)}"
        w.declared[id(s)] = cname
        lines.append(f"  {reg_type(s.local.dtype)} {cname};")
    return "\n".join(lines) + ("\n" if lines else "")


def _decompose(w: ExprWriter, flat: str, loops: list[K.For], ind: str) -> list[str]:
    """Loop variables from a flat index, the innermost loop fastest."""
    out = []
    rest = flat
    for n, l in enumerate(reversed(loops)):
        c = f"v_{sanitize(l.var.name)}"
        w.vars[l.var.name] = c
        if n == len(loops) - 1:
            out.append(f"{ind}const {w.idx} {c} = {rest};")
        else:
            out.append(f"{ind}const {w.idx} {c} = {rest} % {l.extent};")
            nxt = f"{flat}_{n}"
            out.append(f"{ind}const {w.idx} {nxt} = {rest} / {l.extent};")
            rest = nxt
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
