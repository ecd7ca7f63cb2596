"""The kernel-IR interpreter (ir/interpret.py) runs lowered programs as the reference
interpreter runs their graphs, agrees with the LLVM backend on the same Program (bit for
bit where the generator's semantics are exact), and reports what native code would get
wrong silently: out-of-bounds accesses, overlapping arena temps, reads of unwritten memory.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import graphc as gc
from graphc.backends import available_backends
from graphc.backends.reference.interpreter import run_graph
from graphc.compile import optimize_graph
from graphc.ir import all_ops
from graphc.ir import kernel as K
from graphc.ir.dtypes import bool_, f16, f32, f64, i32, i64
from graphc.ir.errors import GraphcError, KernelRuntimeError
from graphc.ir.interpret import KernelInterpretError, OutOfBoundsError, run_program
from graphc.passes.lower import lower

from tests.backends.test_llvm_conformance import TOL, _with_outputs, feeds_for
from tests.ir.random_graphs import build_random_graph, op_example

needs_llvm = pytest.mark.skipif("llvm" not in available_backends(), reason="llvm backend missing")

LOWERINGS = [dict(plan=plan, fuse_ops=fuse) for plan in (False, True) for fuse in (False, True)]
NO_EXAMPLE: frozenset[str] = frozenset()  # registry ops op_example cannot build (none today)


# -- helpers ----------------------------------------------------------------------------------

def initial_params(g) -> dict[str, np.ndarray]:
    return {p.name: np.array(g.initial_param_value(p)) for p in g.params}


def interpret(g, feeds, params, program=None, **lower_kwargs):
    """Lower g (unless given its program) and interpret it: outputs shaped as g's."""
    program = program if program is not None else lower(g, **lower_kwargs)
    outs, updates = run_program(program, {v.name: feeds[v.name] for v in g.inputs}, params)
    return [o.reshape(v.shape) for o, v in zip(outs, g.outputs)], updates


def assert_outputs_close(got, want, values, what=""):
    for gv, wv, v in zip(got, want, values):
        wv = np.asarray(wv)
        assert gv.shape == wv.shape and gv.dtype == wv.dtype, (what, v, gv.shape, gv.dtype, wv.dtype)
        tol = TOL.get(v.dtype.name, 0)
        if v.dtype.is_float:
            np.testing.assert_allclose(gv, wv, rtol=tol, atol=tol, equal_nan=True, err_msg=what)
        else:
            np.testing.assert_array_equal(gv, wv, err_msg=what)


def check_against_reference(g, **lower_kwargs):
    g = _with_outputs(g)
    feeds, params = feeds_for(g), initial_params(g)
    want, _ = run_graph(g, feeds, params)
    got, _ = interpret(g, feeds, params, **lower_kwargs)
    assert_outputs_close(got, want, g.outputs, f"{g.name} lowered with {lower_kwargs}")


def same_bits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: equal values, NaN to NaN, and the sign of zeros kept."""
    if a.dtype.kind == "f":
        return ((a == b) & (np.signbit(a) == np.signbit(b))) | (np.isnan(a) & np.isnan(b))
    return a == b


def run_natively(program: K.Program, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs of the LLVM code for program on arrays keyed by buffer name (outputs start as
    the interpreter's 0xFF poison, so elements nobody writes compare equal)."""
    from graphc.backends.llvm import runtime
    compiled = runtime.compile_program(program)
    bufs = dict(arrays)
    for name in program.external():
        b = program.buffers[name]
        if b.kind == "output":
            bufs[name] = np.full(b.size * b.dtype.itemsize, 0xFF, np.uint8).view(b.dtype.np_dtype)
    bufs[program.status][...] = 0
    runtime.run_program(compiled, bufs)
    return {n: (a.view(np.uint8) != 0 if a.dtype == bool else a) for n, a in bufs.items()}


def _flat_program(name: str, cases, values: dict | None = None) -> tuple[K.Program, dict[str, np.ndarray]]:
    """One kernel per case (case name, input dtype, output dtype, fn(load a, load b) -> Expr)
    over every pair of the dtype's values (SPECIAL by default)."""
    bufs, kernels, inputs, data = {}, [], [], {}
    for case, dt, odt, fn in cases:
        v = np.array((values or SPECIAL)[dt.name], dt.np_dtype)
        a, b = np.repeat(v, v.size), np.tile(v, v.size)
        an, bn, on = f"a_{case}", f"b_{case}", f"o_{case}"
        for n, arr in ((an, a), (bn, b)):
            bufs[n] = K.Buffer(n, arr.size, dt, "input")
            inputs.append(n)
            data[n] = arr
        bufs[on] = K.Buffer(on, a.size, odt, "output")
        i = K.Var("i0")
        body = [K.For(i, a.size, [K.Store(on, i, fn(K.Load(an, i, dt), K.Load(bn, i, dt)))], "vectorize")]
        kernels.append(K.Kernel(case, body, [an, bn], [on]))
    bufs["status"] = K.Buffer("status", 2, i32, "output")
    return K.Program(name, bufs, kernels, inputs=inputs, outputs=[f"o_{c[0]}" for c in cases],
                     status="status"), data


SPECIAL = {
    "f32": [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 3.0, -7.0, 0.1, 1e30, -1e30, np.inf, -np.inf, np.nan,
            3e9, -3e9, 65504.0, 7e4, 1e-40],
    "f64": [0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 3.0, -7.0, 0.1, 1e300, -1e300, np.inf, -np.inf, np.nan,
            3e9, -1e19, 65504.0],
    "f16": [0.0, -0.0, 1.0, -1.0, 0.1, 1000.0, 65504.0, np.inf, -np.inf, np.nan, 3.14, -2.5],
    "i32": [0, 1, -1, 2, -2, 7, -7, 3, 100, -2**31, 2**31 - 1],
    "i64": [0, 1, -1, 2, -2, 7, -7, 3, 100, -2**63, 2**63 - 1, 2**40],
    "bool": [False, True],
}
ALL_DTYPES = (f16, f32, f64, i32, i64, bool_)


def _exact_cases():
    """Every scalar op and cast whose result the generator defines exactly."""
    cases = []
    for dt in ALL_DTYPES:
        for op in K.BINARY_FUNCS:
            if op == "pow" and dt.is_float:
                continue  # through the math library: within an ulp, checked with the others
            if dt.is_bool and op in ("div", "mod", "pow"):
                continue
            cases.append((f"{op}_{dt}", dt, dt, lambda a, b, op=op, dt=dt: K.Binary(op, a, b, dt)))
        for op in K.COMPARE_FUNCS:
            cases.append((f"{op}_{dt}", dt, bool_, lambda a, b, op=op: K.Compare(op, a, b)))
        for op in ("neg", "abs", "sign") + (("sqrt",) if dt.is_float else ("not",)):
            cases.append((f"{op}_{dt}", dt, dt, lambda a, b, op=op, dt=dt: K.Unary(op, a, dt)))
        for dst in ALL_DTYPES:
            if dst != dt:
                cases.append((f"cast_{dt}_{dst}", dt, dst, lambda a, b, dst=dst: K.Cast(a, dst)))
        cases.append((f"select_{dt}", dt, dt,
                      lambda a, b, dt=dt: K.Select(K.Compare("ne", a, K.Const(0, dt)), a, b, dt)))
    cases.append(("load_as_f64", f32, f64, lambda a, b: K.Binary(
        "add", K.Load(a.buffer, a.index, f64), K.Load(b.buffer, b.index, f64), f64)))
    cases.append(("compare_promotes", i32, bool_, lambda a, b: K.Compare("lt", a, K.Cast(b, f32))))
    return cases


# -- every op, random graphs, training steps: the interpreter computes what the graph does -----

def test_every_registry_op_has_an_example():
    missing = {op for op in all_ops() if op_example(op) is None}
    assert missing == NO_EXAMPLE, f"ops without an example: {sorted(missing)}"


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_every_op_matches_the_reference(op):
    for seed in range(2):
        g = op_example(op, seed=seed)
        if g is None:
            assert op in NO_EXAMPLE
            return
        for kw in LOWERINGS:
            check_against_reference(g, **kw)


@pytest.mark.parametrize("op", sorted(all_ops()))
def test_lane_evaluation_changes_nothing(op):
    """Evaluating loop nests over all iterations at once is bit-for-bit the sequential run."""
    g = op_example(op, seed=0)
    if g is None:
        return
    g = _with_outputs(g)
    feeds, params = feeds_for(g), initial_params(g)
    program = lower(g)
    ins = {v.name: feeds[v.name] for v in g.inputs}
    fast, fast_upd = run_program(program, ins, params)
    slow, slow_upd = run_program(program, ins, params, lanes=False)
    for a, b in zip(fast + list(fast_upd.values()), slow + list(slow_upd.values())):
        assert same_bits(a, b).all(), op


def test_seeded_random_graphs_match_the_reference():
    for seed in range(40):
        g = build_random_graph(seed, max_nodes=8, special_values=False)
        for kw in LOWERINGS:
            check_against_reference(g, **kw)


def test_optimised_random_graphs_match_the_reference():
    """The program the LLVM backend runs at -O2 (the fuzzer's kernel-interpreter path)."""
    for seed in range(100, 115):
        g = _with_outputs(build_random_graph(seed, max_nodes=8, special_values=False))
        feeds, params = feeds_for(g), initial_params(g)
        want, _ = run_graph(g, feeds, params)
        work, _, _ = optimize_graph(g, backend="llvm", opt_level=2)
        got, _ = interpret(work, feeds, {p.name: params[p.name] for p in work.params},
                           program=lower(work, fuse_ops=None, plan=True))
        assert_outputs_close(got, want, g.outputs, f"seed {seed}")


def _mlp_step():
    g = gc.Graph("mlp_step")
    with g:
        x = gc.placeholder("x", (6, 5), "f32")
        t = gc.placeholder("t", (6,), "i32")
        h = gc.tanh(gc.nn.Linear(5, 6)(x))
        loss = gc.softmax_cross_entropy(gc.nn.Linear(6, 4)(h), t)
        g.set_outputs([loss], updates=gc.optim.SGD(0.1, momentum=0.9).updates(loss))
    return g


def _cnn_step():
    g = gc.Graph("cnn_step")
    with g:
        x = gc.placeholder("x", (2, 1, 6, 6), "f32")
        t = gc.placeholder("t", (2,), "i32")
        conv, fc = gc.nn.Conv2d(1, 3, 3, padding=1), gc.nn.Linear(27, 4)
        h = gc.max_pool2d(gc.relu(conv(x)), 2)
        loss = gc.softmax_cross_entropy(fc(gc.reshape(h, (2, 27))), t)
        gw = gc.grad(loss, [conv.weight, fc.weight])
        g.set_outputs([loss, *gw], updates=gc.optim.SGD(0.05).updates(loss))
    return g


def _step_feeds(g, rng):
    return {v.name: (rng.standard_normal(v.shape).astype(np.float32) if v.dtype.is_float
                     else rng.integers(0, 4, v.shape).astype(np.int32)) for v in g.inputs}


@pytest.mark.parametrize("make", [_mlp_step, _cnn_step])
@pytest.mark.parametrize("plan", [False, True])
def test_training_steps_track_the_reference(make, plan):
    g = make()
    program = lower(g, plan=plan)
    if plan:  # parameter updates land in the parameters' own buffers (passes/donate.py)
        assert any(program.updates[k] == program.params[k] for k in program.updates)
    rng = np.random.default_rng(0)
    ref_params, our_params = initial_params(g), initial_params(g)
    for step in range(3):
        feeds = _step_feeds(g, rng)
        want, ref_upd = run_graph(g, feeds, ref_params)
        got, our_upd = interpret(g, feeds, our_params, program=program)
        assert_outputs_close(got, want, g.outputs, f"step {step}")
        assert set(our_upd) == set(ref_upd)
        ref_params.update(ref_upd)
        our_params.update(our_upd)
    for k in ref_params:
        assert our_params[k].shape == ref_params[k].shape
        np.testing.assert_allclose(our_params[k], ref_params[k], rtol=1e-4, atol=1e-6, err_msg=k)


# -- the same Program natively: the interpreter's semantics are the generator's ----------------

@needs_llvm
def test_scalar_semantics_equal_the_llvm_code_bit_for_bit():
    program, data = _flat_program("scalar_semantics", _exact_cases())
    native = run_natively(program, data)
    outs, _ = run_program(program, [data[n] for n in program.inputs], {})
    bad = [name for name, got in zip(program.outputs, outs) if not same_bits(got, native[name]).all()]
    assert not bad, f"interpreter and LLVM code differ on {bad}"


@needs_llvm
def test_math_functions_agree_with_the_llvm_code():
    """exp, log, ... are the generator's approximations (within 1.5 ulp over the ranges its
    math library documents): equal to a few ulp, and equal specials (inf, NaN, signed 0)."""
    cases = []
    for dt in (f32, f64, f16):
        for op in ("exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt"):
            cases.append((f"{op}_{dt}", dt, dt, lambda a, b, op=op, dt=dt: K.Unary(op, a, dt)))
        cases.append((f"pow_{dt}", dt, dt, lambda a, b, dt=dt: K.Binary("pow", a, b, dt)))
    moderate = {  # sin/cos of 1e30 are documented as bounded, not accurate
        "f32": [0.0, -0.0, 0.5, -0.5, 1.0, 2.5, -3.0, 20.0, -20.0, 100.0, np.inf, -np.inf, np.nan],
        "f64": [0.0, -0.0, 0.5, -0.5, 1.0, 2.5, -3.0, 20.0, -20.0, 700.0, np.inf, -np.inf, np.nan],
        "f16": [0.0, -0.0, 0.5, -0.5, 1.0, 2.5, -3.0, 10.0, np.inf, -np.inf, np.nan]}
    program, data = _flat_program("math", cases, moderate)
    native = run_natively(program, data)
    outs, _ = run_program(program, [data[n] for n in program.inputs], {})
    for name, got in zip(program.outputs, outs):
        want = native[name]
        eps = np.finfo(got.dtype).eps
        np.testing.assert_allclose(got, want, rtol=8 * eps, atol=8 * eps * 1e-3, equal_nan=True, err_msg=name)
        zeros = (want == 0) | np.isinf(want)
        assert same_bits(got[zeros], want[zeros]).all(), name


def _gemm_program():
    """GEMMs with every field: batches with strides, transposes, panels, offsets, leading
    dimensions, accumulate, epilogues over acc, i and j, and one nested in a loop whose
    variable moves its offsets and its epilogue's bias; small (loop nests) and larger
    (the generated library) sizes, every dtype."""
    rng = np.random.default_rng(0)
    bufs, kernels, inputs, outputs, data = {}, [], [], [], {}

    def buffer(name, size, dt, kind):
        bufs[name] = K.Buffer(name, size, dt, kind)
        (inputs if kind == "input" else outputs).append(name)
        if kind == "input":
            data[name] = (rng.standard_normal(size) if dt.is_float else rng.random(size) > 0.5
                          if dt.is_bool else rng.integers(-5, 6, size)).astype(dt.np_dtype)

    acc_ref = K.LocalRef("acc", f32)
    for n, (dt, ta, tb, panels, acc, big) in enumerate(itertools.product(
            ALL_DTYPES, [False, True], [False, True], [0, 4], [False, True], [False, True])):
        if panels and tb:
            continue
        m, nn, k = (17, 24, 16) if big else (3, 8, 5)
        lda, rows = (m if ta else k) + 1, k if ta else m  # A padded to a longer leading dimension
        a, b, c = f"A{n}", f"B{n}", f"C{n}"
        buffer(a, 2 * rows * lda + 1, dt, "input")
        buffer(b, 2 * k * nn + 1, dt, "input")
        buffer(c, 2 * m * nn + 2, dt, "output")
        if acc:  # accumulate reads C: give it values first
            z = K.Var("z")
            init = K.For(z, 2 * m * nn + 2, [K.Store(c, z, K.Cast(z, dt))])
            kernels.append(K.Kernel(f"init{n}", [init], [], [c]))
        epi = None
        if dt.is_float and not acc:
            acc_ref = K.LocalRef("acc", dt)
            shift = K.Cast(K.Binary("sub", K.GEMM_ROW, K.GEMM_COL, i64), dt)
            epi = K.Binary("max", K.Binary("add", acc_ref, shift, dt), K.Const(-1.0, dt), dt)
        elif dt.is_int and acc:
            epi = K.Binary("mul", K.LocalRef("acc", dt), K.Const(3, dt), dt)
        g = K.Gemm(a, b, c, m, nn, k, batch=2, trans_a=ta, trans_b=tb, lda=lda, stride_a=rows * lda,
                   stride_b=k * nn, stride_c=m * nn, offset_a=1, offset_b=K.Const(1, i64),
                   offset_c=K.Const(2, i64) if big else 0, accumulate=acc, epilogue=epi, b_panels=panels)
        kernels.append(K.Kernel(f"gemm{n}", [g], [a, b], [c]))
    buffer("NA", 2 * 4 * 3, f32, "input")
    buffer("NB", 3 * 5, f32, "input")
    buffer("bias", 2 * 5, f32, "input")
    buffer("NC", 2 * 4 * 5, f32, "output")
    o = K.Var("o")
    bias = K.Load("bias", K.Binary("add", K.Binary("mul", o, K.Const(5, i64), i64), K.GEMM_COL, i64), f32)
    g = K.Gemm("NA", "NB", "NC", 4, 5, 3, offset_a=K.Binary("mul", o, K.Const(12, i64), i64),
               offset_c=K.Binary("mul", o, K.Const(20, i64), i64),
               epilogue=K.Binary("add", K.LocalRef("acc", f32), bias, f32))
    kernels.append(K.Kernel("nested", [K.For(o, 2, [g])], ["NA", "NB", "bias"], ["NC"]))
    bufs["status"] = K.Buffer("status", 2, i32, "output")
    return K.Program("gemms", bufs, kernels, inputs=inputs, outputs=outputs, status="status"), data


@needs_llvm
def test_gemms_agree_with_the_llvm_code():
    program, data = _gemm_program()
    native = run_natively(program, data)
    outs, _ = run_program(program, [data[n] for n in program.inputs], {})
    for name, got in zip(program.outputs, outs):
        dt = program.buffers[name].dtype
        if dt.is_float:
            tol = {"f16": 2e-3, "f32": 1e-5, "f64": 1e-12}[dt.name]
            np.testing.assert_allclose(got, native[name], rtol=tol, atol=tol, equal_nan=True, err_msg=name)
        else:
            np.testing.assert_array_equal(got, native[name], err_msg=name)


def _dependence_program():
    """Loops whose iterations depend on each other through memory or locals: the lane
    evaluation must notice and run them in order."""
    def c(v):
        return K.Const(v, i64)

    def op(name, a, b, dt=i64):
        return K.Binary(name, a, b, dt)

    def x(ix):
        return K.Load("x", ix, f32)
    i, j, r = K.Var("i"), K.Var("j"), K.Var("r")
    n = 8
    bufs = {"x": K.Buffer("x", n, f32, "input"), "idx": K.Buffer("idx", n, i32, "input"),
            "t": K.Buffer("t", n, f32, "temp"), "status": K.Buffer("status", 2, i32, "output")}
    outs = {"prefix": n, "scatter": 4, "rev": n, "run": n, "last": 1, "red": 4, "bcast": 1, "tout": n}
    bufs.update({k: K.Buffer(k, size, f32, "output") for k, size in outs.items()})
    s, m = K.LocalRef("s", f32), K.LocalRef("m", f32)
    slot = op("mod", K.Cast(K.Load("idx", i, i32), i64), c(4))
    i1 = op("add", i, c(1))
    kernels = [
        K.Kernel("prefix", [K.Store("prefix", c(0), x(c(0))), K.For(i, n - 1, [K.Store(
            "prefix", i1, K.Binary("add", K.Load("prefix", i, f32), x(i1), f32))])]),
        K.Kernel("scatter_add", [K.For(i, 4, [K.Store("scatter", i, K.Const(0.0, f32))]), K.For(i, n, [
            K.Store("scatter", slot, K.Binary("add", K.Load("scatter", slot, f32), x(i), f32))])]),
        K.Kernel("reverse_in_place", [K.For(i, n, [K.Store("rev", i, x(i))]), K.For(i, n, [
            K.Store("rev", i, K.Load("rev", op("sub", c(n - 1), i), f32))])]),
        K.Kernel("running_sum", [K.Declare(s, K.Const(0.0, f32)), K.For(i, n, [
            K.Assign(s, K.Binary("add", s, x(i), f32)), K.Store("run", i, s)]), K.Store("last", c(0), s)]),
        K.Kernel("max_of_pairs", [K.For(i, 4, [
            K.Declare(m, K.Const(float("-inf"), f32)),
            K.For(r, 2, [K.Assign(m, K.Binary("max", m, x(op("add", op("mul", i, c(2)), r)), f32))],
                  "reduce"),
            K.Store("red", i, m)])]),
        K.Kernel("last_store_wins", [K.For(i, n, [K.Store("bcast", c(0), x(i))])]),
        K.Kernel("temp_nest", [K.For(i, 2, [K.For(j, 4, [K.Store(  # a transpose into a temp
            "t", op("add", op("mul", i, c(4)), j),
            K.Unary("neg", x(op("add", op("mul", j, c(2)), i)), f32))])])]),
        K.Kernel("temp_out", [K.For(i, n, [K.Store("tout", i, K.Load("t", op("sub", c(n - 1), i), f32))])]),
    ]
    program = K.Program("dependences", bufs, kernels, inputs=["x", "idx"], outputs=list(outs),
                        status="status", arena={"t": 0}, arena_bytes=64)
    data = {"x": np.array([0.0, -0.0, 1.5, np.nan, -0.0, 0.0, 3.0, -2.0], np.float32),
            "idx": np.array([1, 5, 2, 1, 9, 3, 0, 5], np.int32)}
    return program, data


def test_dependent_iterations_run_in_order():
    program, data = _dependence_program()
    fast, _ = run_program(program, [data["x"], data["idx"]], {})
    slow, _ = run_program(program, [data["x"], data["idx"]], {}, lanes=False)
    got = dict(zip(program.outputs, fast))
    for a, b in zip(fast, slow):
        assert same_bits(a, b).all()
    x = data["x"].astype(np.float64)
    np.testing.assert_array_equal(got["prefix"], np.cumsum(x).astype(np.float32))
    np.testing.assert_array_equal(got["run"], np.cumsum(x).astype(np.float32))
    np.testing.assert_array_equal(got["rev"], [-2.0, 3.0, 0.0, -0.0, -0.0, 0.0, 3.0, -2.0])
    np.testing.assert_array_equal(got["bcast"], [-2.0])
    scatter = np.zeros(4, np.float32)
    np.add.at(scatter, data["idx"] % 4, data["x"])
    np.testing.assert_array_equal(got["scatter"], scatter)


@needs_llvm
def test_dependent_iterations_agree_with_the_llvm_code():
    program, data = _dependence_program()
    native = run_natively(program, data)
    outs, _ = run_program(program, [data["x"], data["idx"]], {})
    for name, got in zip(program.outputs, outs):
        assert same_bits(got, native[name]).all(), (name, got, native[name])


@needs_llvm
@pytest.mark.parametrize("make", [_mlp_step, _cnn_step])
def test_lowered_programs_agree_with_the_llvm_backend(make):
    from graphc.backends.llvm.runtime import LLVMExecutable
    g = make()
    program = lower(g, plan=True)
    params = initial_params(g)
    exe = LLVMExecutable(g, program, params=params)
    feeds = _step_feeds(g, np.random.default_rng(1))
    native = exe(**feeds)
    got, updates = interpret(g, feeds, params, program=program)
    for a, b in zip(got, native):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for k, v in updates.items():
        np.testing.assert_allclose(v, exe.params[k], rtol=1e-5, atol=1e-6, err_msg=k)


# -- what native code would get wrong silently -------------------------------------------------

def _one_loop_program(index: K.Expr, extent: int = 4, store: bool = False) -> K.Program:
    i = K.Var("i")
    if store:
        body = [K.Store("y", index, K.Load("x", i, f32))]
    else:
        body = [K.Store("y", i, K.Load("x", index, f32))]
    bufs = {"x": K.Buffer("x", 4, f32, "input"), "y": K.Buffer("y", 4, f32, "output"),
            "status": K.Buffer("status", 2, i32, "output")}
    kernel = K.Kernel("shift", [K.For(i, extent, body)], ["x"], ["y"], source="shift(x)")
    return K.Program("oob", bufs, [kernel], inputs=["x"], outputs=["y"], status="status")


@pytest.mark.parametrize("store", [False, True])
def test_an_index_out_of_bounds_is_an_error_naming_kernel_buffer_and_index(store):
    i = K.Var("i")
    program = _one_loop_program(K.Binary("add", i, K.Const(1, i64), i64), store=store)
    with pytest.raises(OutOfBoundsError) as info:
        run_program(program, [np.arange(4, dtype=np.float32)], {})
    text = str(info.value)
    buffer = "y" if store else "x"
    assert "kernel 'shift'" in text and f"{buffer}[4]" in text and "4 elements" in text and "i=3" in text
    assert isinstance(info.value, GraphcError)


def test_a_gemm_reading_past_its_operand_is_an_error():
    bufs = {"a": K.Buffer("a", 6, f32, "input"), "b": K.Buffer("b", 6, f32, "input"),
            "c": K.Buffer("c", 4, f32, "output"), "status": K.Buffer("status", 2, i32, "output")}
    g = K.Gemm("a", "b", "c", 2, 2, 3, lda=4)  # the second row of A ends at element 7
    program = K.Program("gemm_oob", bufs, [K.Kernel("mm", [g], ["a", "b"], ["c"])], inputs=["a", "b"],
                        outputs=["c"], status="status")
    with pytest.raises(OutOfBoundsError, match=r"kernel 'mm'.*a\[6\]"):
        run_program(program, [np.ones(6, np.float32)] * 2, {})


@needs_llvm
@pytest.mark.parametrize("bad", [[4, 0, 7, 2], [-1, 0, 1, 2]])
def test_a_flagged_gather_index_raises_what_the_llvm_backend_raises(bad):
    g = gc.Graph("gather")
    with g:
        table = gc.placeholder("table", (5, 3), "f32")
        ids = gc.placeholder("ids", (4,), "i32")
        g.set_outputs([gc.take(table, ids, axis=0)])
    program = lower(g)
    tv = np.arange(15, dtype=np.float32).reshape(5, 3)
    (good,), _ = run_program(program, {"table": tv, "ids": np.array([4, 0, 2, 2], np.int32)}, {})
    np.testing.assert_array_equal(good.reshape(4, 3), tv[[4, 0, 2, 2]])
    with pytest.raises(KernelRuntimeError) as ours:
        run_program(program, {"table": tv, "ids": np.array(bad, np.int32)}, {})
    exe = gc.compile(g, backend="llvm")
    with pytest.raises(GraphcError) as native:
        exe(table=tv, ids=np.array(bad, np.int32))
    assert "out of range" in str(ours.value)
    assert type(native.value).__name__ == "KernelError"
    assert str(ours.value).splitlines()[0] == str(native.value).splitlines()[0]


def _two_live_temps():
    g = gc.Graph("two_temps")
    with g:
        x = gc.placeholder("x", (4,), "f32")
        g.set_outputs([gc.exp(x) * gc.sin(x + 1.0)])
    return g


def test_temps_that_overlap_in_the_arena_give_a_wrong_answer():
    """The arena is one byte array, as natively: a memory plan putting two live temps on
    the same bytes shows up as a wrong result, not as two separate arrays."""
    g = _two_live_temps()
    program = lower(g, fuse_ops=False, plan=False)
    temps = [n for n in program.arena if program.buffers[n].kind == "temp"]
    assert len(temps) >= 2
    feeds = {"x": np.linspace(-1, 1, 4).astype(np.float32)}
    (want,), _ = run_graph(g, feeds, {})
    (right,), _ = run_program(program, feeds, {})
    np.testing.assert_allclose(right, want, rtol=1e-6)
    program.arena[temps[1]] = program.arena[temps[0]]  # a broken plan: both on the same bytes
    (wrong,), _ = run_program(program, feeds, {})
    assert not np.allclose(wrong, want)


def test_memory_nobody_wrote_reads_as_poison():
    bufs = {"y": K.Buffer("y", 2, f32, "output"), "t": K.Buffer("t", 2, f32, "temp"),
            "status": K.Buffer("status", 2, i32, "output")}
    i = K.Var("i")
    kernel = K.Kernel("read_unwritten", [K.For(i, 2, [K.Store("y", i, K.Load("t", i, f32))])], ["t"], ["y"])
    program = K.Program("poison", bufs, [kernel], outputs=["y"], status="status", arena={"t": 0},
                        arena_bytes=64)
    (y,), _ = run_program(program, [], {})
    assert np.isnan(y).all()
    (y,), _ = run_program(program, [], {}, poison=False)
    np.testing.assert_array_equal(y, [0.0, 0.0])


# -- the calling convention -------------------------------------------------------------------

def test_inputs_by_position_buffer_name_or_graph_name_and_clear_errors():
    g = _two_live_temps()
    program = lower(g)
    x = np.linspace(-1, 1, 4).astype(np.float32)
    results = [run_program(program, args, {})[0][0] for args in ([x], {"in_x": x}, {"x": x})]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    with pytest.raises(KernelInterpretError, match="no input 'y'"):
        run_program(program, {"y": x}, {})
    with pytest.raises(KernelInterpretError, match="1 inputs"):
        run_program(program, [x, x], {})
    with pytest.raises(KernelInterpretError, match="no parameter 'w'"):
        run_program(program, [x], {"w": x})
    with pytest.raises(KernelInterpretError, match="expected f32 data"):
        run_program(program, [np.arange(4)], {})


def test_the_callers_arrays_are_never_written():
    g = _mlp_step()
    program = lower(g, plan=True)  # updates parameters in place
    params = initial_params(g)
    before = {k: v.copy() for k, v in params.items()}
    feeds = _step_feeds(g, np.random.default_rng(2))
    _, updates = interpret(g, feeds, params, program=program)
    for k in params:
        np.testing.assert_array_equal(params[k], before[k])
    assert any(not np.array_equal(updates[k], before[k]) for k in updates)


def test_an_unknown_scalar_op_is_a_clear_error():
    i = K.Var("i")
    bufs = {"x": K.Buffer("x", 2, f32, "input"), "y": K.Buffer("y", 2, f32, "output")}
    kernel = K.Kernel("odd", [K.For(i, 2, [K.Store("y", i, K.Unary("cbrt", K.Load("x", i, f32), f32))])])
    program = K.Program("odd", bufs, [kernel], inputs=["x"], outputs=["y"])
    with pytest.raises(KernelInterpretError, match="kernel 'odd'.*unary cbrt is not defined for f32"):
        run_program(program, [np.ones(2, np.float32)], {})


def test_padding_an_empty_tensor_reads_nothing():
    g = gc.Graph("pad_empty")
    with g:
        x = gc.placeholder("x", (0, 2), "f32")
        g.set_outputs([gc.ops.emit("pad", x, low=[1, 0], high=[1, 1])])
    (y,), _ = run_program(lower(g), [np.zeros((0, 2), np.float32)], {})
    np.testing.assert_array_equal(y, np.zeros(6, np.float32))


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d"])
def test_window_ops_over_an_empty_batch_lower_to_nothing(op):
    """An empty batch once divided by zero in image_runs (a raw ZeroDivisionError)."""
    g = gc.Graph("empty_batch")
    with g:
        a = gc.placeholder("a", (0, 1, 4, 4), "f32")
        y = gc.conv2d(a, gc.constant(np.ones((2, 1, 3, 3), np.float32))) if op == "conv2d" \
            else gc.max_pool2d(a, 2)
        g.set_outputs([y])
    (out,), _ = run_program(lower(g), [np.zeros((0, 1, 4, 4), np.float32)], {})
    assert out.size == 0
