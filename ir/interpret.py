"""Kernel-IR interpreter: a third execution of every lowered program, in numpy.

The reference interpreter runs the *graph*, the code generators run the *program*; this
runs the program without generating code, so that when the generated code gives a wrong
answer the differential fuzzer and translation validation can tell whether the lowering
(the program already computes it) or the code generator (only the native code does) is to
blame. It is built for exactness, not speed (the graphs it checks are tiny).

Memory is modelled as native code sees it (backends/llvm/runtime.py, codegen.py):
    * one byte array per external buffer (input, param, const, output, the status flags)
      and ONE byte array for the arena, with every temp a view at its `Program.arena` byte
      offset: a memory plan that lets two live temps overlap gives the wrong answer here
      exactly as it would natively;
    * aliases are views of their base at `(base, element offset)`, chains resolved;
    * a parameter updated in place (`updates[name] == params[name]`) is written in its
      buffer; inputs, parameters and constants are copied in first, so the caller's arrays
      are never written;
    * the arena and the outputs start filled with 0xFF bytes (NaN for floats, -1 for ints,
      true for bools): reading memory nobody wrote shows up instead of reading stale zeros;
    * after each kernel a non-zero status slot 0 stops the call with KernelRuntimeError and
      the registered message, as the LLVM runtime raises its KernelError;
    * every load, store and GEMM operand is bounds-checked against its buffer: an index
      outside is memory corruption in native code, here an OutOfBoundsError naming the
      kernel, the buffer, the index and the loop variables.

Scalar semantics (f16 in f32, flooring integer division, saturating float-to-int casts,
NaN-propagating max/min, transcendental functions through float64) are the LLVM
generator's: ir/interpret_scalar.py. Memory (roots, views, lane conflicts):
ir/interpret_memory.py.

Speed: a nest of perfectly nested loops (a `For` whose body is one `For`, and so on) runs
as one numpy evaluation over all its iterations at once ("lanes"), with loops inside the
nest's body run in lock-step for every lane (extents are static, so control flow is the
same in every lane). This is exactly the sequential meaning when no lane depends on
another. Statically: no GEMM, and the body only assigns locals it declares itself before
reading them (a local carried from one iteration to the next stays sequential). Dynamically,
since indices can be data: every access to memory the nest writes is recorded (root byte
addresses and lane), and if any byte written by one lane is read by another lane, or
written by several lanes with different values, the memory is restored from a snapshot and
the loop runs sequentially (its inner nests may still run as lanes). Any interpreter error
inside a lane evaluation also falls back, so errors are reported as the sequential run
meets them.
"""
from __future__ import annotations

from math import prod
from typing import Any, Mapping, Sequence

import numpy as np

from . import kernel as K
from .dtypes import DType, bool_, f32, i64
from .errors import KernelInterpretError, KernelRuntimeError, OutOfBoundsError
from .interpret_memory import ARENA, POISON_BYTE, _accesses_conflict, _Memory
from .interpret_scalar import (binary, compare, compute_dtype, const_value, convert, memory_dtype,
                               promote, unary)

__all__ = ["run_program", "KernelInterpretError", "OutOfBoundsError", "ARENA", "POISON_BYTE",
           "MAX_LANES", "binary", "compare", "compute_dtype", "const_value", "convert",
           "memory_dtype", "promote", "unary"]

MAX_LANES = 1 << 20  # a nest with more iterations evaluates its outer loops sequentially


# -- execution ---------------------------------------------------------------------------------

def _local_reads(e) -> list[str]:
    return [x.name for x in K.walk_exprs(e) if isinstance(x, K.LocalRef)]


class _Lanes:
    """The state of a lane-parallel evaluation: its shape, lane numbers, the roots it
    writes (whose accesses are recorded) and the records."""

    def __init__(self, shape: tuple[int, ...], watched: set[str]) -> None:
        self.shape = shape
        self.ids = np.arange(prod(shape), dtype=np.int64)
        self.watched = watched
        self.records: list = []


class _Interpreter:
    """Runs kernels over a _Memory: loop variables and locals of the running kernel, and
    the lane evaluation in progress (see the module docstring)."""

    def __init__(self, program: K.Program, memory: _Memory, use_lanes: bool = True) -> None:
        self.p = program
        self.use_lanes = use_lanes
        self.mem = memory
        self.kernel: K.Kernel | None = None
        self.vars: dict[str, Any] = {}
        self.locals: dict[str, tuple[DType, Any]] = {}
        self.reduce_depth = 0
        self.in_reduction = False  # evaluating an Assign inside a reduce loop
        self.lanes: _Lanes | None = None
        self._regions: dict[int, list[K.For] | None] = {}  # per For (by id): its lane nest

    # .. errors ..
    def _where(self) -> str:
        scalars = [f"{n}={int(v)}" for n, v in self.vars.items() if np.ndim(v) == 0]
        return f" (loop variables {', '.join(scalars)})" if scalars else ""

    def _check(self, buffer: str, idx, what: str) -> None:
        size = self.p.buffers[buffer].size
        bad = (idx < 0) | (idx >= size)
        if np.any(bad):
            first = int(np.broadcast_to(idx, np.shape(bad))[bad].flat[0]) if np.ndim(bad) else int(idx)
            raise OutOfBoundsError(f"{what} {buffer}[{first}] is outside the buffer's {size} "
                                   f"elements{self._where()}")

    def _buffer(self, name: str, what: str) -> K.Buffer:
        b = self.p.buffers.get(name)
        if b is None:
            raise KernelInterpretError(f"{what} unknown buffer {name!r}")
        return b

    # .. expressions ..
    def index(self, e: K.Expr, memo: dict):
        if e.dtype.is_float:
            raise KernelInterpretError(f"floating-point index expression {e}")
        return np.asarray(self.eval(e, memo)).astype(np.int64)[()]

    def load(self, buffer: str, idx, what: str = "load from"):
        """Elements of buffer at idx (checked, recorded in a lane evaluation), in its
        compute dtype."""
        b = self._buffer(buffer, what)
        self._check(buffer, idx, what)
        v = self.mem.views[buffer][idx]
        lanes = self.lanes
        if lanes is not None:
            root, off = self.mem.place[buffer]
            if root in lanes.watched:
                flat = np.broadcast_to(idx, lanes.shape).reshape(-1)
                lanes.records.append((root, off + flat * b.dtype.itemsize, b.dtype.itemsize, lanes.ids, None))
        if b.dtype.is_bool:
            return np.not_equal(v, 0)
        return v.astype(np.float32) if b.dtype.name == "f16" else v

    def eval(self, e: K.Expr, memo: dict):
        hit = memo.get(id(e))
        if hit is None:
            hit = memo[id(e)] = self._eval(e, memo)
        return hit

    def _eval(self, e: K.Expr, memo: dict):
        if isinstance(e, K.Const):
            return const_value(e.value, e.dtype)
        if isinstance(e, K.Var):
            v = self.vars.get(e.name)
            if v is None:
                raise KernelInterpretError(f"loop variable {e.name!r} used outside its loop")
            return convert(v, i64, e.dtype)
        if isinstance(e, K.LocalRef):
            if e.name not in self.locals:
                raise KernelInterpretError(f"use of undeclared local ${e.name}")
            dt, v = self.locals[e.name]
            return convert(v, dt, e.dtype)
        if isinstance(e, K.Load):
            b = self._buffer(e.buffer, "load from")
            return convert(self.load(e.buffer, self.index(e.index, memo)), b.dtype, e.dtype)
        if isinstance(e, K.Cast):
            return convert(self.eval(e.x, memo), e.x.dtype, e.dtype)
        if isinstance(e, K.Unary):
            return unary(e.op, convert(self.eval(e.x, memo), e.x.dtype, e.dtype), e.dtype)
        if isinstance(e, K.Binary):
            a = convert(self.eval(e.a, memo), e.a.dtype, e.dtype)
            b = convert(self.eval(e.b, memo), e.b.dtype, e.dtype)
            return binary(e.op, a, b, e.dtype, self.in_reduction)
        if isinstance(e, K.Compare):
            dt = e.a.dtype if e.b.dtype == e.a.dtype else promote(e.a.dtype, e.b.dtype)
            return compare(e.op, convert(self.eval(e.a, memo), e.a.dtype, dt),
                           convert(self.eval(e.b, memo), e.b.dtype, dt))
        if isinstance(e, K.Select):
            c = convert(self.eval(e.cond, memo), e.cond.dtype, bool_)
            a = convert(self.eval(e.a, memo), e.a.dtype, e.dtype)
            b = convert(self.eval(e.b, memo), e.b.dtype, e.dtype)
            return np.where(c, a, b).astype(compute_dtype(e.dtype))[()]
        raise KernelInterpretError(f"unknown expression {type(e).__name__}: {e}")

    # .. statements ..
    def run_kernel(self, k: K.Kernel) -> None:
        self.kernel = k
        self.vars, self.locals, self.reduce_depth = {}, {}, 0
        try:
            self.exec_body(k.body)
        except KernelInterpretError as e:
            if e.kernel is not None:
                raise
            raise type(e)(e.detail, kernel=k) from None

    def exec_body(self, stmts: list) -> None:
        for s in stmts:
            if isinstance(s, K.For):
                self.exec_for(s)
            elif isinstance(s, K.Store):
                self.exec_store(s, {})
            elif isinstance(s, K.Declare):
                dt = s.local.dtype
                self.locals[s.local.name] = (dt, convert(self.eval(s.init, {}), s.init.dtype, dt))
            elif isinstance(s, K.Assign):
                self.exec_assign(s)
            elif isinstance(s, K.Gemm):
                self.exec_gemm(s)
            else:
                raise KernelInterpretError(f"unknown statement {type(s).__name__}")

    def exec_store(self, s: K.Store, memo: dict) -> None:
        b = self._buffer(s.buffer, "store to")
        idx = self.index(s.index, memo)
        val = convert(self.eval(s.value, memo), s.value.dtype, b.dtype)
        self._check(s.buffer, idx, "store to")
        mval = np.asarray(val).astype(memory_dtype(b.dtype))
        view = self.mem.views[s.buffer]
        lanes = self.lanes
        if lanes is None:
            view[idx] = mval
            return
        flat_idx = np.broadcast_to(idx, lanes.shape).reshape(-1)
        flat_val = np.ascontiguousarray(np.broadcast_to(mval, lanes.shape).reshape(-1))
        view[flat_idx] = flat_val
        root, off = self.mem.place[s.buffer]
        lanes.records.append((root, off + flat_idx * b.dtype.itemsize, b.dtype.itemsize, lanes.ids,
                              flat_val.view(np.uint8).reshape(-1, b.dtype.itemsize)))

    def exec_assign(self, s: K.Assign) -> None:
        name = s.local.name
        if name not in self.locals:
            raise KernelInterpretError(f"assignment to undeclared local ${name}")
        dt = self.locals[name][0]
        self.in_reduction = self.reduce_depth > 0
        try:
            val = convert(self.eval(s.value, {}), s.value.dtype, dt)
        finally:
            self.in_reduction = False
        self.locals[name] = (dt, val)

    def exec_for(self, s: K.For) -> None:
        if s.extent <= 0:
            return
        if self.lanes is None and self.use_lanes:
            nest = self.lane_nest(s)
            if nest is not None and self.run_lanes(nest):
                return
        saved = self.vars.get(s.var.name)
        self.reduce_depth += s.mark == "reduce"
        try:
            for t in range(s.extent):
                self.vars[s.var.name] = np.int64(t)
                self.exec_body(s.body)
        finally:
            self.reduce_depth -= s.mark == "reduce"
            if saved is None:
                self.vars.pop(s.var.name, None)
            else:
                self.vars[s.var.name] = saved

    # .. lane-parallel nests ..
    def lane_nest(self, s: K.For) -> list[K.For] | None:
        """The perfectly nested loops from s down that may run as lanes (static checks;
        see the module docstring), or None."""
        key = id(s)
        if key not in self._regions:
            nest = [s]
            while (len(nest[-1].body) == 1 and isinstance(nest[-1].body[0], K.For)
                   and nest[-1].body[0].extent > 0):
                nest.append(nest[-1].body[0])
            while len(nest) > 1 and prod(f.extent for f in nest) > MAX_LANES:
                nest.pop()
            lanes = prod(f.extent for f in nest)
            ok = 1 < lanes <= MAX_LANES and _lane_independent(nest[-1].body)
            self._regions[key] = nest if ok else None
        return self._regions[key]

    def run_lanes(self, nest: list[K.For]) -> bool:
        """Evaluate a nest over all its iterations at once; False (memory and locals as
        they were) when lanes turned out to depend on each other."""
        body = nest[-1].body
        watched = {self.mem.place[st.buffer][0] for st in K.walk_stmts(body)
                   if isinstance(st, K.Store) and st.buffer in self.mem.place}
        snapshot = {r: self.mem.roots[r].copy() for r in watched}
        saved_vars, saved_locals, saved_depth = dict(self.vars), dict(self.locals), self.reduce_depth
        shape = tuple(f.extent for f in nest)
        for axis, f in enumerate(nest):
            lane_shape = [1] * len(nest)
            lane_shape[axis] = f.extent
            self.vars[f.var.name] = np.arange(f.extent, dtype=np.int64).reshape(lane_shape)
        self.reduce_depth += sum(f.mark == "reduce" for f in nest)
        self.lanes = lanes = _Lanes(shape, watched)
        try:
            self.exec_body(body)
            ok = not _accesses_conflict(lanes.records)
        except KernelInterpretError:
            ok = False
        finally:
            self.lanes = None
            self.reduce_depth = saved_depth
        after = self.locals
        self.vars, self.locals = saved_vars, saved_locals
        if not ok:
            for r, data in snapshot.items():
                self.mem.roots[r][...] = data
            self._regions[id(nest[0])] = None  # sequential from now on (always exact)
            return False
        last = (-1,) * len(shape)
        for name in {st.local.name for st in K.walk_stmts(body) if isinstance(st, K.Declare)}:
            if name in after:  # after a loop a local holds its last iteration's value
                dt, v = after[name]
                self.locals[name] = (dt, np.broadcast_to(v, shape)[last] if np.ndim(v) else v)
        return True

    # .. GEMM ..
    def exec_gemm(self, g: K.Gemm) -> None:
        for n in (g.a, g.b, g.c):
            self._buffer(n, "gemm uses")
        if min(g.m, g.n, g.batch) <= 0:
            return
        da, db, dc = (self.p.buffers[n].dtype for n in (g.a, g.b, g.c))
        acc_dt = i64 if dc.is_bool else f32 if dc.name == "f16" else dc
        lda = g.lda or (g.m if g.trans_a else g.k)
        ldb = g.ldb or (g.k if g.trans_b else g.n)
        ldc = g.ldc or g.n

        def offset(o) -> int:
            return int(o) if isinstance(o, int) else int(self.index(o, {}))
        off_a, off_b, off_c = offset(g.offset_a), offset(g.offset_b), offset(g.offset_c)
        i = np.arange(g.m, dtype=np.int64)[:, None]
        j = np.arange(g.n, dtype=np.int64)[None, :]
        pa = np.arange(g.k, dtype=np.int64)[None, :]   # A's column / op(B)'s row
        pb = np.arange(g.k, dtype=np.int64)[:, None]
        alpha = getattr(g, "alpha", None)
        for batch in range(g.batch):
            bterm = batch if g.batch > 1 else 0
            base_a = off_a + bterm * g.stride_a
            base_b = off_b + bterm * g.stride_b
            base_c = off_c + bterm * g.stride_c
            ia = base_a + (pa * lda + i if g.trans_a else i * lda + pa)
            if g.b_panels:
                w = g.b_panels
                ib = base_b + (j // w) * (g.k * w) + pb * w + j % w
            else:
                ib = base_b + (j * ldb + pb if g.trans_b else pb * ldb + j)
            ic = base_c + i * ldc + j
            a = convert(self.load(g.a, ia, "gemm operand A of"), da, acc_dt)
            b = convert(self.load(g.b, ib, "gemm operand B of"), db, acc_dt)
            self._check(g.c, ic, "gemm result")
            acc = np.matmul(np.asarray(a), np.asarray(b)).astype(compute_dtype(acc_dt))
            if alpha is not None and alpha != 1:
                acc = acc * const_value(alpha, acc_dt)
            if g.accumulate:
                acc = convert(self.load(g.c, ic, "gemm accumulator"), dc, acc_dt) + acc
            result, rdt = acc, acc_dt
            if g.epilogue is not None:
                result, rdt = self.epilogue(g.epilogue, acc, acc_dt, i, j), g.epilogue.dtype
            val = np.broadcast_to(convert(result, rdt, dc), (g.m, g.n))
            self.mem.views[g.c][ic] = np.asarray(val).astype(memory_dtype(dc))

    def epilogue(self, e: K.Expr, acc, acc_dt: DType, i, j):
        """A GEMM epilogue over the whole matrix: LocalRef('acc') the accumulated values,
        GEMM_ROW and GEMM_COL the row and column."""
        row, col = K.GEMM_ROW.name, K.GEMM_COL.name
        saved = {n: self.vars.get(n) for n in (row, col)}
        saved_acc = self.locals.get("acc")
        self.vars[row], self.vars[col] = i, j
        self.locals["acc"] = (acc_dt, acc)
        try:
            return self.eval(e, {})
        finally:
            for n, v in saved.items():
                if v is None:
                    self.vars.pop(n, None)
                else:
                    self.vars[n] = v
            if saved_acc is None:
                self.locals.pop("acc", None)
            else:
                self.locals["acc"] = saved_acc


def _lane_independent(body: list) -> bool:
    """Static half of the lane check: no GEMM, and every local the body assigns is
    declared by the body before it is read or assigned (nothing carried between
    iterations through locals)."""
    everywhere = {s.local.name for s in K.walk_stmts(body) if isinstance(s, K.Declare)}
    declared: set[str] = set()

    def visit(stmts) -> bool:
        for s in stmts:
            if isinstance(s, K.Gemm):
                return False
            if isinstance(s, K.For):
                if not visit(s.body):
                    return False
                continue
            reads = [n for e in K.stmt_exprs(s) for n in _local_reads(e)]
            if any(n in everywhere and n not in declared for n in reads):
                return False
            if isinstance(s, K.Assign) and s.local.name not in declared:
                return False
            if isinstance(s, K.Declare):
                declared.add(s.local.name)
        return True
    return visit(body)


# -- the entry point ---------------------------------------------------------------------------

def _check_kind(what: str, arr: np.ndarray, dt: DType) -> None:
    kind = arr.dtype.kind
    if not ((dt.is_float and kind == "f") or (dt.is_int and kind in "iu") or (dt.is_bool and kind == "b")):
        raise KernelInterpretError(f"{what}: expected {dt} data, got {arr.dtype}")


def _input_buffers(program: K.Program, inputs) -> dict[str, Any]:
    if not isinstance(inputs, Mapping):
        seq = list(inputs)
        if len(seq) != len(program.inputs):
            raise KernelInterpretError(f"program {program.name!r} has {len(program.inputs)} inputs "
                                       f"({', '.join(program.inputs)}), got {len(seq)} arrays")
        return dict(zip(program.inputs, seq))
    bound: dict[str, Any] = {}
    for key, arr in inputs.items():
        # a graph input's name also finds its buffer (the lowering names it in_<name>)
        name = key if key in program.inputs else f"in_{key}"
        if name not in program.inputs:
            raise KernelInterpretError(f"program {program.name!r} has no input {key!r} "
                                       f"(its input buffers: {', '.join(program.inputs) or 'none'})")
        bound[name] = arr
    missing = [b for b in program.inputs if b not in bound]
    if missing:
        raise KernelInterpretError(f"program {program.name!r}: no array for input buffer"
                                   f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return bound


def run_program(program: K.Program, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                params: Mapping[str, np.ndarray], *, poison: bool = True, lanes: bool = True
                ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Run a kernel-IR program on numpy arrays: the program's own meaning, independent of
    any code generator (see the module docstring for the memory model).

    inputs: one array per `program.inputs` buffer, in order, or a mapping from those
    buffer names (or the graph input names they were lowered from) to arrays. params: an
    array per parameter name of `program.params`. Arrays are copied in, never written.
    Returns the outputs in `program.outputs` order as flat arrays of their buffers, and
    the new value of each parameter of `program.updates` (shaped like the array given for
    it). poison: start the arena and outputs as 0xFF bytes rather than zeros. lanes=False
    runs every loop sequentially (slow; for checking that lane evaluation changes nothing).
    Raises KernelRuntimeError when a kernel flags bad data in `program.status`,
    OutOfBoundsError for an access outside a buffer, KernelInterpretError for a program it
    cannot run."""
    p = program
    mem = _Memory(p, poison)
    for name, arr in _input_buffers(p, inputs).items():
        arr = np.asarray(arr)
        _check_kind(f"input {name!r}", arr, p.buffers[name].dtype)
        mem.fill(name, arr)
    unknown = sorted(set(params) - set(p.params))
    if unknown:
        raise KernelInterpretError(f"program {p.name!r} has no parameter {unknown[0]!r} "
                                   f"(it has {', '.join(p.params) or 'none'})")
    for pname, buf in p.params.items():
        if pname not in params:
            raise KernelInterpretError(f"program {p.name!r}: no array for parameter {pname!r}")
        arr = np.asarray(params[pname])
        _check_kind(f"parameter {pname!r}", arr, p.buffers[buf].dtype)
        mem.fill(buf, arr)
    for name in p.external():
        if p.buffers[name].kind == "const":
            if name not in p.constants:
                raise KernelInterpretError(f"constant buffer {name!r} has no data")
            mem.fill(name, np.asarray(p.constants[name]))
    if p.status is not None:
        mem.views[p.status][...] = 0
    interp = _Interpreter(p, mem, lanes)
    with np.errstate(all="ignore"):
        for k in p.kernels:
            interp.run_kernel(k)
            if p.status is not None:
                code = int(mem.views[p.status][0])
                if code:
                    raise KernelRuntimeError(p.errors[code - 1] if 0 < code <= len(p.errors)
                                             else f"compiled kernel reported error code {code}")
    outputs = [mem.read(name) for name in p.outputs]
    updates = {}
    for pname, buf in p.updates.items():
        value = mem.read(buf)
        shape = np.shape(params[pname]) if pname in params else value.shape
        updates[pname] = value.reshape(shape) if prod(shape) == value.size else value
    return outputs, updates
