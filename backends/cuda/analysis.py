"""Which loops of a kernel-IR loop nest may run as independent GPU threads.

The kernel IR's schedule marks were written for a CPU (one `parallel` loop per nest, the
others serial), so the CUDA generator decides for itself which loops to spread over the
grid. A loop variable `v` of a nest is *independent* when no two iterations with
different values of `v` touch the same written byte, whatever the other loop variables
are. Then those iterations can run in any order or at once, the loop can be hoisted out
of the serial loops around it (loop interchange), and a loop whose body holds several
statements can be split into one loop per statement (loop distribution): in every case
each written byte is still touched by one sequence of statements in program order.

Writes are `Store`s; a buffer's accesses are compared in bytes of its storage (an alias
or an arena temp placed over another counts as the same memory, see `Storage`), so
in-place kernels are judged on what they really touch. Two sufficient tests, each on the
affine forms `sum c_i * x_i + c0` of the byte offsets of every access (loads and stores)
to the written storage:

  (A) all those accesses have one and the same affine form and element size, and the
      form is injective over the loop ranges (mixed-radix: sorted by |c|, every
      coefficient exceeds the span of all smaller terms), and involves `v`;
  (B) the index is a `Select` of affine alternatives or any affine form, every
      alternative of every access has the same coefficient C != 0 for `v`, and the bytes
      the other variables can reach span less than |C| (so iteration `v` stays inside a
      slab [C*v + lo, C*v + hi] that no other `v` reaches); a branch's guard narrows the
      reach of the sub-expressions it bounds: col2im's scatter into a padded window.

The status buffer (`Program.status`) is ignored: kernels only ever write an error code
into it, and any of several racing codes is a correct report.
Anything not understood (indices through loaded values, division) is dependent.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Iterable, Iterator

from ...ir import kernel as K

Affine = dict  # var name (or "" for the constant) -> int coefficient


def affine(e: K.Expr) -> Affine | None:
    """`e` as {var: coefficient, "": constant}, or None when it is not affine."""
    if isinstance(e, K.Const):
        if isinstance(e.value, bool) or not e.dtype.is_int:
            return None
        return {"": int(e.value)}
    if isinstance(e, K.Var):
        return {e.name: 1, "": 0}
    if isinstance(e, K.Cast) and e.dtype.is_int and e.x.dtype.is_int:
        return affine(e.x)
    if isinstance(e, K.Binary) and e.op in ("add", "sub", "mul") and e.dtype.is_int:
        a, b = affine(e.a), affine(e.b)
        if a is None or b is None:
            return None
        if e.op == "mul":
            if set(a) == {""}:
                a, b = b, a
            if set(b) != {""}:
                return None
            return {k: c * b[""] for k, c in a.items()}
        sign = 1 if e.op == "add" else -1
        out = dict(a)
        for k, c in b.items():
            out[k] = out.get(k, 0) + sign * c
        return out
    return None


def alternatives(e: K.Expr) -> list[Affine] | None:
    """The affine forms an index can take (one per `Select` branch), or None."""
    g = guarded_alternatives(e)
    return None if g is None else [f for f, _, _ in g]


def guarded_alternatives(e: K.Expr, guard: K.Expr | None = None
                         ) -> list[tuple[Affine, K.Expr, K.Expr | None]] | None:
    """(affine form, expression, condition under which it is taken or None) per branch."""
    if isinstance(e, K.Select):
        both = guard if guard is not None else None
        a = guarded_alternatives(e.a, e.cond if both is None else K.Binary("and", both, e.cond, e.cond.dtype))
        b = guarded_alternatives(e.b, guard)
        return None if a is None or b is None else a + b
    f = affine(e)
    return None if f is None else [(f, e, guard)]


def _constraints(cond: K.Expr | None, out: dict) -> dict:
    """Intervals that `cond` (a conjunction of comparisons with constants) puts on
    sub-expressions: {expression: (lo, hi)} (inclusive)."""
    if isinstance(cond, K.Binary) and cond.op == "and":
        _constraints(cond.a, out)
        _constraints(cond.b, out)
    elif isinstance(cond, K.Compare) and isinstance(cond.b, K.Const) and cond.a.dtype.is_int:
        c = int(cond.b.value)
        lo, hi = {"ge": (c, None), "gt": (c + 1, None), "le": (None, c), "lt": (None, c - 1),
                  "eq": (c, c)}.get(cond.op, (None, None))
        old_lo, old_hi = out.get(cond.a, (None, None))
        lo = lo if old_lo is None else (old_lo if lo is None else max(lo, old_lo))
        hi = hi if old_hi is None else (old_hi if hi is None else min(hi, old_hi))
        out[cond.a] = (lo, hi)
    return out


def guarded_bounds(e: K.Expr, extents: dict[str, int], fixed: dict[str, int],
                   cons: dict) -> tuple[int, int] | None:
    """Interval of an integer expression over the loop ranges (variables in `fixed` held
    at their value), narrowed where a sub-expression is constrained by the guard."""
    r: tuple[int, int] | None
    if isinstance(e, K.Var):
        if e.name in fixed:
            r = (fixed[e.name], fixed[e.name])
        elif e.name in extents:
            r = (0, max(extents[e.name] - 1, 0))
        else:
            return None
    elif isinstance(e, K.Const) and e.dtype.is_int:
        r = (int(e.value), int(e.value))
    elif isinstance(e, K.Cast) and e.dtype.is_int and e.x.dtype.is_int:
        r = guarded_bounds(e.x, extents, fixed, cons)
    elif isinstance(e, K.Binary) and e.op in ("add", "sub", "mul") and e.dtype.is_int:
        a, b = guarded_bounds(e.a, extents, fixed, cons), guarded_bounds(e.b, extents, fixed, cons)
        if a is None or b is None:
            return None
        if e.op == "add":
            r = (a[0] + b[0], a[1] + b[1])
        elif e.op == "sub":
            r = (a[0] - b[1], a[1] - b[0])
        else:
            ps = [x * y for x in a for y in b]
            r = (min(ps), max(ps))
    else:
        return None
    if e in cons:
        lo, hi = cons[e]
        r = (r[0] if lo is None else max(r[0], lo), r[1] if hi is None else min(r[1], hi))
    return r


def _scaled(f: Affine, scale: int, offset: int) -> Affine:
    out = {k: c * scale for k, c in f.items() if c}
    out[""] = f.get("", 0) * scale + offset
    return out


@dataclass(frozen=True)
class Storage:
    """Where a buffer's bytes live: (root, byte offset, byte size, element size)."""
    root: str
    offset: int
    nbytes: int
    itemsize: int

    def overlaps(self, other: "Storage") -> bool:
        return (self.root == other.root and self.offset < other.offset + other.nbytes
                and other.offset < self.offset + self.nbytes)


def storage_map(program: K.Program) -> dict[str, Storage]:
    """Every buffer's storage: external buffers are their own root; temps live in the arena
    at their planned offset; aliases chain to their base."""
    out: dict[str, Storage] = {}

    def resolve(name: str, depth: int = 0) -> tuple[str, int]:
        if depth > 64:
            raise ValueError(f"alias cycle through buffer {name!r}")
        if name in program.aliases:
            base, off = program.aliases[name]
            root, boff = resolve(base, depth + 1)
            return root, boff + int(off) * program.buffers[base].dtype.itemsize
        b = program.buffers[name]
        if b.kind == "temp":
            return "<arena>", program.arena[name]
        return name, 0

    for name, b in program.buffers.items():
        root, off = resolve(name)
        out[name] = Storage(root, off, b.size * b.dtype.itemsize, b.dtype.itemsize)
    return out


# -- walking statements --------------------------------------------------------------------

stmt_exprs = K.stmt_exprs  # the expressions a statement evaluates (ir/kernel.py)


def walk_stmts(stmts: Iterable[K.Stmt]) -> Iterator[K.Stmt]:
    for s in stmts:
        yield s
        if isinstance(s, K.For):
            yield from walk_stmts(s.body)


def loads(e: K.Expr) -> Iterator[K.Load]:
    for x in K.walk_exprs(e):
        if isinstance(x, K.Load):
            yield x


def loop_extents(stmts: Iterable[K.Stmt]) -> dict[str, int]:
    return {s.var.name: s.extent for s in walk_stmts(stmts) if isinstance(s, K.For)}


def local_names(e: K.Expr) -> set[str]:
    return {x.name for x in K.walk_exprs(e) if isinstance(x, K.LocalRef)}


# -- independence ---------------------------------------------------------------------------

@dataclass
class Access:
    buffer: str
    index: K.Expr
    store: bool


def accesses(stmts: Iterable[K.Stmt]) -> list[Access]:
    out: list[Access] = []
    for s in walk_stmts(stmts):
        for e in stmt_exprs(s):
            out.extend(Access(ld.buffer, ld.index, False) for ld in loads(e))
        if isinstance(s, K.Store):
            out.append(Access(s.buffer, s.index, True))
        if isinstance(s, K.Gemm):  # a GEMM inside a nest: its matrices, coarsely
            out.extend([Access(s.a, K.Const(0, K.i64), False), Access(s.b, K.Const(0, K.i64), False),
                        Access(s.c, K.Const(0, K.i64), True), Access(s.c, K.Const(1, K.i64), True)])
    return out


class Dependence:
    """Answers `independent(v)` for the loop variables of one statement list."""

    def __init__(self, stmts: list[K.Stmt], storage: dict[str, Storage], extents: dict[str, int],
                 status: str | None, accumulators: Iterable[str] = ()) -> None:
        self.extents = extents
        acc = [a for a in accesses(stmts) if a.buffer != status]
        written = [storage[a.buffer] for a in acc if a.store]
        # the accesses to each written storage (accesses overlapping any written range)
        self.groups: list[list[tuple[Access, Storage]]] = []
        for w in written:
            group = [(a, storage[a.buffer]) for a in acc if storage[a.buffer].overlaps(w)]
            if group and group not in self.groups:  # (an empty buffer is never written)
                self.groups.append(group)
        # locals assigned in the list but declared outside it carry values between iterations
        declared = {s.local.name for s in walk_stmts(stmts) if isinstance(s, K.Declare)}
        declared |= set(accumulators)  # folded by a reduction, which handles them itself
        self.carried = any(isinstance(s, K.Assign) and s.local.name not in declared
                           for s in walk_stmts(stmts))
        self.opaque = any(isinstance(s, K.Gemm) for s in walk_stmts(stmts))

    def independent(self, v: str) -> bool:
        if self.carried or self.opaque:
            return False
        return all(self._same_form(g, v) or self._slab(g, v) for g in self.groups)

    def _byte_forms(self, group) -> list[list[Affine]] | None:
        out = []
        for a, st in group:
            alts = alternatives(a.index)
            if alts is None:
                return None
            out.append([_scaled(f, st.itemsize, st.offset) for f in alts])
        return out

    def _same_form(self, group, v: str) -> bool:
        forms = self._byte_forms(group)
        if forms is None or any(len(f) != 1 for f in forms):
            return False
        first = forms[0][0]
        if any(f[0] != first for f in forms) or len({st.itemsize for _, st in group}) != 1:
            return False
        if not first.get(v) or self.extents.get(v, 1) <= 1:
            return False
        terms = []
        for k, c in first.items():
            if k == "":
                continue
            if k not in self.extents:
                return False
            if self.extents[k] > 1:
                terms.append((abs(c), self.extents[k]))
        span = 0
        for c, e in sorted(terms):
            if c <= span:
                return False
            span += c * (e - 1)
        itemsize = group[0][1].itemsize
        # distinct element starts, all multiples of the element size apart
        return all(c % itemsize == 0 for c, _ in terms)

    def _slab(self, group, v: str) -> bool:
        """Test (B): every branch of every access is C*v + rest with one C, and the bytes
        `rest` reaches (within the loop ranges, narrowed by the guard of a `Select` branch:
        the in-bounds test of a padded window) span less than |C|."""
        coef = None
        lo, hi = None, None
        for a, st in group:
            alts = guarded_alternatives(a.index)
            if alts is None:
                return False
            for f, expr, guard in alts:
                c = f.get(v, 0) * st.itemsize
                if c == 0 or (coef is not None and c != coef):
                    return False
                coef = c
                r = guarded_bounds(expr, self.extents, {v: 0}, _constraints(guard, {}))
                if r is None:
                    return False
                flo, fhi = st.offset + r[0] * st.itemsize, st.offset + r[1] * st.itemsize + st.itemsize - 1
                lo = flo if lo is None else min(lo, flo)
                hi = fhi if hi is None else max(hi, fhi)
        return coef is not None and hi - lo < abs(coef)


# -- reductions -----------------------------------------------------------------------------

COMBINE_OPS = ("add", "max", "min")


@dataclass
class Reduction:
    """A perfect loop nest whose body folds values into accumulators declared before it:
    `acc = combine(acc, x)` with an associative, commutative combine."""
    loops: list[K.For]          # outermost first
    body: list[K.Stmt]          # the innermost body
    accumulators: dict[str, str]  # local name -> combine op

    @property
    def count(self) -> int:
        return prod(l.extent for l in self.loops)


def perfect_nest(s: K.For) -> tuple[list[K.For], list[K.Stmt]]:
    loops = [s]
    while len(loops[-1].body) == 1 and isinstance(loops[-1].body[0], K.For):
        loops.append(loops[-1].body[0])
    return loops, loops[-1].body


def as_reduction(s: K.Stmt, outer_locals: set[str]) -> Reduction | None:
    """`s` as a Reduction, or None. Every local it assigns but does not declare must be an
    accumulator declared outside (in `outer_locals`), assigned only as `acc op x` with x
    free of accumulators."""
    if not isinstance(s, K.For):
        return None
    loops, body = perfect_nest(s)
    if loops[-1].mark != "reduce":
        return None
    if any(isinstance(x, (K.For, K.Gemm)) for x in body):
        return None
    declared = {x.local.name for x in body if isinstance(x, K.Declare)}
    accs: dict[str, str] = {}
    for x in body:
        if not isinstance(x, K.Assign):
            continue
        name = x.local.name
        if name in declared:
            continue
        v = x.value
        if (name not in outer_locals or not isinstance(v, K.Binary) or v.op not in COMBINE_OPS
                or v.a != x.local or v.dtype != x.local.dtype or x.local.dtype.is_bool):
            return None
        if accs.setdefault(name, v.op) != v.op:
            return None
        accs[name] = v.op
    if not accs:
        return None
    for x in body:  # accumulators are read only by their own combine
        for e in stmt_exprs(x):
            roots = [e.b] if isinstance(x, K.Assign) and x.local.name in accs else [e]
            if any(local_names(r) & set(accs) for r in roots):
                return None
    return Reduction(loops, body, accs)


# -- whether two loop nests touch disjoint bytes ----------------------------------------------

def _split_digit(f: Affine, m: int, extents: dict[str, int]) -> tuple[int, int] | None:
    """Split the byte form f at modulus m: when every term with a coefficient >= m is a
    multiple of m and the smaller terms plus the constant's remainder stay inside [0, m),
    f div m = (high terms) / m + q exactly. Returns (q, g) with g the gcd of the high
    coefficients / m (0 when there are none), or None when f does not split at m."""
    from math import gcd
    q, r = divmod(f.get("", 0), m)
    lo = hi = r
    g = 0
    for k, c in f.items():
        if k == "" or c == 0 or extents.get(k, 1) <= 1:
            continue
        if k not in extents:
            return None
        if abs(c) >= m:
            if c % m:
                return None
            g = gcd(g, abs(c) // m)
        else:
            span = c * (extents[k] - 1)
            lo, hi = lo + min(0, span), hi + max(0, span)
    if lo < 0 or hi >= m:
        return None
    return q, g


def disjoint_forms(fa: Affine, fb: Affine, ea: dict[str, int], eb: dict[str, int]) -> bool:
    """Whether the byte forms fa (over loop ranges ea) and fb (over eb) can never meet.
    Sufficient test: some modulus m splits both (see _split_digit) and their high digits
    differ modulo the gcd of the high coefficients (or exactly, when there are none), e.g.
    the row offsets kh*KW + kw of two im2col nests. Moduli tried: every coefficient, and
    the span of the terms below each coefficient plus the smallest one (a row's bytes)."""
    cands: set[int] = set()
    for f, e in ((fa, ea), (fb, eb)):
        terms = sorted((abs(c), e.get(k, 1)) for k, c in f.items() if k and c and e.get(k, 1) > 1)
        span = 0
        for c, n in terms:  # a coefficient, or just past the span of the smaller terms (a row)
            cands.update((c, span + terms[0][0]))
            span += c * (n - 1)
    for m in sorted(x for x in cands if x > 0):
        sa, sb = _split_digit(fa, m, ea), _split_digit(fb, m, eb)
        if sa is None or sb is None:
            continue
        (qa, ga), (qb, gb) = sa, sb
        from math import gcd
        g = gcd(ga, gb)
        if g == 0 and qa != qb:
            return True
        if g > 1 and (qa - qb) % g:
            return True
    return False


def independent_nests(a: list[K.Stmt], b: list[K.Stmt], storage: dict[str, Storage],
                      status: str | None) -> bool:
    """True when no byte one of the statement lists writes is touched by the other, so
    they may run at the same time: different storage, or provably disjoint byte forms."""
    ea, eb = loop_extents(a), loop_extents(b)
    acc_a = [x for x in accesses(a) if x.buffer != status]
    acc_b = [x for x in accesses(b) if x.buffer != status]
    for writes, others, ew, eo in ((acc_a, acc_b, ea, eb), (acc_b, acc_a, eb, ea)):
        for w in writes:
            if not w.store:
                continue
            sw = storage[w.buffer]
            for o in others:
                so = storage[o.buffer]
                if not sw.overlaps(so):
                    continue
                alts_w, alts_o = alternatives(w.index), alternatives(o.index)
                if alts_w is None or alts_o is None:
                    return False
                for fw in alts_w:
                    for fo in alts_o:
                        bw = _scaled(fw, sw.itemsize, sw.offset)
                        bo = _scaled(fo, so.itemsize, so.offset)
                        if sw.itemsize != so.itemsize or not disjoint_forms(bw, bo, ew, eo):
                            return False
    return True
