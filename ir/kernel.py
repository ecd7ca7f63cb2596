"""Kernel IR: the loop level that every code generator reads.

A `Program` is an ordered list of `Kernel`s over named `Buffer`s. A kernel is a loop nest:
`For` loops with schedule marks, `Store`s of scalar expressions into flat buffer
positions, scalar locals for reductions, and `Gemm` calls to a generated microkernel with
a fused epilogue. Buffers are dense, row-major, addressed by flat element index, so index
arithmetic is explicit in the IR and identical for the LLVM and CUDA generators. Nothing
here is specific to one backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Callable, Iterable, Iterator, Union

from .dtypes import DType, bool_, i64

# -- the scalar-function vocabulary ---------------------------------------------------------

@dataclass(frozen=True)
class ScalarFunc:
    """One function a `Unary`, `Binary` or `Compare` may name. This table is the vocabulary:
    the kernel-IR interpreter, both code generators and the cost model read it, so a
    function is either in it and reachable everywhere, or nowhere.

    `kinds`: the dtype kinds it is defined on ("f" float, "i" integer, "b" bool).
    `library`: on floats it is a math-library routine (backends/llvm/mathlib.py, CUDA's libm),
    accurate to an ulp or so rather than exactly rounded like an instruction.
    `cost`: the kernel cost model's work per evaluation, in instruction units (a library
    routine 8, a division 4, an instruction 1); it decides what is worth a parallel fork."""
    name: str
    arity: int
    kinds: str
    library: bool = False
    compare: bool = False
    cost: int = 1


def _lib(name: str, arity: int = 1, kinds: str = "f") -> ScalarFunc:
    return ScalarFunc(name, arity, kinds, library=True, cost=8)


SCALAR_FUNCS: dict[str, ScalarFunc] = {f.name: f for f in (
    # unary
    ScalarFunc("neg", 1, "fib"), ScalarFunc("abs", 1, "fib"), ScalarFunc("sign", 1, "fib"),
    ScalarFunc("not", 1, "fib"), ScalarFunc("sqrt", 1, "f"),
    *(_lib(n) for n in ("exp", "expm1", "log", "rsqrt", "tanh", "sigmoid", "erf", "sin", "cos")),
    # binary (on bools: add/or/max are or, mul/and/min are and, sub is xor)
    ScalarFunc("add", 2, "fib"), ScalarFunc("sub", 2, "fib"), ScalarFunc("mul", 2, "fib"),
    ScalarFunc("div", 2, "fi", cost=4), ScalarFunc("mod", 2, "fi", cost=4),
    _lib("pow", 2, "fi"),  # on integers: exact, by squaring (a scalar call, not vectorised)
    ScalarFunc("max", 2, "fib"), ScalarFunc("min", 2, "fib"),
    ScalarFunc("and", 2, "fib"), ScalarFunc("or", 2, "fib"),
    # comparisons (a bool result)
    *(ScalarFunc(c, 2, "fib", compare=True) for c in ("eq", "ne", "lt", "le", "gt", "ge")),
)}

UNARY_FUNCS = tuple(n for n, f in SCALAR_FUNCS.items() if f.arity == 1)
BINARY_FUNCS = tuple(n for n, f in SCALAR_FUNCS.items() if f.arity == 2 and not f.compare)
COMPARE_FUNCS = tuple(n for n, f in SCALAR_FUNCS.items() if f.compare)
# float functions a backend computes with a math-library routine (LLVM mathlib, CUDA libm)
ARENA_ALIGN = 64  # bytes: every arena slot starts on a cache line, enough for any vector load
MATH_FUNCS = tuple(n for n, f in SCALAR_FUNCS.items() if f.library)


def _kind(dt: DType) -> str:
    return "f" if dt.is_float else "b" if dt.is_bool else "i"


def scalar_func(name: str, dtype: DType) -> ScalarFunc | None:
    """The entry for `name` applied to operands of `dtype`, or None where it is not defined."""
    f = SCALAR_FUNCS.get(name)
    return f if f is not None and _kind(dtype) in f.kinds else None


# -- scalar expressions -------------------------------------------------------------------


@dataclass(frozen=True)
class Const:
    value: float | int | bool
    dtype: DType

    def __str__(self) -> str:
        if self.dtype.is_bool:
            return "true" if self.value else "false"
        return f"{self.value!r}:{self.dtype}"


@dataclass(frozen=True)
class Var:
    """A loop index (i64)."""
    name: str
    dtype: DType = i64

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class LocalRef:
    """Reads a scalar local declared by `Declare`."""
    name: str
    dtype: DType

    def __str__(self) -> str:
        return f"${self.name}"


@dataclass(frozen=True)
class Load:
    buffer: str
    index: "Expr"
    dtype: DType

    def __str__(self) -> str:
        return f"{self.buffer}[{self.index}]"


@dataclass(frozen=True)
class Unary:
    op: str
    x: "Expr"
    dtype: DType

    def __str__(self) -> str:
        return f"{self.op}({self.x})"


@dataclass(frozen=True)
class Binary:
    """`contract`: a float mul feeding a contract add may round once, as one fused
    multiply-add (printed `*~`, `+~`): for sums of products the lowering wrote (convolution
    taps), where the order of rounding is the lowering's choice anyway. Without it,
    arithmetic rounds exactly as numpy's does."""
    op: str
    a: "Expr"
    b: "Expr"
    dtype: DType
    contract: bool = False

    def __str__(self) -> str:
        sym = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%", "and": "&&", "or": "||"}
        if self.op in sym:
            return f"({self.a} {sym[self.op]}{'~' if self.contract else ''} {self.b})"
        return f"{self.op}({self.a}, {self.b})"


@dataclass(frozen=True)
class Compare:
    op: str
    a: "Expr"
    b: "Expr"
    dtype: DType = bool_

    def __str__(self) -> str:
        sym = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[self.op]
        return f"({self.a} {sym} {self.b})"


@dataclass(frozen=True)
class Select:
    cond: "Expr"
    a: "Expr"
    b: "Expr"
    dtype: DType

    def __str__(self) -> str:
        return f"select({self.cond}, {self.a}, {self.b})"


@dataclass(frozen=True)
class Cast:
    x: "Expr"
    dtype: DType

    def __str__(self) -> str:
        return f"{self.dtype}({self.x})"


Expr = Union[Const, Var, LocalRef, Load, Unary, Binary, Compare, Select, Cast]


# -- statements ---------------------------------------------------------------------------

LOOP_MARKS = ("serial", "parallel", "vectorize", "unroll", "reduce")


@dataclass
class For:
    """for var in [0, extent): body. `mark` is a schedule hint the generators honour:
    parallel (split across threads), vectorize (innermost, contiguous), unroll, reduce (the
    body accumulates into locals; floating-point reassociation is allowed)."""
    var: Var
    extent: int
    body: list["Stmt"]
    mark: str = "serial"


@dataclass
class Store:
    buffer: str
    index: Expr
    value: Expr


@dataclass
class Declare:
    """A scalar local with an initial value."""
    local: LocalRef
    init: Expr


@dataclass
class Assign:
    local: LocalRef
    value: Expr


@dataclass
class Gemm:
    """C[b] = epilogue(alpha * op(A[b]) @ op(B[b]) (+ C[b] if accumulate)) over `batch`
    matrices, with per-operand batch strides (0 broadcasts) and leading dimensions in
    elements. The epilogue is an elementwise expression of `LocalRef("acc")` and of loads
    indexed by the row and column variables `i` and `j` and by enclosing loop variables
    (bias, activation, residual, per batch matrix); a generator applies it to each element
    of C once that element is final (the LLVM one to each GEMM tile while it is in cache)."""
    a: str
    b: str
    c: str
    m: int
    n: int
    k: int
    batch: int = 1
    trans_a: bool = False
    trans_b: bool = False
    lda: int = 0
    ldb: int = 0
    ldc: int = 0
    stride_a: int = 0
    stride_b: int = 0
    stride_c: int = 0
    offset_a: "Expr | int" = 0  # element offsets; expressions of enclosing loop variables
    offset_b: "Expr | int" = 0
    offset_c: "Expr | int" = 0
    accumulate: bool = False
    epilogue: Expr | None = None
    # B laid out as column panels of this width (0: row-major or transposed, with ldb):
    # op(B)[p, j] at offset_b + (j // w)*k*w + p*w + j % w, n a multiple of w. A producer
    # that writes B in the GEMM library's own packed format (the LLVM backend's NR, see
    # passes.lower's gemm_panels) saves the library its packing copy. The library loads
    # panels aligned: B's buffer (arena temps start on 64 bytes, and so do constants read
    # as panels) plus offset_b must start on a vector boundary.
    b_panels: int = 0


Stmt = Union[For, Store, Declare, Assign, Gemm]

# What a Gemm epilogue reads: the accumulated element (a LocalRef named "acc" of C's dtype)
# and its row and column.
GEMM_ROW, GEMM_COL = Var("i"), Var("j")


# -- containers ---------------------------------------------------------------------------

BUFFER_KINDS = ("input", "param", "const", "output", "temp")


@dataclass(frozen=True)
class Buffer:
    """A dense row-major array addressed by flat element index.

    kind: input (fed by the caller), param (parameter state, read-only during a call),
    const (data in Program.constants), output (written by the program: results and
    parameter updates), temp (placed in the arena)."""
    name: str
    size: int  # elements
    dtype: DType
    kind: str = "temp"

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.dtype}[{self.size}]"


@dataclass
class Kernel:
    name: str
    body: list[Stmt]
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    source: str = ""  # the graph node(s) it computes, for dumps and errors

    def __str__(self) -> str:
        head = f"kernel @{self.name}(reads {', '.join(self.reads)}; writes {', '.join(self.writes)})"
        if self.source:
            head += f"  // {self.source}"
        return head + " {\n" + "".join(_fmt(s, 1) for s in self.body) + "}"


@dataclass
class Program:
    """Kernels in execution order over buffers.

    ABI of the generated entry point: `void entry(void** args)` where args holds one data
    pointer per non-temp, non-alias buffer in `external()` order, then the arena base.
    `aliases` maps a buffer to (base, element offset) when it is a view of another (reshape,
    squeeze, in-place activation); `arena` maps temps to byte offsets in the arena (the
    memory plan), with `arena_bytes` the total. `outputs` names the graph's results in
    order and `updates` maps parameter names to the output buffers holding their new value.
    """
    name: str
    buffers: dict[str, Buffer]
    kernels: list[Kernel]
    inputs: list[str] = field(default_factory=list)   # buffer per graph input, in order
    params: dict[str, str] = field(default_factory=dict)  # parameter name -> buffer
    outputs: list[str] = field(default_factory=list)
    updates: dict[str, str] = field(default_factory=dict)
    constants: dict[str, "object"] = field(default_factory=dict)  # buffer -> numpy array
    aliases: dict[str, tuple[str, int]] = field(default_factory=dict)
    arena: dict[str, int] = field(default_factory=dict)  # temp buffer -> byte offset
    arena_bytes: int = 0
    # An i32[2] output buffer kernels flag runtime errors in (bad gather indices...): slot 0
    # holds 0 or the 1-based code of a message in `errors`; slot 1 is scratch. A call stops
    # after the first kernel that leaves slot 0 non-zero: no later kernel runs, so state
    # updated in place (passes/donate.py) is never half-written by a failing call.
    # `updates[name] == params[name]` means that parameter is updated in place.
    status: str | None = None
    errors: list[str] = field(default_factory=list)
    # the MemoryPlan that placed the arena (passes/memory.py), for reports; not program text
    memory_plan: "object | None" = field(default=None, compare=False, repr=False)
    # the kernel-IR steps that made it, for the ledger: (step, seconds, kernels before,
    # kernels after, what it did), as lowering recorded them (passes/lower.py)
    steps: list = field(default_factory=list, compare=False, repr=False)
    # the graph nodes behind each kernel (ir/provenance.py), for the NaN locator and the
    # profiler; not program text
    provenance: "object | None" = field(default=None, compare=False, repr=False)

    def external(self) -> list[str]:
        """Buffers passed by pointer, in ABI order: inputs, params, consts, outputs."""
        order = {"input": 0, "param": 1, "const": 2, "output": 3}
        ext = [b for b in self.buffers.values() if b.kind in order and b.name not in self.aliases]
        return [b.name for b in sorted(ext, key=lambda b: order[b.kind])]

    def __str__(self) -> str:
        lines = [f"program @{self.name} (arena {self.arena_bytes} bytes)"]
        for b in self.buffers.values():
            where = ""
            if b.name in self.aliases:
                where = f" = view of {self.aliases[b.name][0]} + {self.aliases[b.name][1]}"
            elif b.name in self.arena:
                where = f" @ arena+{self.arena[b.name]}"
            lines.append(f"  {b}{where}")
        return "\n".join(lines) + "\n" + "\n".join(str(k) for k in self.kernels) + "\n"


def _fmt(s: Stmt, depth: int) -> str:
    pad = "  " * depth
    if isinstance(s, For):
        mark = "" if s.mark == "serial" else f" [{s.mark}]"
        inner = "".join(_fmt(b, depth + 1) for b in s.body)
        return f"{pad}for {s.var} in 0..{s.extent}{mark} {{\n{inner}{pad}}}\n"
    if isinstance(s, Store):
        return f"{pad}{s.buffer}[{s.index}] = {s.value}\n"
    if isinstance(s, Declare):
        return f"{pad}let {s.local}: {s.local.dtype} = {s.init}\n"
    if isinstance(s, Assign):
        return f"{pad}{s.local} = {s.value}\n"
    if isinstance(s, Gemm):
        ta = "ᵀ" if s.trans_a else ""
        tb = "ᵀ" if s.trans_b else ""
        epi = f" then {s.epilogue}" if s.epilogue is not None else ""
        acc = " +=" if s.accumulate else " ="
        return (f"{pad}gemm {s.c}[+{s.offset_c}, {s.batch}x{s.m}x{s.n}, ldc={s.ldc}]{acc} "
                f"{s.a}[+{s.offset_a}, lda={s.lda}]{ta} @ {s.b}[+{s.offset_b}, "
                f"{f'panels={s.b_panels}' if s.b_panels else f'ldb={s.ldb}'}]{tb} "
                f"(k={s.k}){epi}\n")
    raise TypeError(type(s))


# -- walkers (the one set: passes and code generators use these, not private copies) -------

def expr_children(e: Expr) -> list[Expr]:
    """The operands of one expression node, in evaluation order."""
    if isinstance(e, (Unary, Cast)):
        return [e.x]
    if isinstance(e, (Binary, Compare)):
        return [e.a, e.b]
    if isinstance(e, Select):
        return [e.cond, e.a, e.b]
    if isinstance(e, Load):
        return [e.index]
    return []


def walk_exprs(e: Expr) -> Iterator[Expr]:
    """Every node of e as a tree, pre-order (a shared sub-expression once per use)."""
    yield e
    for child in ("x", "a", "b", "cond", "index"):
        sub = getattr(e, child, None)
        if sub is not None and not isinstance(sub, (str, DType)):
            yield from walk_exprs(sub)


def walk_expr_dag(e: Expr, children: "Callable[[Expr], Iterable[Expr]] | None" = None,
                  seen: set | None = None) -> Iterator[Expr]:
    """Every node of e once (by identity): expressions are DAGs, and a lowering that reuses a
    sub-expression must not make a walk exponential. `children` extends expr_children (a
    code generator's own node kinds); `seen` (ids) is shared across calls when given."""
    stack, seen = [e], set() if seen is None else seen
    kids = expr_children if children is None else children
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        stack.extend(kids(x))


def walk_stmts(stmts: Iterable[Stmt]) -> Iterator[Stmt]:
    """Every statement, pre-order, loop bodies included."""
    for s in stmts:
        yield s
        if isinstance(s, For):
            yield from walk_stmts(s.body)


def written_buffers(k: "Kernel") -> list[str]:
    """Buffers a kernel's statements store into (GEMM results included), in order."""
    out: dict[str, None] = {}
    for s in walk_stmts(k.body):
        if isinstance(s, Store):
            out.setdefault(s.buffer)
        elif isinstance(s, Gemm):
            out.setdefault(s.c)
    return list(out)


def stmt_exprs(s: Stmt) -> list[Expr]:
    """The expressions a statement evaluates (not those of statements nested in it)."""
    if isinstance(s, Store):
        return [s.index, s.value]
    if isinstance(s, Declare):
        return [s.init]
    if isinstance(s, Assign):
        return [s.value]
    if isinstance(s, Gemm):
        return [e for e in (s.offset_a, s.offset_b, s.offset_c, s.epilogue)
                if e is not None and not isinstance(e, int)]
    return []


def map_expr(e: Expr, fn) -> Expr:
    """e rebuilt bottom-up with fn applied to every sub-expression (children first)."""
    if is_dataclass(e) and not isinstance(e, (Var, Const, LocalRef)):
        changes = {f.name: map_expr(getattr(e, f.name), fn) for f in fields(e)
                   if is_dataclass(getattr(e, f.name))}
        e = replace(e, **changes) if changes else e
    return fn(e)


def rename_buffers(k: Kernel, mapping: dict[str, str]) -> Kernel:
    """A copy of kernel k that reads and writes `mapping[b]` wherever it named buffer b (used
    when a pass moves a value into another buffer's storage under that buffer's own name)."""
    def expr(e):
        return map_expr(e, lambda x: replace(x, buffer=mapping[x.buffer])
                        if isinstance(x, Load) and x.buffer in mapping else x)

    def stmt(s: Stmt) -> Stmt:
        if isinstance(s, For):
            return For(s.var, s.extent, [stmt(x) for x in s.body], s.mark)
        if isinstance(s, Store):
            return Store(mapping.get(s.buffer, s.buffer), expr(s.index), expr(s.value))
        if isinstance(s, Declare):
            return Declare(s.local, expr(s.init))
        if isinstance(s, Assign):
            return Assign(s.local, expr(s.value))
        if isinstance(s, Gemm):
            offs = {o: expr(getattr(s, o)) for o in ("offset_a", "offset_b", "offset_c")}
            epi = expr(s.epilogue) if s.epilogue is not None else None
            return replace(s, a=mapping.get(s.a, s.a), b=mapping.get(s.b, s.b),
                           c=mapping.get(s.c, s.c), epilogue=epi, **offs)
        raise TypeError(type(s))

    def names(bs: list[str]) -> list[str]:
        return list(dict.fromkeys(mapping.get(b, b) for b in bs))
    return Kernel(k.name, [stmt(s) for s in k.body], names(k.reads), names(k.writes), k.source)


def substitute(e: Expr, mapping: dict) -> Expr:
    """e with every sub-expression that is a key of mapping (a Var, a LocalRef...) replaced:
    evaluates an expression written over loop variables and locals at other values."""
    return map_expr(e, lambda x: mapping.get(x, x))


def drop_unread_locals(stmts: list) -> list:
    """A flat statement list without the Declares of locals nothing reads (to a fixpoint):
    generated straight-line code (transform matrices with zero entries, partial tiles)
    leaves such locals, which some compilers warn about."""
    def exprs(s):
        return [e for t in s.body for e in exprs(t)] if isinstance(s, For) else stmt_exprs(s)
    while True:
        read = {x.name for s in stmts for e in exprs(s) for x in walk_exprs(e)
                if isinstance(x, LocalRef)}
        kept = [s for s in stmts if not (isinstance(s, Declare) and s.local.name not in read)]
        if len(kept) == len(stmts):
            return kept
        stmts = kept
