"""A fuzz case from a seed: a random graph (inference, gradients of a scalar loss through
it, or a whole training step with SGD or Adam), the arrays to call it with, and the
parameter values. The same seed always gives the same case."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from ..ir.errors import DifferentiationError
from ..ir.graph import Graph, Value
from ..ir.registry import all_ops
from ..ir.validate import random_array
from ..passes.dce import eliminate_dead_code
from .graphs import build_random_graph

KINDS = ("inference", "grad", "train")


@dataclass
class Case:
    seed: int
    kind: str
    graph: Graph  # outputs and updates set
    inputs: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    steps: int = 1  # calls in a row (train steps run twice: state carried between calls)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (f"seed {self.seed}: {self.kind}, {len(self.graph.nodes)} nodes, "
                f"ops {sorted({n.op for n in self.graph.nodes})}")


def op_weights() -> dict[str, float]:
    """Odds per registry op, from what it is: the patterns fusion and lowering rewrite
    (contractions with elementwise and view consumers, reductions with their producers)
    come up several times per graph, not once in a thousand."""
    out = {}
    for name, op in all_ops().items():
        if op.lower_epilogue is not None:
            out[name] = 10.0
        elif op.view:
            out[name] = 6.0
        elif op.scalar is not None:
            out[name] = 2.0
        elif op.combine is not None:
            out[name] = 3.0
        else:
            out[name] = 1.0
    return out


def _graph_options(rnd: random.Random) -> dict:
    return {
        "op_weights": op_weights() if rnd.random() < 0.7 else None,
        "chain": rnd.choice([0.0, 0.5, 0.8, 0.9]),
        "follow_ops": tuple(n for n, op in all_ops().items() if op.scalar is not None or op.view),
        "chain_heads": tuple(n for n, op in all_ops().items() if op.lower_epilogue is not None
                             or op.combine is not None),
        "max_nodes": rnd.choice([3, 5, 8, 10, 12]),
        "max_rank": rnd.choice([2, 3, 4]),
        "max_dim": rnd.choice([3, 4, 5, 6]),
        "dtypes": rnd.choice([("f32",), ("f32",), ("f32",), ("f32", "i32", "bool"), ("f64",)]),
        "params": rnd.random() < 0.7,
        "constants": rnd.random() < 0.8,
        "max_inputs": rnd.choice([1, 2, 3]),
    }


def _scalar_loss(g: Graph, values: list[Value], rng: np.random.Generator) -> Value:
    """sum_i sum(v_i * w_i) with random constant weights: every element's gradient differs."""
    total = None
    for v in values:
        w = g.add_constant(rng.standard_normal(v.shape).astype(v.dtype.np_dtype), v.dtype)
        p = g.add_node("mul", [v, w]).outputs[0]
        s = g.add_node("sum", [p], {"axes": tuple(range(v.type.rank)), "keepdims": False}).outputs[0]
        total = s if total is None else g.add_node("add", [total, s]).outputs[0]
    return total


def _differentiable(g: Graph) -> list[Value]:
    """Float outputs of the dtype of the first one (a loss sums values of one dtype)."""
    fl = [v for v in g.outputs if v.dtype.name in ("f32", "f64")]
    return [v for v in fl if v.dtype == fl[0].dtype]


def make_case(seed: int, kind: str | None = None) -> Case | None:
    """The case for a seed (None when the drawn graph has nothing of that kind to test)."""
    from ..builder import Graph as BuilderGraph
    from ..passes.autodiff import grad
    rnd = random.Random(seed)
    kind = kind or rnd.choices(KINDS, weights=(5, 3, 2))[0]
    opts = _graph_options(rnd)
    if kind != "inference":
        opts["dtypes"] = rnd.choice([("f32",), ("f32",), ("f64",), ("f32", "i32")])
        if kind == "train":
            opts["params"] = True
        # mostly ops with a gradient: an op without one on the loss's path (winograd
        # transforms) makes autodiff refuse the graph, and the case is skipped
        if rnd.random() < 0.7:
            opts["ops"] = tuple(name for name, op in all_ops().items() if op.differentiable)
    g = build_random_graph(seed, graph_type=BuilderGraph, name=f"fuzz{seed}", **opts)
    rng = np.random.default_rng(seed)
    if kind == "grad":
        ys = _differentiable(g)
        wrt = [v for v in list(g.inputs) + list(g.params)
               if ys and v.dtype == ys[0].dtype and rnd.random() < 0.8]
        if not ys or not wrt:
            return None
        loss = _scalar_loss(g, ys, rng)
        try:
            grads = grad(g, loss, wrt)
        except DifferentiationError:
            return None
        keep = [v for v in g.outputs if rnd.random() < 0.3]
        g.set_outputs([loss] + keep + grads)
    elif kind == "train":
        ys = _differentiable(g)
        trainable = [p for p in g.params if p.trainable]
        if not ys or not trainable or any(v.dtype != ys[0].dtype for v in trainable):
            return None
        loss = _scalar_loss(g, ys, rng)
        from .. import optim
        from ..tensor import Tensor
        opt = rnd.choice([optim.SGD(0.05), optim.SGD(0.05, momentum=0.9, nesterov=rnd.random() < 0.5),
                          optim.SGD(0.05, weight_decay=0.01), optim.Adam(0.01)])
        try:
            with g:
                ups = opt.updates(Tensor(loss, g))
        except DifferentiationError:
            return None
        g.updates = {t.name: new.value for t, new in ups.items()}
        g.set_outputs([loss])
    eliminate_dead_code(g, prune_signature_too=True)  # what compile would drop anyway
    inputs = {v.name: random_array(v.type, rng) for v in g.inputs}
    params = {p.name: (g.param_values[p.name] if p.name in g.param_values
                       else random_array(p.type, rng)) for p in g.params}
    return Case(seed, kind, g, inputs, params, steps=2 if kind == "train" else 1)
