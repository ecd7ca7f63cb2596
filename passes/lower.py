"""Lowering: a graph becomes a kernel IR Program (the input of every code generator).

Composite ops without a kernel of their own are first decomposed into registry ops
(passes/legalize.py). Then each node becomes kernels through its registry entry: an
elementwise op through its `scalar` hook and the generic elementwise loop nest, other ops
through their `lower` hook. Graph outputs and parameter updates get buffers of kind
`output`; other node results are arena temps (or views of another buffer when the op only
reinterprets its input).
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from ..ir import observe
from ..ir.dtypes import DType, i32
from ..ir.errors import GraphcError
from ..ir.graph import Graph, Node, Value
from ..ir.kernel import Buffer, For, Load, Program, Store
from ..ir.kernel_verify import verify_program
from ..ir.fused import lower_group as lower_fused
from ..ir.lowering import LowerCtx, lower_elementwise
from ..ir.provenance import Provenance
from ..ir.registry import get_op
from ..ir.validate import verify_level
from .dce import eliminate_dead_code

_log = logging.getLogger("graphc.passes")


class LoweringError(GraphcError):
    """A node that no lowering rule covers."""


def lower(graph: Graph, fuse_ops: bool | None = True, plan: bool = True, *,
          nested_gemm: bool = True, donate: bool = True, donated_inputs: Iterable[str] = (),
          gemm_panels: dict[str, int] | None = None, verify: int | None = None) -> Program:
    """Legalise, prune, fuse and lower a copy of graph. fuse_ops: True runs the fusion pass,
    False lowers every node on its own, None keeps the groups the graph already has (as
    gc.compile's pass pipeline left them). plan: parameter updates overwrite the parameters
    (passes/donate.py), kernels are reordered to free memory early (passes/schedule.py),
    arena temps share bytes by liveness and outputs overwrite dead inputs in place
    (passes/memory.py, passes/inplace.py); False gives every temp bytes of its own.
    nested_gemm=False decomposes ops whose kernels call GEMM inside loop nests, donate=False
    keeps parameter updates in output buffers of their own (both the CUDA backend's choice:
    its launches are asynchronous, so a failing call cannot stop before an in-place update).
    donated_inputs: graph inputs whose arrays kernels may overwrite (gc.compile's donate).
    gemm_panels: {dtype name: panel width} of the backend's GEMM (K.Gemm.b_panels), so
    lowerings that build a GEMM operand (convolution columns) can write it pre-packed.
    verify: the kernel-IR verifier's level (None: GRAPHC_VERIFY; see after_step)."""
    from .fusion import fuse
    from .legalize import has_flat_kernel, has_kernel, legalize
    observe.current().stage("lower to kernel IR")
    g = graph.copy()
    legalize(g, keep=has_kernel if nested_gemm else has_flat_kernel)
    eliminate_dead_code(g)
    if fuse_ops:
        fuse(g)
    elif fuse_ops is False:
        for n in g.nodes:
            n.group = None
    lowering = _Lowering(g, plan=plan, donate=donate, donated_inputs=frozenset(donated_inputs),
                         gemm_panels=gemm_panels)
    lowering.verify = verify
    return lowering.run()


class _Lowering:
    def __init__(self, g: Graph, plan: bool = True, donate: bool = True,
                 donated_inputs: frozenset[str] = frozenset(), gemm_panels: dict[str, int] | None = None) -> None:
        self.g = g
        self.gemm_panels = gemm_panels
        self.plan = plan
        self.donate = donate
        self.donated_inputs = donated_inputs
        self.p = Program(g.name, {}, [])
        self._step_t0 = time.perf_counter()
        self.buf: dict[Value, str] = {}
        self.counter = 0

    def add_buffer(self, name: str, size: int, dtype: DType, kind: str) -> str:
        assert name not in self.p.buffers, name
        self.p.buffers[name] = Buffer(name, size, dtype, kind)
        return name

    def new_temp(self, size: int, dtype: DType) -> str:
        self.counter += 1
        return self.add_buffer(f"scratch{self.counter}", size, dtype, "temp")

    def new_constant(self, data, dtype: DType) -> str:
        self.counter += 1
        name = self.add_buffer(f"derived{self.counter}", int(data.size), dtype, "const")
        self.p.constants[name] = data
        return name

    def add_error(self, message: str) -> int:
        self.p.errors.append(message)
        return len(self.p.errors)

    def alias(self, out: Value, src: Value) -> bool:
        name = self.buf[out]
        if self.p.buffers[name].kind != "temp":
            return False  # results the caller receives are real buffers
        base, offset = self.buf[src], 0
        while base in self.p.aliases:
            base, extra = self.p.aliases[base]
            offset += extra
        self.p.aliases[name] = (base, offset)
        return True

    def run(self) -> Program:
        g, p = self.g, self.p
        for v in g.inputs:
            self.buf[v] = self.add_buffer(f"in_{v.name}", v.type.size, v.dtype, "input")
            p.inputs.append(self.buf[v])
        for v in g.params:
            self.buf[v] = self.add_buffer(f"param_{v.name}", v.type.size, v.dtype, "param")
            p.params[v.name] = self.buf[v]
        for i, c in enumerate(g.constants):
            self.buf[c] = self.add_buffer(f"const{i}", c.type.size, c.dtype, "const")
            p.constants[self.buf[c]] = c.data
        p.status = self.add_buffer("status", 2, i32, "output")

        # Results: a node value returned once becomes its own output buffer; anything else
        # (inputs, params, constants, repeats) is copied into a fresh one at the end.
        owner: dict[Value, str] = {}
        copies: list[tuple[Value, str]] = []
        results = [(f"out{i}", v) for i, v in enumerate(g.outputs)] + \
                  [(f"upd_{k}", v) for k, v in g.updates.items()]
        for name, v in results:
            self.add_buffer(name, v.type.size, v.dtype, "output")
            if v.kind == "node" and v not in owner:
                owner[v] = name
            else:
                copies.append((v, name))
        p.outputs = [name for name, _ in results[:len(g.outputs)]]
        p.updates = {k: f"upd_{k}" for k in g.updates}

        ctx = LowerCtx(lambda v: self.buf[v], self.new_temp, p.kernels.append, self.add_error,
                       self.alias, p.status, self.new_constant, self.gemm_panels)
        groups: dict[int, list[Node]] = {}
        for node in g.nodes:
            if node.group is not None:
                groups.setdefault(node.group, []).append(node)
        outside: set[Value] = set(g.outputs) | set(g.updates.values())
        for n in g.nodes:
            for v in n.inputs:
                if v.producer is not None and (n.group is None or v.producer.group != n.group):
                    outside.add(v)
        p.provenance = prov = Provenance(g, value_buffers=self.buf)
        for node in g.nodes:
            for v in node.outputs:
                self.counter += 1
                self.buf[v] = owner.get(v) or self.add_buffer(f"t{self.counter}", v.type.size,
                                                             v.dtype, "temp")
            ctx.node = node
            first = len(p.kernels)
            if node.group is None:
                self.lower_node(ctx, node)
            elif node is groups[node.group][-1]:
                lower_fused(ctx, groups[node.group], outside)
            members = (node,) if node.group is None else tuple(groups[node.group])
            for k in p.kernels[first:]:
                prov.kernel_nodes[k.name] = members
        ctx.node = None
        for v, name in copies:
            src = self.buf[v]
            i = ctx.var()
            ctx.kernel([For(i, v.type.size, [Store(name, i, Load(src, i, v.dtype))], "vectorize")],
                       [src], [name], suffix="_copy")
        self.plan_arena()
        return p

    def lower_node(self, ctx: LowerCtx, node: Node) -> None:
        opdef = get_op(node.op)
        if opdef.scalar is not None:
            lower_elementwise(ctx, node, opdef.scalar)
        elif opdef.lower is not None:
            opdef.lower(ctx, node)
        else:
            raise LoweringError(f"op {node.op} has no kernel lowering and no decomposition",
                                node=node)

    def plan_arena(self) -> None:
        """Drop temps no kernel touches, then place the others in the arena: by liveness,
        with outputs written in place of dead inputs, when planning (passes/memory.py);
        else one slot each."""
        from .memory import naive_layout, plan_program
        used = {b for k in self.p.kernels for b in (*k.reads, *k.writes)}
        used |= {base for base, _ in self.p.aliases.values()}
        for name in [b.name for b in self.p.buffers.values() if b.kind == "temp" and b.name not in used
                     and b.name not in self.p.aliases]:
            del self.p.buffers[name]
        self.after_step("lowered", f"{len(self.p.kernels)} kernels, {len(self.p.buffers)} buffers")
        observe.current().stage("kernel IR passes")
        if self.plan:
            writable = frozenset(self.buf[v] for v in self.g.inputs if v.name in self.donated_inputs)
            plan = plan_program(self.p, donate=self.donate, writable=writable,
                                after_step=self.after_step)
            self.after_step("memory", plan.summary())
            observe.current().dump_text("memory-plan", "txt", lambda: str(plan), "memory",
                                        plan.summary(), numbered=False)
        else:
            self.after_step("layout", f"planning off: arena {naive_layout(self.p):,} B")

    def after_step(self, step: str, what: str) -> None:
        """A kernel-IR step is done: log it (graphc.passes), dump the program, and verify it
        (ir/kernel_verify.py) when GRAPHC_VERIFY >= 1, after the dump so it shows the
        program that failed: at level 1 the final (planned) program, at 2 every step."""
        now = time.perf_counter()
        _log.debug("kernel IR %s (%s): %.2f ms, %s", step, self.p.name,
                   (now - self._step_t0) * 1e3, what)
        kernels = len(self.p.kernels)
        before = self.p.steps[-1][3] if self.p.steps else len(self.g.nodes)
        self.p.steps.append((step, now - self._step_t0, before, kernels, what))
        self._step_t0 = now
        observe.current().dump_text(f"kernel-{step}", "kir", lambda: str(self.p), "kernel",
                                    f"kernel IR, {step}: {what}")
        final = step in ("memory", "layout")  # the arena is placed: the program that runs
        level = verify_level() if self.verify is None else self.verify
        if level >= 2 or (level >= 1 and final):
            verify_program(self.p, placed=final)
