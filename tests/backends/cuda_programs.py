"""The graphs the CUDA tests render: every registry op (random-graph op examples), the
example and benchmark models, and GEMM shapes the models do not reach (f16 tensor cores,
f64, integers, transposes, broadcast batches, a fused epilogue)."""
from __future__ import annotations

from typing import Iterator

import numpy as np

import graphc as gc
from graphc.backends import backend_graph_passes, backend_needs
from graphc.compile import prepare
from graphc.ir import all_ops
from graphc.ir import kernel as K
from graphc.ir.dtypes import f32
from graphc.passes.dce import eliminate_dead_code
from graphc.pipeline import lower_program
from graphc.passes.manager import Pipeline, standard_passes

from tests.examples import digits_cnn, mlp_step
from tests.ir.random_graphs import op_example


def with_outputs(g):
    if not g.outputs:
        g.outputs = [o for n in g.nodes for o in n.outputs]
    return g


def optimised(g, outputs=None) -> gc.ir.Graph:
    """The graph as gc.compile(backend="cuda") hands it to the backend."""
    work, _ = prepare(g, outputs)
    Pipeline(standard_passes(2, backend_graph_passes("cuda"))).run(work)
    eliminate_dead_code(work)
    return work


def program(g, outputs=None) -> K.Program:
    return lowered(g, outputs)[1]


def lowered(g, outputs=None) -> tuple[gc.ir.Graph, K.Program]:
    """(the optimised graph, its kernel-IR program), as the CUDA backend gets them."""
    work = optimised(g, outputs)
    return work, lower_program(work, backend_needs("cuda"))


def op_graphs(seeds=(0, 1), f16: bool = True) -> Iterator[tuple[str, gc.ir.Graph]]:
    for op in sorted(all_ops()):
        for seed in seeds:
            g = op_example(op, seed=seed)
            if g is not None:
                yield f"{op}_{seed}", with_outputs(g)
        if f16:
            g = op_example(op, seed=0, dtypes=("f16",))
            if g is not None:
                yield f"{op}_f16", with_outputs(g)


def gemm_graphs() -> Iterator[tuple[str, gc.ir.Graph]]:
    cases = [("f16", (70, 40), (40, 90), {}), ("f64", (33, 17), (17, 5), {}),
             ("i32", (9, 13), (13, 7), {}), ("f32", (2, 1, 30, 20), (5, 30, 20), {"transpose_b": True}),
             ("f16", (45, 64), (45, 19), {"transpose_a": True}), ("f32", (160, 72), (72, 200), {})]
    for n, (dt, sa, sb, attrs) in enumerate(cases):
        g = gc.Graph(f"mm{n}_{dt}")
        with g:
            a = gc.placeholder("a", sa, dt)
            b = gc.placeholder("b", sb, dt)
            g.set_outputs([gc.ops.emit("matmul", a, b, **attrs)])
        yield g.name, g


def reduction_graphs() -> Iterator[tuple[str, gc.ir.Graph]]:
    """Rows long enough to need every lane of a group (and several warps), whole-tensor
    reductions (one group of 1024), column reductions, fused softmax and layer norm, and
    an elementwise chain longer than the emulator's capped grid."""
    def graph(name, shape, dt, build):
        g = gc.Graph(name)
        with g:
            x = gc.placeholder("x", shape, dt)
            g.set_outputs(build(x))
        return name, g
    yield graph("rows_f32", (5, 1000), "f32",
                lambda x: [gc.sum(x, axis=1), gc.max(x, axis=1), gc.min(x, axis=1), gc.mean(x, axis=1)])
    yield graph("whole_f64", (3000,), "f64", lambda x: [gc.sum(x), gc.max(x)])
    yield graph("rows_i32", (4, 500), "i32", lambda x: [gc.sum(x, axis=1), gc.max(x, axis=1)])
    yield graph("columns", (300, 70), "f32", lambda x: [gc.sum(x, axis=0), gc.mean(x, axis=(0,))])
    yield graph("argmax_rows", (7, 100), "f32", lambda x: [gc.argmax(x, axis=1)])
    yield graph("softmax_rows", (6, 333), "f32", lambda x: [gc.softmax(x, axis=1), gc.log_softmax(x, axis=1)])
    yield graph("layer_norm_rows", (4, 256), "f32",
                lambda x: [gc.layer_norm(x, gc.constant(np.linspace(0.5, 1.5, 256, dtype=np.float32)),
                                         gc.constant(np.full(256, 0.1, np.float32)), axis=1)])
    yield graph("chain", (1000, 37), "f32", lambda x: [gc.tanh(x * 1.5 + 0.5) * gc.sigmoid(x) + x * x - 1.0])


def model_graphs() -> Iterator[tuple[str, gc.ir.Graph]]:
    yield "digits_cnn_step", digits_cnn().build_train_step(batch=16, eval_batch=8)
    yield "mlp_step", mlp_step().build()


def epilogue_program() -> K.Program:
    """C = relu(A @ B + bias[j]) with the epilogue fused into the GEMM (hand-built: the
    lowering does not fuse epilogues yet)."""
    m, n, k = 37, 29, 23
    bufs = {"a": K.Buffer("a", m * k, f32, "input"), "b": K.Buffer("b", k * n, f32, "input"),
            "bias": K.Buffer("bias", n, f32, "input"), "c": K.Buffer("c", m * n, f32, "output")}
    acc = K.LocalRef("acc", f32)
    shifted = K.Binary("add", acc, K.Load("bias", K.Var("j"), f32), f32)
    epi = K.Binary("max", shifted, K.Const(0.0, f32), f32)
    gemm = K.Gemm("a", "b", "c", m, n, k, epilogue=epi)
    return K.Program("gemm_epilogue", bufs, [K.Kernel("gemm_relu", [gemm], ["a", "b", "bias"], ["c"])],
                     inputs=["a", "b", "bias"], outputs=["c"])


def epilogue_reference(arrays: dict[str, np.ndarray]) -> np.ndarray:
    a = arrays["a"].reshape(37, 23).astype(np.float64)
    b = arrays["b"].reshape(23, 29).astype(np.float64)
    return np.maximum(a @ b + arrays["bias"], 0).reshape(-1)


def all_graphs(seeds=(0, 1)) -> Iterator[tuple[str, gc.ir.Graph]]:
    yield from op_graphs(seeds)
    yield from gemm_graphs()
    yield from reduction_graphs()
    yield from model_graphs()
