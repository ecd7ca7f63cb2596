"""The kernel-IR verifier (ir/kernel_verify.py): every program the compiler makes passes it,
and every broken invariant it guards fails with a message naming the kernel (or buffer).

Its bounds arithmetic is checked against brute force: for random affine stores, the
verifier rejects exactly the programs whose largest or smallest index, enumerated over
every iteration with numpy, leaves the buffer, and the kernel-IR interpreter's run-time
bounds check agrees."""
from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

import graphc as gc
from graphc.compile import optimize_graph
from graphc.ir import all_ops
from graphc.ir import kernel as K
from graphc.ir.dtypes import f32, f64, i32, i64
from graphc.ir.errors import KernelVerificationError, VerificationError
from graphc.ir.interpret import OutOfBoundsError, run_program
from graphc.ir.kernel_verify import ARENA_ALIGN, affine_range, verify_program
from graphc.passes import lower as lower_mod
from graphc.passes.lower import lower

from tests import examples
from tests.ir.random_graphs import op_example

LOWERINGS = [dict(), dict(plan=False), dict(nested_gemm=False, donate=False),
             dict(gemm_panels={"f32": 8, "f64": 4}), dict(fuse_ops=False)]


def _resnet_block_net() -> gc.Graph:
    """The first stages of ResNet-18 (benchmarks/conv.py) at a small image and width: 3x3
    and strided 1x1 convolutions, residual adds, global pooling."""
    g = gc.Graph("resnet_head")
    with g:
        x = gc.placeholder("x", (1, 3, 16, 16), "f32")
        x = gc.relu(gc.nn.Conv2d(3, 16, 3, padding=1)(x))
        c = 16
        for width, stride in [(16, 1), (32, 2)]:
            y = gc.relu(gc.nn.Conv2d(c, width, 3, stride=stride, padding=1)(x))
            y = gc.nn.Conv2d(width, width, 3, padding=1)(y)
            short = gc.nn.Conv2d(c, width, 1, stride=stride)(x) if stride != 1 or c != width else x
            x = gc.relu(y + short)
            c = width
        g.set_outputs([gc.global_avg_pool2d(x)])
    return g


MODELS = {
    "mlp_step": lambda: examples.mlp_step().build(),
    "digits_cnn": lambda: examples.digits_cnn().build_train_step(),
    "resnet_head": _resnet_block_net,
}


def _optimised(graph: gc.Graph) -> gc.Graph:
    optimised, _, _ = optimize_graph(graph, graph.outputs, updates=graph.updates or None)
    return optimised


@pytest.mark.parametrize("model", sorted(MODELS))
def test_example_models_lower_to_verified_programs(model: str) -> None:
    optimised = _optimised(MODELS[model]())
    for kw in LOWERINGS:
        program = lower(optimised, **({"fuse_ops": None} | kw))
        verify_program(program, placed=True)
        assert program.kernels, model


@pytest.mark.parametrize("name", ["resnet18", "vgg"])
def test_benchmark_networks_lower_to_verified_programs(name: str) -> None:
    """The convolution benchmark's full-size networks (batch 1, 112x112): Winograd, im2col
    and direct convolutions with their epilogues, at the sizes the benchmarks time."""
    build = getattr(examples.load("benchmarks/conv.py", "bench_conv"), name)
    g = gc.Graph(name)
    with g:
        y = build(gc.placeholder("x", (1, 3, 112, 112), "f32"))
    g.set_outputs([y])
    verify_program(lower(_optimised(g), fuse_ops=None), placed=True)


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_gemm_epilogues_of_every_float_dtype_verify(dtype: str) -> None:
    """A matmul with a bias and relu in its epilogue: f16 epilogues read the accumulator
    as f16 (rounded, as an unfused add would see it), which the verifier once refused
    (ONNX's test_attention_4d_fp16_expanded)."""
    g = gc.Graph("epi")
    with g:
        x = gc.placeholder("x", (4, 8), dtype)
        w = gc.constant(np.ones((8, 6), np.dtype({"f16": np.float16, "f32": np.float32,
                                                    "f64": np.float64}[dtype])))
        g.set_outputs([gc.relu(x @ w + 1.0)])
    program = lower(_optimised(g), fuse_ops=None)
    assert any(isinstance(s, K.Gemm) and s.epilogue is not None
               for k in program.kernels for s in K.walk_stmts(k.body))
    verify_program(program, placed=True)


# every registry op: one example graph each, lowered fused and planned, and unfused unplanned
OPS = sorted(all_ops())


@pytest.mark.parametrize("op", OPS)
def test_registry_ops_lower_to_verified_programs(op: str) -> None:
    g = op_example(op)
    if g is None:
        pytest.skip(f"no example graph for {op}")
    for kw in (dict(), dict(plan=False, fuse_ops=False)):
        verify_program(lower(g, **kw))


def test_lowering_verifies_after_every_kernel_ir_step(monkeypatch) -> None:
    """passes/lower.py calls the verifier on the planned program at level 1 and after
    lowering and each step at level 2 (with the arena counted as placed only once it is),
    and a broken step stops the compile."""
    seen: list[bool] = []
    real = lower_mod.verify_program

    def spy(p, *, placed=None):
        seen.append(bool(placed))
        real(p, placed=placed)
    monkeypatch.setattr(lower_mod, "verify_program", spy)
    program = lower(_tiny_graph(), verify=2)
    assert [s[0] for s in program.steps][0] == "lowered"
    assert len(seen) == len(program.steps) and seen[-1] and not seen[0]
    seen.clear()
    lower(_tiny_graph(), verify=1)
    assert seen == [True]
    seen.clear()
    lower(_tiny_graph(), verify=0)
    assert seen == []

    from graphc.passes import memory
    plan_program = memory.plan_program

    def corrupting(p, **kw):  # a "pass" that loses a kernel's declared write
        p.kernels[0].writes.clear()
        return plan_program(p, **kw)
    monkeypatch.setattr(memory, "plan_program", corrupting)
    with pytest.raises(KernelVerificationError, match="not among the kernel's writes"):
        lower(_tiny_graph())


# -- hand-broken programs ------------------------------------------------------------------

def _tiny_graph() -> gc.Graph:
    g = gc.Graph("tiny")
    with g:
        x = gc.placeholder("x", (4, 6), "f32")
        y = gc.relu(gc.nn.Linear(6, 5, name="l")(x))
        g.set_outputs([gc.sum(y * y), gc.exp(x) + 1.0])
    return g


def _tiny() -> tuple[K.Program, K.Kernel, K.Gemm, K.Kernel, K.Store]:
    """A planned program with a GEMM kernel and a loop kernel: (program, GEMM kernel, its
    Gemm, a kernel with a loop, its first Store under a loop)."""
    p = lower(_tiny_graph())
    verify_program(p, placed=True)
    gk = next(k for k in p.kernels if any(isinstance(s, K.Gemm) for s in k.body))
    gemm = next(s for s in gk.body if isinstance(s, K.Gemm))
    lk = next(k for k in p.kernels if any(isinstance(s, K.For) and
                                          any(isinstance(t, K.Store) for t in K.walk_stmts(s.body))
                                          for s in k.body))
    store = next(s for s in K.walk_stmts(lk.body) if isinstance(s, K.Store) and
                 not isinstance(s.index, K.Const))
    return p, gk, gemm, lk, store


def _fails(p: K.Program, *patterns: str, placed: bool | None = None) -> str:
    with pytest.raises(KernelVerificationError) as info:
        verify_program(p, placed=placed)
    text = str(info.value)
    for pat in patterns:
        assert pat in text, (pat, text)
    assert isinstance(info.value, VerificationError)  # a GraphcError callers already catch
    return text


def test_out_of_range_store() -> None:
    p, _, _, lk, st = _tiny()
    size = p.buffers[st.buffer].size
    st.index = K.Binary("add", st.index, K.Const(size, i64), i64)
    text = _fails(p, f"kernel {lk.name!r}", "leaves the buffer", st.buffer)
    assert "in statement:" in text and st.buffer in text.split("in statement:")[1]


def test_negative_index_load() -> None:
    p, _, _, lk, _ = _tiny()
    decl = next(s for s in K.walk_stmts(lk.body) if isinstance(s, K.Declare)
                and isinstance(s.init, K.Load) and not isinstance(s.init.index, K.Const))
    decl.init = replace(decl.init, index=K.Binary("sub", decl.init.index, K.Const(1, i64), i64))
    _fails(p, f"kernel {lk.name!r}", f"load from {decl.init.buffer}[-1..", "leaves the buffer")


def test_undeclared_and_unknown_buffers() -> None:
    p, _, _, lk, st = _tiny()
    lk.writes.remove(st.buffer)
    _fails(p, f"kernel {lk.name!r}", f"stores into buffer {st.buffer!r}", "not among the kernel's writes")
    p, _, _, lk, st = _tiny()
    st.buffer = "nowhere"
    lk.writes.append("nowhere")
    _fails(p, f"kernel {lk.name!r}", "'nowhere'", "does not have")
    p, gk, gemm, _, _ = _tiny()
    gk.reads.remove(gemm.b)
    _fails(p, f"kernel {gk.name!r}", "gemm reads B from", gemm.b)


def test_dtype_mismatches() -> None:
    p, _, _, lk, st = _tiny()
    st.value = K.Binary("add", st.value, K.Const(1.0, f64), f32)
    _fails(p, f"kernel {lk.name!r}", "add of f32 and f64")
    p, _, _, lk, st = _tiny()
    st.value = K.Cast(st.value, f64)
    _fails(p, f"kernel {lk.name!r}", "stores a f64 value")
    p, _, _, lk, st = _tiny()
    st.value = K.Cast(K.Compare("lt", st.value, K.Const(0.0, f32), f32), f32)
    _fails(p, f"kernel {lk.name!r}", "lt of f32 and f32 typed f32")
    p, _, _, lk, st = _tiny()
    st.index = K.Cast(st.index, i32)
    _fails(p, f"kernel {lk.name!r}", "i32 index")


def test_scalar_function_must_exist_for_the_dtype() -> None:
    p, _, _, lk, st = _tiny()
    st.value = K.Cast(K.Unary("sqrt", K.Cast(st.value, i64), i64), f32)  # sqrt is float-only
    _fails(p, f"kernel {lk.name!r}", "'sqrt' is not defined on i64")
    p, _, _, lk, st = _tiny()
    st.value = K.Unary("expm2", st.value, f32)
    _fails(p, f"kernel {lk.name!r}", "'expm2'")


def test_loop_variables_scope() -> None:
    p, _, _, lk, st = _tiny()
    loop = next(s for s in lk.body if isinstance(s, K.For))
    loop.body = [K.For(loop.var, 2, loop.body)]
    _fails(p, f"kernel {lk.name!r}", f"rebinds loop variable {loop.var.name!r}")
    p, _, _, lk, st = _tiny()
    lk.body.append(K.Store(st.buffer, K.Var("nope"), st.value))
    _fails(p, f"kernel {lk.name!r}", "'nope' used outside its loop")


def test_locals_declared_before_use() -> None:
    p, _, _, lk, st = _tiny()
    st.value = K.Binary("add", st.value, K.LocalRef("ghost", f32), f32)
    _fails(p, f"kernel {lk.name!r}", "$ghost before it is declared")


@pytest.mark.parametrize("field, value, pattern", [
    ("ldc", 4, "ldc=4 is less than C's 5 columns"),
    ("ldc", 6, "gemm C"),      # rows 6 apart: the last row runs past C's 20 elements
    ("lda", 7, "gemm A"),
    ("ldb", 4, "ldb=4 is less than B's 5 columns"),
    ("k", 7, "lda=6 is less than A's 7 columns"),
    ("m", 5, "gemm C"),
    ("offset_c", 1, "gemm C"),
    ("batch", 2, "gemm C"),    # a second C matrix (at stride_c=20) past C's 20 elements
    ("b_panels", 3, "not a multiple of its B panel width"),
])
def test_bad_gemm_operands(field: str, value, pattern: str) -> None:
    p, gk, gemm, _, _ = _tiny()
    changes = {field: value}
    if field == "batch":
        changes["stride_c"] = 20
    i = gk.body.index(gemm)
    gk.body[i] = replace(gemm, **changes)
    _fails(p, f"kernel {gk.name!r}", pattern)


def test_gemm_epilogue_loads_are_bounds_checked() -> None:
    p, gk, gemm, _, _ = _tiny()
    bias = next(x for x in K.walk_exprs(gemm.epilogue) if isinstance(x, K.Load))
    # the bias is read at the column j: read it at j + m*n instead
    wrong = replace(bias, index=K.Binary("add", bias.index, K.Const(20, i64), i64))
    gk.body[gk.body.index(gemm)] = replace(
        gemm, epilogue=K.map_expr(gemm.epilogue, lambda x: wrong if x == bias else x))
    _fails(p, f"kernel {gk.name!r}", "load from", bias.buffer)


def test_arena_placement() -> None:
    p, *_ = _tiny()
    temp = next(iter(p.arena))
    p.arena[temp] += 4
    _fails(p, f"temp {temp!r}", f"not a multiple of {ARENA_ALIGN}")
    p, *_ = _tiny()
    p.arena[temp] = p.arena_bytes
    _fails(p, f"temp {temp!r}", "runs past the arena")
    p, *_ = _tiny()
    del p.arena[temp]
    verify_program(p)  # not yet planned: arena offsets come with the memory plan
    _fails(p, f"temp {temp!r} has no arena offset", placed=True)


def test_aliases_and_interface() -> None:
    p, *_ = _tiny()
    temp = next(iter(p.arena))
    del p.arena[temp]
    p.aliases[temp] = ("in_x", 10)  # 20 elements from 10 of 24
    _fails(p, f"alias {temp!r}", "runs past")
    p, *_ = _tiny()
    p.aliases["out0"] = ("missing", 0)
    _fails(p, "unknown buffer 'missing'")
    p, *_ = _tiny()
    p.outputs.append("in_x")
    _fails(p, "outputs names", "in_x", "not of kind output")
    p, *_ = _tiny()
    p.updates["l.b"] = "param_l.w"
    _fails(p, "update of 'l.b'", "not of kind output")
    p, *_ = _tiny()
    p.inputs.append("nothing")
    _fails(p, "'nothing', which does not exist")


def test_read_only_buffers_are_not_written() -> None:
    p, gk, gemm, _, _ = _tiny()
    gk.writes.append(gemm.b)
    gk.body[gk.body.index(gemm)] = replace(gemm, c=gemm.b, ldc=5, m=1)
    _fails(p, f"kernel {gk.name!r}", f"writes parameter buffer {gemm.b!r}")


# -- the bounds arithmetic against brute force ---------------------------------------------

def test_affine_range_is_exact() -> None:
    rng = np.random.default_rng(0)
    i, j = K.Var("i"), K.Var("j")
    for _ in range(200):
        a, b, c = (int(x) for x in rng.integers(-7, 8, 3))
        ei, ej = (int(x) for x in rng.integers(1, 6, 2))
        e = K.Binary("sub", K.Binary("add", K.Binary("mul", K.Const(a, i64), i, i64),
                                     K.Binary("mul", j, K.Const(b, i64), i64), i64),
                     K.Const(-c, i64), i64)
        values = [a * x + b * y + c for x, y in itertools.product(range(ei), range(ej))]
        assert affine_range(e, {"i": ei, "j": ej}) == (min(values), max(values))
    nonaffine = K.Binary("mul", i, j, i64)
    assert affine_range(nonaffine, {"i": 2, "j": 2}) is None
    assert affine_range(K.Binary("div", i, K.Const(2, i64), i64), {"i": 2}) is None


def _store_program(size: int, a: int, b: int, c: int, ei: int, ej: int) -> K.Program:
    i, j = K.Var("i"), K.Var("j")
    idx = K.Binary("add", K.Binary("add", K.Binary("mul", i, K.Const(a, i64), i64),
                                   K.Binary("mul", j, K.Const(b, i64), i64), i64), K.Const(c, i64), i64)
    body = [K.For(i, ei, [K.For(j, ej, [K.Store("out0", idx, K.Const(1.0, f32))])])]
    bufs = {"out0": K.Buffer("out0", size, f32, "output")}
    return K.Program("p", bufs, [K.Kernel("k0", body, [], ["out0"])], outputs=["out0"])


def test_verifier_agrees_with_the_interpreters_bounds_check() -> None:
    rng = np.random.default_rng(1)
    verdicts = set()
    for _ in range(120):
        size = int(rng.integers(1, 30))
        a, b, c = (int(x) for x in rng.integers(-3, 6, 3))
        ei, ej = (int(x) for x in rng.integers(1, 5, 2))
        p = _store_program(size, a, b, c, ei, ej)
        idx = np.add.outer(np.arange(ei) * a, np.arange(ej) * b) + c
        inside = bool(idx.min() >= 0 and idx.max() < size)
        try:
            verify_program(p)
            ok = True
        except KernelVerificationError as e:
            assert "kernel 'k0'" in str(e)
            ok = False
        assert ok == inside, (size, a, b, c, ei, ej)
        try:
            run_program(p, {}, {})
            ran = True
        except OutOfBoundsError:
            ran = False
        assert ran == inside
        verdicts.add(ok)
    assert verdicts == {True, False}  # both kinds of program were drawn


def test_zero_extent_loops_and_empty_gemms_are_not_accesses() -> None:
    p = _store_program(1, 5, 5, 100, 1, 1)
    p.kernels[0].body[0].extent = 0
    verify_program(p)
    p, gk, gemm, _, _ = _tiny()
    gk.body[gk.body.index(gemm)] = replace(gemm, m=0, lda=1, offset_c=1000)
    verify_program(p)
