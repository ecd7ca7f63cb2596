"""The CUDA code generator without a GPU: every registry op and example model renders to
CUDA C that nvcc compiles (warnings as errors) for sm_80 and sm_90, and the loop
dependence analysis that decides what runs in parallel agrees with brute force.

All programs go into one translation unit per architecture (kernel names carry the
program's name), so the whole check is one nvcc run per target.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from graphc.backends.cuda import analysis as A
from graphc.backends.cuda import codegen, nvcc
from graphc.ir import kernel as K

from tests.backends.cuda_programs import all_graphs, epilogue_program, op_graphs, program

needs_nvcc = pytest.mark.skipif(nvcc.find_nvcc() is None, reason="nvcc not installed")


@pytest.fixture(scope="module")
def translation_unit() -> tuple[str, list[str]]:
    bodies, functions = [], []
    programs = [(name, program(g)) for name, g in all_graphs()] + [("gemm_epilogue", epilogue_program())]
    for name, p in programs:
        body, _, fns = codegen.render_body(p, prefix="gc_" + codegen.sanitize(name))
        bodies.append(body)
        functions += fns
    return codegen.translation_unit(bodies), functions


@needs_nvcc
def test_every_op_and_model_compiles_with_nvcc_for_sm80_and_sm90(translation_unit):
    """Cubins for both targets with the runtime's flags (nvcc's front end, NVVM, ptxas),
    warnings as errors; both at once (CI has two cores)."""
    source, functions = translation_unit
    with ThreadPoolExecutor(2) as pool:
        cubins = list(pool.map(lambda arch: nvcc.compile_cuda(source, arch, output="cubin", strict=True),
                               ["sm_80", "sm_90"]))
    assert len(functions) > 300
    for cubin in cubins:
        assert cubin[:4] == b"\x7fELF"  # a cubin is an ELF image
        for name in functions:  # every launch's function made it into the image
            assert name.encode() in cubin, name


@needs_nvcc
def test_nvcc_errors_name_the_source_line():
    bad = codegen.translation_unit(['extern "C" __global__ void broken(float* x) { x[0] = undefined_thing; }'])
    with pytest.raises(nvcc.NvccError, match="undefined_thing") as e:
        nvcc.compile_cuda(bad, "sm_80")
    assert "broken" in str(e.value)


def test_bad_architecture_is_an_error():
    with pytest.raises(nvcc.NvccError, match="architecture"):
        nvcc.compile_cuda("", "sm80; rm -rf /")


# -- the dependence analysis against brute force ----------------------------------------------

class _Unknown(Exception):
    """An index that depends on data: brute force cannot enumerate it."""


def _eval(e, env):
    if isinstance(e, K.Const):
        return e.value
    if isinstance(e, K.Var):
        return env[e.name]
    if isinstance(e, K.Cast):
        return _eval(e.x, env)
    if isinstance(e, K.Select):
        return _eval(e.a, env) if _eval(e.cond, env) else _eval(e.b, env)
    if isinstance(e, K.Compare):
        a, b = _eval(e.a, env), _eval(e.b, env)
        return {"eq": a == b, "ne": a != b, "lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[e.op]
    if isinstance(e, K.Binary):
        a, b = _eval(e.a, env), _eval(e.b, env)
        if e.op == "div":
            return a // b if b else 0
        if e.op == "mod":
            return a % b if b else 0
        ops = {"add": a + b, "sub": a - b, "mul": a * b, "and": a and b, "or": a or b}
        if e.op in ops:
            return ops[e.op]
    raise _Unknown(type(e).__name__)


def _touches(stmts, env, storage, status, out):
    """(storage root, byte, is_store, iteration env) of every accessed byte, by executing the
    loop structure with concrete loop variables."""
    for s in stmts:
        if isinstance(s, K.For):
            for v in range(s.extent):
                env[s.var.name] = v
                _touches(s.body, env, storage, status, out)
            env.pop(s.var.name, None)
            continue
        for e in A.stmt_exprs(s):
            for ld in A.loads(e):
                if ld.buffer != status:
                    st = storage[ld.buffer]
                    start = st.offset + _eval(ld.index, env) * st.itemsize
                    out += [(st.root, b, False, dict(env)) for b in range(start, start + st.itemsize)]
        if isinstance(s, K.Store) and s.buffer != status:
            st = storage[s.buffer]
            start = st.offset + _eval(s.index, env) * st.itemsize
            out += [(st.root, b, True, dict(env)) for b in range(start, start + st.itemsize)]


def _phases(p: K.Program):
    mw = codegen._ModuleWriter(p, codegen.CodegenOptions(), "t")
    for k in p.kernels:
        for ph in codegen.split_phases(k.body):
            for part in mw.distribute(ph):
                yield mw, part


def test_loops_run_in_parallel_only_when_no_two_iterations_share_a_written_byte():
    """Every loop the generator spreads over threads is checked by enumerating the
    accesses of its phase: no written byte may be touched under two values of its
    variable (otherwise threads would race)."""
    checked = parallel = 0
    for name, g in op_graphs(seeds=(0, 1, 2), f16=False):
        p = program(g)
        for mw, phase in _phases(p):
            plan = mw.plan(phase)
            if not plan.parallel or any(isinstance(s, K.Gemm) for s in A.walk_stmts(phase)):
                continue
            if sum(1 for _ in A.walk_stmts(phase)) > 200:
                continue
            acc = []
            try:
                _touches(phase, {}, mw.storage, p.status, acc)
            except _Unknown:
                continue
            written = {(r, b) for r, b, store, _ in acc if store}
            for loop in plan.parallel:
                owners = defaultdict(set)
                for r, b, _, env in acc:
                    if (r, b) in written:
                        owners[(r, b)].add(env[loop.var.name])
                shared = {k: v for k, v in owners.items() if len(v) > 1}
                assert not shared, (name, loop.var.name, str(p))
                parallel += 1
            checked += 1
    assert checked > 100 and parallel > 150, (checked, parallel)


def test_outer_reductions_run_one_thread_per_output_and_rows_reduce_in_groups():
    """The decisions the performance depends on: a column sum (bias gradient) puts its
    output axis on the grid and keeps the batch loop serial inside each thread; a plain row
    reduction reduces each row with a group of threads. (The fused softmax row kernel of
    ir/fused.py makes several passes over each row in one loop and renders one thread per
    row: correct, not yet tuned for GPUs.)"""
    import graphc as gc
    g = gc.Graph("colsum")
    with g:
        x = gc.placeholder("x", (256, 1024), "f32")
        g.set_outputs([gc.sum(x, axis=0), gc.max(x, axis=1), gc.sum(x, axis=1)])
    module = codegen.render(program(g))
    colsum = [l for l in module.launches if "sum" in l.function and "fused" not in l.function]
    assert colsum and max(l.grid[0] * l.block[0] for l in colsum) >= 1024
    assert "gc_group_reduce<GcMaxF" in module.source and "gc_group_reduce<GcAdd," in module.source


def test_unbatchable_gemm_is_rejected_with_a_clear_error():
    from graphc.ir.dtypes import f32
    bufs = {"a": K.Buffer("a", 16, f32, "input"), "b": K.Buffer("b", 16, f32, "input"),
            "c": K.Buffer("c", 16, f32, "output")}
    i = K.Var("i")
    gemm = K.Gemm("a", "b", "c", 4, 4, 4, offset_a=K.Binary("mul", i, K.Const(0, K.i64), K.i64),
                  accumulate=True)
    p = K.Program("acc", bufs, [K.Kernel("k", [K.For(i, 3, [gemm])], ["a", "b"], ["c"])],
                  inputs=["a", "b"], outputs=["c"])
    with pytest.raises(codegen.CudaCodegenError, match="overlap"):
        codegen.render(p)


def test_disjoint_forms_never_claims_disjoint_sets_that_meet():
    """Random affine forms over small boxes: whenever the test says 'disjoint', the sets
    of values really are; and it recognises im2col-like row offsets."""
    import random
    rnd = random.Random(7)
    claimed = 0
    for _ in range(3000):
        nvars = rnd.randint(1, 3)
        ea = {f"a{i}": rnd.randint(1, 6) for i in range(nvars)}
        eb = {f"b{i}": rnd.randint(1, 6) for i in range(nvars)}
        coefs = [rnd.choice([1, 2, 3, 4, 6, 8, 12, 16, 24, 36]) * 4 for _ in range(nvars)]
        fa = {**{f"a{i}": c for i, c in enumerate(coefs)}, "": 4 * rnd.randint(0, 40)}
        fb = {**{f"b{i}": rnd.choice([c, c * 2]) for i, c in enumerate(coefs)}, "": 4 * rnd.randint(0, 40)}

        def values(f, e):
            names = [k for k in f if k]
            out = set()
            for point in itertools.product(*[range(e[k]) for k in names]):
                out.add(f[""] + sum(f[k] * x for k, x in zip(names, point)))
            return out
        if A.disjoint_forms(fa, fb, ea, eb):
            claimed += 1
            assert not values(fa, ea) & values(fb, eb), (fa, fb, ea, eb)
    assert claimed > 10
    row = {"i": 36864, "j": 128, "k": 4}
    ext = {"i": 3, "j": 32, "k": 32}
    assert A.disjoint_forms({**row, "": 0}, {**row, "": 4096}, ext, ext)
    assert not A.disjoint_forms({**row, "": 0}, {**row, "": 128}, ext, ext)


def test_merged_phases_touch_disjoint_bytes():
    """Loop nests that share a launch run at the same time: brute force confirms that no
    byte one of them writes is touched by another."""
    merged = 0
    for name, g in op_graphs(seeds=(0, 1, 2), f16=False):
        p = program(g)
        mw = codegen._ModuleWriter(p, codegen.CodegenOptions(), "t")
        for k in p.kernels:
            phases = [q for ph in codegen.split_phases(k.body) for q in mw.distribute(ph)]
            runs, run = [], []
            for ph in phases:  # the grouping _ModuleWriter.render makes
                plan = mw.plan(ph)
                if mw.mergeable(plan) and all(A.independent_nests(o, ph, mw.storage, p.status) for o in run):
                    run.append(ph)
                    continue
                runs.append(run)
                run = [ph] if mw.mergeable(plan) else []
            runs.append(run)
            for run in runs:
                merged += _check_disjoint_run(name, k, run, mw, p)
    assert merged >= 5, merged


def _check_disjoint_run(name, k, run, mw, p) -> int:
    if len(run) < 2:
        return 0
    sets = []
    try:
        for ph in run:
            acc = []
            _touches(ph, {}, mw.storage, p.status, acc)
            sets.append(({(r, b) for r, b, st, _ in acc if st}, {(r, b) for r, b, _, _ in acc}))
    except _Unknown:
        return 0
    for i, j in itertools.permutations(range(len(sets)), 2):
        assert not sets[i][0] & sets[j][1], (name, k.name, i, j)
    return 1


def test_cli_dumps_the_cuda_the_backend_compiles(tmp_path):
    """`graphc dump FILE:FN --format cuda` runs the cuda backend's pipeline: its output is
    the translation unit gc.compile(backend="cuda") would compile."""
    from graphc.cli import main
    from tests.examples import ROOT, digits_cnn
    out = tmp_path / "step.cu"
    assert main(["dump", f"{ROOT / 'examples/digits_cnn.py'}:build_train_step", "--format", "cuda",
                 "-o", str(out)]) == 0
    want = codegen.render(program(digits_cnn().build_train_step())).source
    assert out.read_text().rstrip("\n") == want.rstrip("\n")


@needs_nvcc
def test_compiled_modules_are_cached_in_memory_and_on_disk(tmp_path):
    from graphc.backends.cuda.runtime import compile_module
    from graphc.backends.llvm.cache import CompileCache
    from tests.backends.cuda_programs import reduction_graphs
    name, g = next(reduction_graphs())
    module = codegen.render(program(g))
    cache = CompileCache(tmp_path, enabled=True)
    cubin, where = compile_module(module, "sm_80", cache)
    assert where == "built" and cubin[:4] == b"\x7fELF"
    assert compile_module(module, "sm_80", cache) == (cubin, "memory")
    assert compile_module(module, "sm_80", CompileCache(tmp_path, enabled=True)) == (cubin, "disk")
    assert compile_module(module, "sm_90", cache)[1] == "built"  # the target is part of the key
