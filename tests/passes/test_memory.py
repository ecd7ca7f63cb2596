"""Memory planning (passes/memory.py) and in-place kernels (passes/inplace.py).

The plan's invariants are re-checked here with code of the test's own: liveness from the
kernels' statements, no two temps live at once sharing a byte, aligned offsets inside the
arena, and for every in-place rewrite the conditions that make it correct (a temp input,
its storage dead after the kernel, same dtype and size, and — by evaluating the index
expressions over the whole iteration space — every iteration reading the input only at
the element it writes, each element by one iteration).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.compile import prepare
from graphc.ir import kernel as K
from graphc.ir.dtypes import f32, i32
from graphc.passes.inplace import inplace_safe
from graphc.passes.lower import lower
from tests.examples import load
from graphc.passes.memory import ARENA_ALIGN, naive_layout, plan_memory, plan_program
from tests.ir.random_graphs import build_random_graph

needs_llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")




# -- the test's own view of a program ----------------------------------------------------------

EXPRS = (K.Const, K.Var, K.LocalRef, K.Load, K.Unary, K.Binary, K.Compare, K.Select, K.Cast)


def _exprs(e):
    yield e
    for f in ("x", "a", "b", "cond", "index"):
        sub = getattr(e, f, None)
        if isinstance(sub, EXPRS):
            yield from _exprs(sub)


def _sites(stmts, loops=()):
    """(statement list, position, statement, enclosing loops) for every non-loop statement."""
    for pos, s in enumerate(stmts):
        if isinstance(s, K.For):
            yield from _sites(s.body, loops + (s,))
        else:
            yield stmts, pos, s, loops


def _stmt_exprs(s):
    if isinstance(s, K.Store):
        return [s.index, s.value]
    if isinstance(s, K.Declare):
        return [s.init]
    if isinstance(s, K.Assign):
        return [s.value]
    if isinstance(s, K.Gemm):
        return [e for e in (s.offset_a, s.offset_b, s.offset_c, s.epilogue) if isinstance(e, EXPRS)]
    return []


def touched(k: K.Kernel) -> set[str]:
    out = set(k.reads) | set(k.writes)
    for _, _, s, _ in _sites(k.body):
        if isinstance(s, K.Store):
            out.add(s.buffer)
        if isinstance(s, K.Gemm):
            out |= {s.a, s.b, s.c}
        for e in _stmt_exprs(s):
            out |= {x.buffer for x in _exprs(e) if isinstance(x, K.Load)}
    return out


def root(aliases: dict, name: str) -> str:
    while name in aliases:
        name = aliases[name][0]
    return name


def byte_offset(p: K.Program, aliases: dict, name: str) -> int:
    off = 0
    while name in aliases:
        base, o = aliases[name]
        off += o * p.buffers[base].dtype.itemsize
        name = base
    return off


def nbytes(b: K.Buffer) -> int:
    return b.size * b.dtype.itemsize


def check_plan(p: K.Program) -> int:
    """Asserts the arena invariants of p; returns the number of conflicting slot pairs
    checked (so callers can see the check was not vacuous)."""
    slots = [n for n, b in p.buffers.items() if b.kind == "temp" and n not in p.aliases]
    life: dict[str, list[int]] = {}
    for i, k in enumerate(p.kernels):
        for b in touched(k):
            if b in p.buffers:
                r = root(p.aliases, b)
                if r in slots:
                    life.setdefault(r, [i, i])[1] = i
    for n in slots:
        assert n in p.arena, f"temp {n} has no arena offset"
        off = p.arena[n]
        assert off % ARENA_ALIGN == 0, (n, off)
        assert 0 <= off and off + nbytes(p.buffers[n]) <= p.arena_bytes, (n, off, p.arena_bytes)
    for v in p.aliases:  # a view lies inside its storage
        r = root(p.aliases, v)
        assert byte_offset(p, p.aliases, v) + nbytes(p.buffers[v]) <= nbytes(p.buffers[r]), v
    pairs = 0
    for a, b in itertools.combinations([n for n in slots if n in life], 2):
        (s1, e1), (s2, e2) = life[a], life[b]
        if s1 <= e2 and s2 <= e1:
            pairs += 1
            lo1, hi1 = p.arena[a], p.arena[a] + nbytes(p.buffers[a])
            lo2, hi2 = p.arena[b], p.arena[b] + nbytes(p.buffers[b])
            assert hi1 <= lo2 or hi2 <= lo1, f"{a} [{lo1},{hi1}) and {b} [{lo2},{hi2}) are live together " \
                                             f"(kernels {s1}..{e1} and {s2}..{e2}) and share bytes"
    return pairs


def _eval_index(e, env):
    if isinstance(e, K.Var):
        return env[e.name]
    if isinstance(e, K.Const):
        return np.int64(e.value)
    if isinstance(e, K.Binary) and e.op in ("add", "sub", "mul"):
        a, b = _eval_index(e.a, env), _eval_index(e.b, env)
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply}[e.op](a, b)
    raise AssertionError(f"index {e} is not affine in loop variables")


def check_inplace(p: K.Program, before: dict, kernels: list, rec) -> None:
    """The conditions for kernel rec.kernel to write rec.out over rec.inp, re-derived from
    the program, its aliases and its kernels `before` the rewrites."""
    out, inp, k = rec.out, rec.inp, rec.kernel
    ib, ob = p.buffers[inp], p.buffers[out]
    r = root(before, inp)
    # (a) temps only, never caller or parameter storage
    assert ib.kind == "temp" and ob.kind == "temp" and p.buffers[r].kind == "temp"
    assert out not in before
    # (c)
    assert ib.dtype == ob.dtype and ib.size == ob.size
    # (b) the storage of inp is dead after kernel k, and out's is untouched before it
    for j, kern in enumerate(kernels):
        fam = {b for b in touched(kern) if b in p.buffers and root(before, b) == r}
        if j > k:
            assert not fam, f"{kern.name} touches {fam} after {rec}"
        if j == k:
            assert fam == {inp}, fam
        if j < k:
            assert not any(root(before, b) == out for b in touched(kern) if b in p.buffers), (kern.name, rec)
    # the rewrite: out shares inp's bytes
    assert root(p.aliases, out) == root(p.aliases, inp)
    assert byte_offset(p, p.aliases, out) == byte_offset(p, p.aliases, inp)
    # the rewritten kernel stores into bytes of out's storage, and nothing else changed
    new, old = p.kernels[k], kernels[k]
    assert new.name == old.name and new.reads == old.reads
    assert {root(p.aliases, b) for b in new.writes} == {root(p.aliases, b) for b in old.writes}
    # (d) by evaluation over the iteration space
    kern = kernels[k]
    assert not any(isinstance(s, K.Gemm) for _, _, s, _ in _sites(kern.body))
    accesses = []  # (statement list, position, kind, index, loops)
    for stmts, pos, s, loops in _sites(kern.body):
        if isinstance(s, K.Store) and s.buffer in (inp, out):
            assert s.buffer == out, "stores into the input"
            accesses.append((id(stmts), pos, "store", s.index, loops))
        for e in _stmt_exprs(s):
            for x in _exprs(e):
                if isinstance(x, K.Load) and x.buffer in (inp, out):
                    assert x.buffer == inp, "reads the output"
                    accesses.append((id(stmts), pos, "load", x.index, loops))
    assert {a[0] for a in accesses} and len({a[0] for a in accesses}) == 1
    loops = accesses[0][4]
    grids = np.meshgrid(*[np.arange(f.extent) for f in loops], indexing="ij")
    env = {f.var.name: g.ravel().astype(np.int64) for f, g in zip(loops, grids)}
    n_iter = int(np.prod([f.extent for f in loops]))
    idx = [np.broadcast_to(_eval_index(a[3], env), (n_iter,)) for a in accesses]
    for other in idx[1:]:
        assert np.array_equal(other, idx[0]), "reads the input away from the element it writes"
    assert np.unique(idx[0]).size == n_iter, "two iterations touch one element"
    assert n_iter == 0 or (idx[0].min() >= 0 and idx[0].max() < ob.size)
    first_store = min(a[1] for a in accesses if a[2] == "store")
    assert all(a[1] <= first_store for a in accesses if a[2] == "load"), "reads after writing"


# -- random programs ---------------------------------------------------------------------------

EW = ("add", "sub", "mul", "div", "maximum", "relu", "sigmoid", "tanh", "gelu", "exp", "neg",
      "where", "greater", "leaky_relu", "abs", "sqrt", "cast")
OPS = EW + ("matmul", "sum", "mean", "transpose", "reshape", "softmax", "broadcast_to", "slice",
            "concat", "max")


def _random_programs(seeds, **opts):
    for seed in seeds:
        g = build_random_graph(seed, **opts)
        work, _ = prepare(g)
        yield seed, g, work


@pytest.mark.parametrize("ops", [None, OPS], ids=["all-ops", "elementwise-heavy"])
def test_random_programs_keep_the_invariants(ops):
    seeds = range(120) if ops is None else range(200, 320)
    totals = {"pairs": 0, "inplace": 0, "reused": 0}
    for seed, g, work in _random_programs(seeds, max_nodes=18, min_nodes=4, updates=True,
                                          ops=ops, max_dim=5):
        for fuse in (False, True):
            p = lower(work, fuse_ops=fuse, plan=False)
            naive = p.arena_bytes
            check_plan(p)
            before, kernels = dict(p.aliases), list(p.kernels)
            plan = plan_memory(p)
            totals["pairs"] += check_plan(p)
            for rec in plan.inplace:
                check_inplace(p, before, kernels, rec)
            totals["inplace"] += len(plan.inplace)
            assert plan.naive_bytes == naive
            assert plan.lower_bound <= plan.peak_bytes == p.arena_bytes <= plan.reuse_bytes <= naive
            totals["reused"] += plan.peak_bytes < naive
            # lower() runs the whole memory pipeline by default
            q, r = lower(work, fuse_ops=fuse), lower(work, fuse_ops=fuse, plan=False)
            plan_program(r)
            check_plan(q)
            assert q.arena_bytes == r.arena_bytes and q.aliases == r.aliases, seed
            assert [k.name for k in q.kernels] == [k.name for k in r.kernels], seed
    # the checks were not vacuous: slots were live together, reused and written in place
    assert totals["pairs"] > 100 and totals["inplace"] > 30 and totals["reused"] > 30, totals


@needs_llvm
def test_random_programs_on_llvm_equal_the_reference():
    """Planned, in-place programs (unfused, so that many kernels can run in place) compute
    what the reference interpreter does."""
    from graphc.backends.llvm.runtime import LLVMExecutable
    n_inplace = 0
    for seed, g, work in _random_programs(range(400, 430), max_nodes=16, min_nodes=6, ops=OPS, max_dim=5):
        p = lower(work, fuse_ops=False)
        n_inplace += sum(a in p.aliases for a in p.buffers) - len(lower(work, fuse_ops=False, plan=False).aliases)
        rng = np.random.default_rng(seed)
        feeds = {v.name: (2 * rng.standard_normal(v.shape)).astype(v.dtype.np_dtype) for v in work.inputs}
        want = gc.compile(g, backend="reference")(**feeds)
        got = LLVMExecutable(work, p)(**feeds)
        want, got = (want, got) if isinstance(want, (list, tuple)) else ([want], [got])
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4,
                                       atol=1e-5, err_msg=f"seed {seed}")
    assert n_inplace >= 10, n_inplace


def test_checker_catches_a_broken_plan():
    """The invariant check above fails when two live temps share bytes."""
    g = gc.Graph("chain")
    with g:
        x = gc.placeholder("x", (64, 33))
        y = gc.tanh(x * 2.0) + gc.exp(x)
    work, _ = prepare(g, y)
    p = lower(work, fuse_ops=False, plan=False)
    plan_memory(p, inplace=False)
    check_plan(p)
    live_together = [n for n in p.arena][:2]
    p.arena[live_together[1]] = p.arena[live_together[0]]
    with pytest.raises(AssertionError, match="share bytes"):
        check_plan(p)


# -- hand-written kernels: what may and may not run in place ---------------------------------

N = 64
i, j = K.Var("i"), K.Var("j")


def _relu(src, dst, index=None, load_index=None, n=N):
    index = index if index is not None else i
    load_index = load_index if load_index is not None else index
    return K.Kernel(f"relu_{dst}", [K.For(i, n, [K.Store(dst, index, K.Binary(
        "max", K.Load(src, load_index, f32), K.Const(0.0, f32), f32))], "vectorize")], [src], [dst])


def _program(kernels, temps=("t", "u"), dtypes=None, extra=None):
    bufs = {"x": K.Buffer("x", N, f32, "input"), "y": K.Buffer("y", N, f32, "output")}
    for t in temps:
        bufs[t] = K.Buffer(t, N, (dtypes or {}).get(t, f32), "temp")
    bufs.update(extra or {})
    return K.Program("p", bufs, kernels, inputs=["x"], outputs=["y"])


def _copy(src, dst, n=N):
    return K.Kernel(f"copy_{dst}", [K.For(i, n, [K.Store(dst, i, K.Load(src, i, f32))])], [src], [dst])


def _inplace_pairs(p):
    plan = plan_memory(p)
    check_plan(p)
    return [(r.out, r.inp) for r in plan.inplace]


def test_activation_runs_in_place_and_chains_collapse():
    p = _program([_copy("x", "t"), _relu("t", "u"), _relu("u", "v"), _copy("v", "y")],
                 temps=("t", "u", "v"))
    assert _inplace_pairs(p) == [("u", "t"), ("v", "u")]
    assert p.aliases == {"u": ("t", 0), "v": ("t", 0)} and p.arena_bytes == 256
    # the in-place kernels read and write one buffer; later kernels read the views
    assert [(k.reads, k.writes) for k in p.kernels] == [(["x"], ["t"]), (["t"], ["t"]), (["u"], ["u"]),
                                                       (["v"], ["y"])]


def test_a_rejected_inplace_plan_reverts_the_kernels_too(monkeypatch):
    # When the in-place packing comes out larger, the plan keeps the one without it; the
    # kernels rewritten to store into their inputs must revert with the views, or they
    # would write over a buffer that the kept plan gives to something else.
    import graphc.passes.memory as memory
    p = _program([_copy("x", "t"), _relu("t", "u"), _relu("u", "v"), _copy("v", "y")],
                 temps=("t", "u", "v"))
    before = [(k.reads, k.writes, str(k)) for k in p.kernels]
    real_pack, calls = memory.pack, []

    def pack_worse_in_place(slots):
        peak, order = real_pack(slots)
        calls.append(peak)
        return (peak + 1024, order) if len(calls) > 1 else (peak, order)
    monkeypatch.setattr(memory, "pack", pack_worse_in_place)
    plan = plan_memory(p)
    assert plan.inplace == [] and p.aliases == {}
    assert [(k.reads, k.writes, str(k)) for k in p.kernels] == before
    check_plan(p)


@pytest.mark.parametrize("case", ["input", "later-reader", "shifted", "reversed", "broadcast-store",
                                  "other-dtype", "read-after-write", "gemm", "reads-output",
                                  "written-before", "second-name"])
def test_unsafe_kernels_stay_out_of_place(case):
    kernels = [_copy("x", "t"), _relu("t", "u"), _copy("u", "y")]
    dtypes, extra, aliases = None, None, {}
    if case == "input":  # never overwrite the caller's data
        kernels = [_relu("x", "u"), _copy("u", "y")]
    elif case == "later-reader":
        kernels = [_copy("x", "t"), _relu("t", "u"), _copy("t", "y"), _copy("u", "y")]
    elif case == "shifted":  # u[i] = t[i + 1] (last element: t[0])
        idx = K.Binary("mod", K.Binary("add", i, K.Const(1, i.dtype), i.dtype), K.Const(N, i.dtype), i.dtype)
        kernels[1] = _relu("t", "u", index=i, load_index=idx)
    elif case == "reversed":  # u[N-1-i] = t[i]: a permutation, but not the same element
        kernels[1] = _relu("t", "u", index=K.Binary("sub", K.Const(N - 1, i.dtype), i, i.dtype), load_index=i)
    elif case == "broadcast-store":  # u[i mod 8] written by 8 iterations
        kernels[1] = K.Kernel("bc", [K.For(j, 8, [K.For(i, 8, [K.Store("u", i, K.Load("t", i, f32))])])],
                              ["t"], ["u"])
    elif case == "other-dtype":
        dtypes = {"u": i32}
        kernels[1] = K.Kernel("cast", [K.For(i, N, [K.Store("u", i, K.Cast(K.Load("t", i, f32), i32))])],
                              ["t"], ["u"])
        kernels[2] = K.Kernel("back", [K.For(i, N, [K.Store("y", i, K.Cast(K.Load("u", i, i32), f32))])],
                              ["u"], ["y"])
    elif case == "read-after-write":
        kernels[1] = K.Kernel("raw", [K.For(i, N, [
            K.Store("u", i, K.Const(0.0, f32)),
            K.Store("u", i, K.Binary("add", K.Load("u", i, f32), K.Load("t", i, f32), f32))])], ["t"], ["u"])
    elif case == "gemm":
        kernels[1] = K.Kernel("mm", [K.Gemm("t", "t", "u", 8, 8, 8)], ["t"], ["u"])
    elif case == "reads-output":
        kernels[1] = K.Kernel("acc", [K.For(i, N, [K.Store("u", i, K.Binary(
            "add", K.Load("u", i, f32), K.Load("t", i, f32), f32))])], ["t", "u"], ["u"])
    elif case == "written-before":  # u's bytes would be t's while t is still needed
        kernels.insert(1, K.Kernel("init", [K.For(i, N, [K.Store("u", i, K.Const(0.0, f32))])], [], ["u"]))
    elif case == "second-name":  # u[i] = t[i] + v[N-1-i], v a view of t
        extra = {"v": K.Buffer("v", N, f32, "temp")}
        aliases = {"v": ("t", 0)}
        kernels[1] = K.Kernel("rev", [K.For(i, N, [K.Store("u", i, K.Binary("add", K.Load("t", i, f32), K.Load(
            "v", K.Binary("sub", K.Const(N - 1, i.dtype), i, i.dtype), f32), f32))])], ["t", "v"], ["u"])
    p = _program(kernels, dtypes=dtypes, extra=extra)
    p.aliases.update(aliases)
    assert _inplace_pairs(p) == []


def test_safety_analysis_accepts_fused_and_nested_elementwise():
    """A 2-D nest with a row-major index and loads before the store is safe; the same nest
    with the store first, or with a transposed read, is not."""
    idx = K.Binary("add", K.Binary("mul", i, K.Const(8, i.dtype), i.dtype), j, i.dtype)
    tidx = K.Binary("add", K.Binary("mul", j, K.Const(8, i.dtype), i.dtype), i, i.dtype)
    a, v = K.LocalRef("a", f32), K.LocalRef("v", f32)

    def nest(body):
        return K.Kernel("k", [K.For(i, 8, [K.For(j, 8, body, "vectorize")], "parallel")], ["t"], ["u"])
    ok = nest([K.Declare(a, K.Load("t", idx, f32)), K.Declare(v, K.Unary("tanh", a, f32)),
               K.Store("u", idx, v)])
    assert inplace_safe(ok, "t", "u")
    assert not inplace_safe(nest([K.Declare(a, K.Load("t", tidx, f32)), K.Store("u", idx, a)]), "t", "u")
    assert not inplace_safe(nest([K.Store("u", idx, K.Const(1.0, f32)), K.Declare(a, K.Load("t", idx, f32))]),
                            "t", "u")


def test_packing_reuses_dead_bytes():
    """t (256 B) dies before v is made: v takes t's bytes; u overlaps both."""
    kernels = [_copy("x", "t"), _copy("t", "u"), K.Kernel("two", [K.For(i, N, [K.Store(
        "v", i, K.Binary("mul", K.Load("u", i, f32), K.Const(2.0, f32), f32))])], ["u"], ["v"]),
        _copy("v", "y")]
    p = _program(kernels, temps=("t", "u", "v"))
    naive_layout(p)
    assert p.arena_bytes == 3 * 256
    plan = plan_memory(p, inplace=False)
    assert p.arena_bytes == plan.peak_bytes == plan.lower_bound == 512
    assert p.arena["t"] == p.arena["v"] != p.arena["u"]
    assert "peak arena" in str(plan) and "512" in str(plan)


def test_liveness_reads_the_statements_too():
    """A kernel whose declared reads/writes are incomplete still keeps what it loads alive."""
    kernels = [_copy("x", "t"), _copy("x", "u"), _copy("u", "v"),
               K.Kernel("sum", [K.For(i, N, [K.Store("y", i, K.Binary(
                   "add", K.Load("t", i, f32), K.Load("v", i, f32), f32))])], [], [])]
    p = _program(kernels, temps=("t", "u", "v"))
    plan_memory(p, inplace=False)
    check_plan(p)
    assert p.arena["t"] not in (p.arena["u"], p.arena["v"])


@needs_llvm
def test_planned_programs_compute_the_same():
    """Hand-written program with reuse and in-place on the LLVM backend: same result as
    the unplanned one."""
    from graphc.backends.llvm import runtime
    kernels = [_copy("x", "t"), _relu("t", "u"), K.Kernel("sq", [K.For(i, N, [K.Store(
        "v", i, K.Binary("mul", K.Load("u", i, f32), K.Load("u", i, f32), f32))])], ["u"], ["v"]),
        K.Kernel("plus", [K.For(i, N, [K.Store("w", i, K.Binary(
            "add", K.Load("v", i, f32), K.Load("t2", i, f32), f32))])], ["v", "t2"], ["w"]),
        _copy("w", "y")]
    kernels.insert(1, K.Kernel("neg", [K.For(i, N, [K.Store("t2", i, K.Unary("neg", K.Load("x", i, f32), f32))])],
                               ["x"], ["t2"]))
    x = np.linspace(-2, 2, N).astype(np.float32)
    want = np.maximum(x, 0) ** 2 - x
    for mode in ("naive", "reuse", "inplace"):
        p = _program([K.Kernel(k.name, k.body, k.reads, k.writes) for k in kernels],
                     temps=("t", "t2", "u", "v", "w"))
        if mode == "naive":
            naive_layout(p)
        else:
            plan = plan_memory(p, inplace=mode == "inplace")
            assert bool(plan.inplace) == (mode == "inplace")
        check_plan(p)
        out = {"y": np.full(N, np.nan, np.float32), "x": x.copy()}
        cp = runtime.compile_program(p, cache=False)
        runtime.run_program(cp, {n: out[n] for n in cp.external})
        np.testing.assert_allclose(out["y"], want, rtol=1e-6)


# -- the example models ----------------------------------------------------------------------

def _model(which):
    if which == "cnn":
        ex = load("examples/digits_cnn.py", "digits_cnn")
        g = ex.build_train_step()
        images, labels = gc.load_digits()
        feeds = {"x": images[:ex.BATCH, None], "t": labels[:ex.BATCH]}
    else:
        mb = load("benchmarks/mlp_step.py", "mlp_step")
        g = mb.build()
        rng = np.random.default_rng(0)
        feeds = {"x": rng.standard_normal((mb.B, mb.D)).astype(np.float32),
                 "t": rng.integers(0, mb.C, mb.B).astype(np.int32)}
    return g, feeds


# Measured (prepare + lower, fused; plan_memory alone, graph order): CNN step naive
# 2,657,152 B -> planned 787,904 B (0.30x; the per-image convolution kernels keep one
# image's columns, not the batch's); with conv bias + relu fused into the convolutions the
# naive total is 1,369,984 B and the plan 650,688 B (0.47x: fusion removed much of what
# planning used to save).
PEAK_RATIO = {"cnn": 0.50, "mlp": 0.70}


@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_train_step_peak_is_below_the_naive_total(which):
    g, _ = _model(which)
    work, _ = prepare(g)
    p = lower(work, plan=False)
    naive = p.arena_bytes
    before, kernels = dict(p.aliases), list(p.kernels)
    plan = plan_memory(p)
    check_plan(p)
    for rec in plan.inplace:
        check_inplace(p, before, kernels, rec)
    assert plan.naive_bytes == naive
    assert plan.peak_bytes <= PEAK_RATIO[which] * naive, (plan.peak_bytes, naive)
    assert plan.peak_bytes <= 1.10 * plan.lower_bound  # best-fit is a heuristic
    # relu forwards and backwards (and the fused groups around them) run in place (fewer in
    # the CNN since fusion keeps the softmax backward out of memory)
    assert len(plan.inplace) >= 2
    full = lower(work, plan=False)
    final = plan_program(full)
    assert lower(work).arena_bytes == final.peak_bytes == full.arena_bytes
    assert final.peak_bytes <= min(plan.peak_bytes, 1.05 * final.lower_bound)


@needs_llvm
@pytest.mark.parametrize("which", ["cnn", "mlp"])
def test_train_steps_on_llvm_equal_the_reference(which):
    from graphc.backends.llvm.runtime import LLVMExecutable
    g, feeds = _model(which)
    ref = gc.compile(g, backend="reference")
    work, _ = prepare(g)
    reuse_only = lower(work, plan=False)
    plan_memory(reuse_only, inplace=False)
    assert not set(reuse_only.aliases) - set(lower(work, plan=False).aliases)
    exes = {"planned": LLVMExecutable(work, reuse_only),
            "planned+inplace": gc.compile(g, backend="llvm", winograd="off")}  # same graph
    assert exes["planned+inplace"].program.arena_bytes <= reuse_only.arena_bytes
    want = [ref(**feeds) for _ in range(2)]
    for name, exe in exes.items():
        for step in range(2):
            got = exe(**feeds)
            for a, b in zip(got, want[step]):
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=f"{name} step {step}")
        for k in ref.params:
            np.testing.assert_allclose(exe.params[k], ref.params[k], rtol=2e-4, atol=2e-5, err_msg=f"{name} {k}")

