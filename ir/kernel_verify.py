"""The kernel-IR verifier: what a well-formed `Program` satisfies, checked without running it.

Both code generators and the kernel-IR interpreter assume these invariants and would
otherwise corrupt memory or miscompile silently, so a pass that breaks one should name
itself the moment it does (passes/lower.py runs this after lowering and after every
kernel-IR step when GRAPHC_VERIFY >= 1):

* buffers: each one named under its own name, of a known kind, a size >= 0;
  `inputs`/`params`/`outputs`/`updates`/`status`/`constants` name existing buffers of the
  right kind (a parameter updated in place names its own param buffer);
* aliases are views of existing buffers, acyclic, and lie inside their base; once the arena
  is planned every other temp has an offset aligned to ARENA_ALIGN and inside `arena_bytes`;
* per kernel: every buffer it loads, stores or hands to a GEMM exists and is declared in
  its writes (stores, GEMM C) or, for loads and GEMM A and B, its reads or writes (a
  kernel reads back its own scratch); nothing writes a constant, or
  a parameter that is not updated in place;
* loop variables are bound by an enclosing `For` before use and never rebound by a nested
  one; locals are declared before use, with one dtype;
* dtypes agree: binary ops and selects on equal dtypes, comparisons give bool, every
  function exists in `SCALAR_FUNCS` for its operand dtype (`scalar_func`), stores and loads
  in their buffer's dtype, indices are i64;
* an index that is affine in loop variables with constant coefficients stays within its
  buffer for every iteration (loop extents are static); other indices (clamps, data-
  dependent gathers) are left to the interpreter's run-time check;
* a GEMM's m, n, k, leading dimensions, batch strides and offsets keep all three operands
  inside their buffers.
"""
from __future__ import annotations

from typing import Iterable

from . import kernel as K
from .dtypes import DType, bool_, f32, i64
from .errors import KernelVerificationError

__all__ = ["verify_program", "verify_layout", "ARENA_ALIGN", "affine_range"]

ARENA_ALIGN = K.ARENA_ALIGN  # (ir/kernel.py)
_TEXT_MAX = 160


def verify_program(program: K.Program, *, placed: bool | None = None) -> None:
    """Raise KernelVerificationError at the first broken invariant of program (see the
    module docstring). placed: whether the arena is planned, so that every temp that is not
    an alias needs an offset; None infers it from `program.arena` being non-empty."""
    p = program
    _check_buffers(p)
    _check_interface(p)
    _check_aliases(p)
    _check_arena(p, bool(p.arena) if placed is None else placed)
    names: set[str] = set()
    for k in p.kernels:
        if k.name in names:
            raise KernelVerificationError("two kernels share this name", kernel=k)
        names.add(k.name)
        _KernelCheck(p, k).run()


def verify_layout(program: K.Program) -> None:
    """The cheap, whole-program part of verify_program (buffers, aliases, the placed
    arena: linear in buffers), which every code generator checks before it renders."""
    _check_buffers(program)
    _check_aliases(program)
    _check_arena(program, placed=True)


# -- the program's containers ---------------------------------------------------------------

def _fail(message: str) -> None:
    raise KernelVerificationError(message)


def _check_buffers(p: K.Program) -> None:
    for name, b in p.buffers.items():
        if not isinstance(b, K.Buffer) or b.name != name:
            _fail(f"program {p.name!r}: buffers[{name!r}] is {b!r}, not a Buffer of that name")
        if b.kind not in K.BUFFER_KINDS:
            _fail(f"buffer {name!r} has unknown kind {b.kind!r} (one of {', '.join(K.BUFFER_KINDS)})")
        if not isinstance(b.size, int) or b.size < 0:
            _fail(f"buffer {name!r} has size {b.size!r}, not a count of elements")
        if not isinstance(b.dtype, DType):
            _fail(f"buffer {name!r} has dtype {b.dtype!r}, not a DType")


def _expect_kind(p: K.Program, name: str, kinds: tuple[str, ...], role: str) -> None:
    b = p.buffers.get(name)
    if b is None:
        _fail(f"program {p.name!r}: {role} names buffer {name!r}, which does not exist")
    if b.kind not in kinds:
        _fail(f"program {p.name!r}: {role} names {b}, which is not of kind {' or '.join(kinds)}")


def _check_interface(p: K.Program) -> None:
    for name in p.inputs:
        _expect_kind(p, name, ("input",), "inputs")
    for pname, buf in p.params.items():
        _expect_kind(p, buf, ("param",), f"parameter {pname!r}")
    for name in p.outputs:
        _expect_kind(p, name, ("output",), "outputs")
    for pname, buf in p.updates.items():
        if pname not in p.params:
            _fail(f"program {p.name!r}: update of {pname!r}, which is not a parameter")
        in_place = buf == p.params[pname]
        _expect_kind(p, buf, ("param",) if in_place else ("output",), f"update of {pname!r}")
        if p.buffers[buf].size != p.buffers[p.params[pname]].size:
            _fail(f"program {p.name!r}: update of {pname!r} in {p.buffers[buf]} does not fit "
                  f"{p.buffers[p.params[pname]]}")
    if p.status is not None:
        _expect_kind(p, p.status, ("output",), "status")
        st = p.buffers[p.status]
        if st.size < 2 or not st.dtype.is_int:
            _fail(f"program {p.name!r}: status buffer {st} is not an integer buffer of 2 slots")
    for name, data in p.constants.items():
        _expect_kind(p, name, ("const",), "constants")
        size = getattr(data, "size", None)
        if size is not None and int(size) != p.buffers[name].size:
            _fail(f"constant {name!r} holds {size} elements, its buffer {p.buffers[name].size}")
    for b in p.buffers.values():
        if b.kind == "const" and b.name not in p.aliases and b.name not in p.constants:
            _fail(f"constant buffer {b.name!r} has no data in Program.constants")


def _check_aliases(p: K.Program) -> None:
    for name, entry in p.aliases.items():
        if name not in p.buffers:
            _fail(f"alias {name!r} is not a buffer")
        base, off = entry
        if base not in p.buffers:
            _fail(f"alias {name!r} is a view of unknown buffer {base!r}")
        if not isinstance(off, int) or off < 0:
            _fail(f"alias {name!r} of {base!r} at element offset {off!r}")
        seen, root = {name}, base
        while root in p.aliases:
            if root in seen:
                _fail(f"alias cycle through buffer {name!r}")
            seen.add(root)
            root = p.aliases[root][0]
        b, bb = p.buffers[name], p.buffers[base]
        start = off * bb.dtype.itemsize
        if start + b.size * b.dtype.itemsize > bb.size * bb.dtype.itemsize:
            _fail(f"alias {name!r} ({b.dtype}[{b.size}]) = view of {base!r} + {off} runs past {bb} "
                  f"(bytes {start}..{start + b.size * b.dtype.itemsize} of {bb.size * bb.dtype.itemsize})")


def _check_arena(p: K.Program, placed: bool) -> None:
    if not isinstance(p.arena_bytes, int) or p.arena_bytes < 0:
        _fail(f"program {p.name!r}: arena_bytes is {p.arena_bytes!r}")
    for name, off in p.arena.items():
        b = p.buffers.get(name)
        if b is None:
            _fail(f"arena places unknown buffer {name!r}")
        if b.kind != "temp" or name in p.aliases:
            _fail(f"arena places {b}{' (an alias)' if name in p.aliases else ''}; only temps "
                  f"that are not views have arena bytes")
        if not isinstance(off, int) or off < 0 or off % ARENA_ALIGN:
            _fail(f"temp {name!r} at arena offset {off!r}: not a multiple of {ARENA_ALIGN} bytes")
        if off + b.size * b.dtype.itemsize > p.arena_bytes:
            _fail(f"temp {name!r} ({b.dtype}[{b.size}]) at arena+{off} runs past the arena's "
                  f"{p.arena_bytes} bytes")
    if placed:
        for b in p.buffers.values():
            if b.kind == "temp" and b.name not in p.aliases and b.name not in p.arena:
                _fail(f"temp {b.name!r} has no arena offset (the arena is planned)")


# -- index arithmetic -----------------------------------------------------------------------

Affine = tuple[int, dict[str, int]]  # constant, coefficient per loop variable


def _affine(e: K.Expr, memo: dict[int, Affine | None]) -> Affine | None:
    """e as c + sum(a_v * v) over loop variables with integer constants, or None. memo (by
    node identity) keeps a DAG-shaped index linear."""
    key = id(e)
    if key not in memo:
        memo[key] = _affine_node(e, memo)
    return memo[key]


def _affine_node(e: K.Expr, memo: dict[int, Affine | None]) -> Affine | None:
    if isinstance(e, K.Const):
        return (int(e.value), {}) if e.dtype.is_int and not isinstance(e.value, bool) else None
    if isinstance(e, K.Var):
        return 0, {e.name: 1}
    if isinstance(e, K.Cast) and e.dtype.is_int and e.x.dtype.is_int and e.dtype.itemsize >= e.x.dtype.itemsize:
        return _affine(e.x, memo)  # a widening cast keeps the value
    if isinstance(e, K.Binary) and e.op in ("add", "sub", "mul") and e.dtype.is_int:
        a, b = _affine(e.a, memo), _affine(e.b, memo)
        if a is None or b is None:
            return None
        if e.op == "mul":
            if a[1] and b[1]:
                return None  # a product of variables
            (c, coeffs), k = (a, b[0]) if not b[1] else (b, a[0])
            return c * k, {v: x * k for v, x in coeffs.items()}
        sign = 1 if e.op == "add" else -1
        coeffs = dict(a[1])
        for v, x in b[1].items():
            coeffs[v] = coeffs.get(v, 0) + sign * x
        return a[0] + sign * b[0], coeffs
    return None


def affine_range(e: K.Expr | int, extents: dict[str, int]) -> tuple[int, int] | None:
    """(least, greatest) value of an index over every iteration, each variable v in
    [0, extents[v]), when e is affine in them; None when it is not (or names another)."""
    if isinstance(e, int):
        return e, e
    aff = _affine(e, {})
    if aff is None or any(v not in extents for v in aff[1]):
        return None
    lo = hi = aff[0]
    for v, x in aff[1].items():
        top = x * (extents[v] - 1)
        lo, hi = lo + min(0, top), hi + max(0, top)
    return lo, hi


def gemm_acc_dtype(c: DType) -> DType:
    """The dtype a GEMM accumulates C's elements in (its epilogue's `acc`): f16 in f32, bool
    as i64 counts, anything else in its own dtype (the interpreter and generators agree)."""
    return i64 if c.is_bool else f32 if c.name == "f16" else c


# -- one kernel -----------------------------------------------------------------------------

def _text(s: K.Stmt) -> str:
    if isinstance(s, K.For):
        return f"for {s.var} in 0..{s.extent}" + ("" if s.mark == "serial" else f" [{s.mark}]")
    line = K._fmt(s, 0).strip()
    return line if len(line) <= _TEXT_MAX else line[:_TEXT_MAX] + "..."


class _KernelCheck:
    """Walks one kernel with the loop variables and locals in scope."""

    def __init__(self, p: K.Program, k: K.Kernel) -> None:
        self.p, self.k = p, k
        # a kernel reads back what it writes (its scratch, an accumulating GEMM's C)
        self.writes = set(k.writes)
        self.reads = set(k.reads) | self.writes
        self.extents: dict[str, int] = {}  # loop variable -> extent, of enclosing loops
        self.locals: dict[str, DType] = {}
        self.stmt: K.Stmt | None = None
        self.in_epilogue: tuple[DType, DType] | None = None  # (acc's dtype, C's) in one

    def fail(self, message: str) -> None:
        raise KernelVerificationError(message, kernel=self.k,
                                      statement=_text(self.stmt) if self.stmt is not None else "")

    def run(self) -> None:
        for name in (*self.k.reads, *self.k.writes):
            if name not in self.p.buffers:
                self.fail(f"declares buffer {name!r}, which the program does not have")
        self.body(self.k.body)

    def body(self, stmts: Iterable[K.Stmt]) -> None:
        for s in stmts:
            self.stmt = s
            if isinstance(s, K.For):
                self.loop(s)
            elif isinstance(s, K.Store):
                self.store(s)
            elif isinstance(s, K.Declare):
                self.declare(s)
            elif isinstance(s, K.Assign):
                dt = self.local_dtype(s.local)
                self.expr(s.value)
                if s.value.dtype != dt:
                    self.fail(f"assigns a {s.value.dtype} value to local ${s.local.name}: {dt}")
            elif isinstance(s, K.Gemm):
                self.gemm(s)
            else:
                self.fail(f"unknown statement {type(s).__name__}")

    def loop(self, s: K.For) -> None:
        if not isinstance(s.var, K.Var) or s.var.dtype != i64:
            self.fail(f"loop variable {s.var!r} is not an i64 Var")
        if s.var.name in self.extents:
            self.fail(f"nested loop rebinds loop variable {s.var.name!r}")
        if not isinstance(s.extent, int) or s.extent < 0:
            self.fail(f"loop extent {s.extent!r} is not a count")
        if s.mark not in K.LOOP_MARKS:
            self.fail(f"unknown loop mark {s.mark!r} (one of {', '.join(K.LOOP_MARKS)})")
        self.extents[s.var.name] = s.extent
        try:
            self.body(s.body)
        finally:
            del self.extents[s.var.name]
        self.stmt = s

    def declare(self, s: K.Declare) -> None:
        self.expr(s.init)
        dt = s.local.dtype
        if self.locals.get(s.local.name, dt) != dt:
            self.fail(f"redeclares local ${s.local.name} as {dt} (it was {self.locals[s.local.name]})")
        if s.init.dtype != dt:
            self.fail(f"initialises local ${s.local.name}: {dt} with a {s.init.dtype} value")
        self.locals[s.local.name] = dt

    def local_dtype(self, ref: K.LocalRef) -> DType:
        dt = self.locals.get(ref.name)
        if dt is None:
            self.fail(f"uses local ${ref.name} before it is declared")
        if ref.dtype != dt and not (ref.name == "acc" and self.in_epilogue == (dt, ref.dtype)):
            self.fail(f"reads local ${ref.name} as {ref.dtype}; it is declared {dt}")
        return ref.dtype

    def buffer(self, name: str, declared: set[str], what: str) -> K.Buffer:
        b = self.p.buffers.get(name)
        if b is None:
            self.fail(f"{what} buffer {name!r}, which the program does not have")
        if name not in declared:
            lists = "reads or writes" if declared is self.reads else "writes"
            self.fail(f"{what} buffer {name!r}, which is not among the kernel's {lists} "
                      f"({', '.join(sorted(declared)) or 'none'})")
        return b

    def writable(self, name: str) -> None:
        root = name
        while root in self.p.aliases:
            root = self.p.aliases[root][0]
        kind = self.p.buffers[root].kind
        if kind == "const":
            self.fail(f"writes constant buffer {root!r}")
        if kind == "param" and root not in {b for k, b in self.p.updates.items() if self.p.params.get(k) == b}:
            self.fail(f"writes parameter buffer {root!r}, which is not updated in place")

    def in_bounds(self, b: K.Buffer, index: K.Expr | int, what: str, extra: int = 0) -> None:
        """index (and index + extra) inside b for every iteration, when index is affine."""
        if any(x <= 0 for x in self.extents.values()):
            return  # the statement never runs
        r = affine_range(index, self.extents)
        if r is not None and (r[0] < 0 or r[1] + extra >= b.size):
            self.fail(f"{what} {b.name}[{r[0]}..{r[1] + extra}] leaves the buffer's {b.size} "
                      f"elements (index {index})")

    def index(self, b: K.Buffer, e: K.Expr, what: str) -> None:
        self.expr(e)
        if e.dtype != i64:
            self.fail(f"{what} {b.name} with a {e.dtype} index (indices are i64): {e}")
        self.in_bounds(b, e, what)

    def store(self, s: K.Store) -> None:
        b = self.buffer(s.buffer, self.writes, "stores into")
        self.writable(s.buffer)
        self.index(b, s.index, "store to")
        self.expr(s.value)
        if s.value.dtype != b.dtype:
            self.fail(f"stores a {s.value.dtype} value into {b}")

    # .. expressions ..
    def expr(self, e: K.Expr) -> None:
        for x in K.walk_expr_dag(e):
            self.node(x)

    def node(self, e: K.Expr) -> None:
        dt = getattr(e, "dtype", None)
        if not isinstance(dt, DType):
            self.fail(f"expression {e!r} has no dtype")
        if isinstance(e, K.Var):
            if e.name not in self.extents:
                self.fail(f"loop variable {e.name!r} used outside its loop")
            if not dt.is_int:
                self.fail(f"loop variable {e.name!r} read as {dt}")
        elif isinstance(e, K.LocalRef):
            self.local_dtype(e)
        elif isinstance(e, K.Const):
            if dt.is_bool != isinstance(e.value, bool) or (dt.is_int and not isinstance(e.value, int)):
                self.fail(f"constant {e.value!r} is not a {dt} value")
        elif isinstance(e, K.Load):
            b = self.buffer(e.buffer, self.reads, "loads from")
            if dt != b.dtype:
                self.fail(f"loads {b} as {dt}")
            if e.index.dtype != i64:
                self.fail(f"load from {b.name} with a {e.index.dtype} index (indices are i64): {e}")
            self.in_bounds(b, e.index, "load from")
        elif isinstance(e, K.Unary):
            self.func(e.op, 1, e.x.dtype, e)
            if e.x.dtype != dt:
                self.fail(f"{e.op} of a {e.x.dtype} operand typed {dt}: {e}")
        elif isinstance(e, K.Binary):
            self.func(e.op, 2, e.a.dtype, e)
            if not e.a.dtype == e.b.dtype == dt:
                self.fail(f"{e.op} of {e.a.dtype} and {e.b.dtype} typed {dt} "
                          f"(binary operands and result share a dtype): {e}")
        elif isinstance(e, K.Compare):
            self.func(e.op, 2, e.a.dtype, e, compare=True)
            if e.a.dtype != e.b.dtype or dt != bool_:
                self.fail(f"{e.op} of {e.a.dtype} and {e.b.dtype} typed {dt} (a comparison "
                          f"compares equal dtypes into bool): {e}")
        elif isinstance(e, K.Select):
            if e.cond.dtype != bool_ or not e.a.dtype == e.b.dtype == dt:
                self.fail(f"select on a {e.cond.dtype} condition of {e.a.dtype} and {e.b.dtype} "
                          f"typed {dt}: {e}")
        elif not isinstance(e, K.Cast):
            self.fail(f"unknown expression {type(e).__name__}")

    def func(self, op: str, arity: int, dt: DType, e: K.Expr, compare: bool = False) -> None:
        f = K.scalar_func(op, dt)
        if f is None or f.arity != arity or f.compare != compare:
            self.fail(f"scalar function {op!r} is not defined on {dt} as a "
                      f"{'comparison' if compare else f'{arity}-operand function'} "
                      f"(ir/kernel.py SCALAR_FUNCS): {e}")

    # .. GEMM ..
    def gemm(self, g: K.Gemm) -> None:
        a = self.buffer(g.a, self.reads, "gemm reads A from")
        b = self.buffer(g.b, self.reads, "gemm reads B from")
        c = self.buffer(g.c, self.writes, "gemm writes C into")
        self.writable(g.c)
        for n in ("m", "n", "k", "batch", "lda", "ldb", "ldc", "stride_a", "stride_b", "stride_c",
                  "b_panels"):
            v = getattr(g, n)
            if not isinstance(v, int) or v < 0:
                self.fail(f"gemm {n}={v!r} is not a count")
        for n in ("offset_a", "offset_b", "offset_c"):
            off = getattr(g, n)
            if not isinstance(off, int):
                self.expr(off)
                if off.dtype != i64:
                    self.fail(f"gemm {n} {off} is {off.dtype}, not i64")
        lda = g.lda or (g.m if g.trans_a else g.k)
        ldb = g.ldb or (g.k if g.trans_b else g.n)
        ldc = g.ldc or g.n
        rows_a, cols_a = (g.k, g.m) if g.trans_a else (g.m, g.k)
        rows_b, cols_b = (g.n, g.k) if g.trans_b else (g.k, g.n)
        if g.m and g.k and lda < cols_a:
            self.fail(f"gemm lda={lda} is less than A's {cols_a} columns")
        if g.b_panels:
            if g.n % g.b_panels:
                self.fail(f"gemm n={g.n} is not a multiple of its B panel width {g.b_panels}")
        elif g.n and g.k and ldb < cols_b:
            self.fail(f"gemm ldb={ldb} is less than B's {cols_b} columns")
        if g.m and g.n and ldc < g.n:
            self.fail(f"gemm ldc={ldc} is less than C's {g.n} columns")
        if not (g.batch and g.m and g.n):
            return
        last = g.batch - 1
        self.in_bounds(c, g.offset_c, "gemm C", last * g.stride_c + (g.m - 1) * ldc + g.n - 1)
        if g.k:
            self.in_bounds(a, g.offset_a, "gemm A", last * g.stride_a + (rows_a - 1) * lda + cols_a - 1)
            span_b = g.n * g.k - 1 if g.b_panels else (rows_b - 1) * ldb + cols_b - 1
            self.in_bounds(b, g.offset_b, "gemm B", last * g.stride_b + span_b)
        if g.epilogue is not None:
            self.epilogue(g, c)

    def epilogue(self, g: K.Gemm, c: K.Buffer) -> None:
        row, col = K.GEMM_ROW.name, K.GEMM_COL.name
        if row in self.extents or col in self.extents:
            self.fail(f"gemm epilogue's row/column variables {row!r}, {col!r} shadow an enclosing loop")
        saved = self.locals.get("acc")
        self.locals["acc"] = gemm_acc_dtype(c.dtype)
        # lowerings read the accumulator as C's dtype too (f16 epilogues: the generators
        # round the f32 sum to f16 before the epilogue, as an unfused add after it would)
        self.in_epilogue = (self.locals["acc"], c.dtype)
        self.extents[row], self.extents[col] = g.m, g.n
        try:
            self.expr(g.epilogue)
            if g.epilogue.dtype != c.dtype:
                self.fail(f"gemm epilogue is {g.epilogue.dtype}, its result {c}")
        finally:
            del self.extents[row], self.extents[col]
            self.in_epilogue = None
            if saved is None:
                self.locals.pop("acc", None)
            else:
                self.locals["acc"] = saved
