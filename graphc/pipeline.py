"""The one way from an optimised graph to a backend's Executable.

    graph passes (graphc/compile.py optimize_graph, passes/manager.py)
    -> batch split, where the backend runs copies over slices of a batch (passes/batch_split.py)
    -> lowering to kernel IR, then its passes: schedule, donation, in-place, memory plan
       (passes/lower.py; each a ledger row, a dump and a log line)
    -> the backend renders and runs the planned program (backends/*, told what to do by
       their `Needs`, never running compiler passes themselves)

gc.compile, @gc.jit (its `as_text("kernel")` is `plan(...)`'s program, the one that runs),
gc.export and the CLI all come through here; `lower()` has no other caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .backends import Needs, backend_factory, backend_needs
from .backends.executable import Executable
from .ir.graph import Graph
from .ir.kernel import Program
from .ir.validate import check_lowering, verify_level
from .passes.manager import LedgerEntry


@dataclass
class BatchSplit:
    """A graph run as `parts` copies of `part` (its own optimised graph and program), one
    per slice of the batch; `whole` lowers the unsplit graph when someone asks for it (the
    profiler), since no call runs it."""
    parts: int
    part: Graph
    part_single: bool
    program: Program
    whole: Any  # () -> Program


@dataclass
class Plan:
    """What a backend gets for one graph: the program to run (None for a backend that
    interprets the graph), or the batch split whose part runs."""
    program: Program | None
    split: BatchSplit | None = None

    def as_text(self) -> str:
        if self.split is not None:
            s = self.split
            return (f"// batch split: {s.parts} parts of {s.part.inputs[0].shape[0]} rows, one "
                    f"thread each; every part runs:\n{s.program}")
        return str(self.program)


def lower_program(graph: Graph, needs: Needs, *, opt_level: int = 2, donated: Sequence[str] = (),
                  check_numerics: bool = False, gemm_panels: bool = True,
                  verify: int | None = None) -> Program:
    """The planned kernel program of an optimised graph, as the backend's needs say.
    check_numerics keeps parameter updates out of place (a failing call changes nothing);
    gemm_panels=False writes GEMM operands row-major (an artifact for another CPU);
    verify >= 2 (None: GRAPHC_VERIFY) checks the program against the graph."""
    from .passes.lower import lower
    panels = needs.gemm_panels() if needs.gemm_panels is not None and gemm_panels else None
    program = lower(graph, fuse_ops=None, plan=opt_level >= 1, nested_gemm=needs.nested_gemm,
                    donate=needs.inplace_updates and not check_numerics,
                    donated_inputs=tuple(donated), gemm_panels=panels, verify=verify)
    if (verify_level() if verify is None else verify) >= 2:  # it computes what the graph does
        check_lowering(graph, program)
    return program


def plan(graph: Graph, backend: str, *, params: Mapping[str, Any] | None = None,
         opt_level: int = 2, donate: Sequence[str] = (), check_numerics: bool = False,
         batch_split: bool = True, options: Mapping[str, Any] | None = None,
         verify: int | None = None) -> Plan:
    """Decide batch split and lower: the program `backend` will run for `graph`.
    `options` are the backend's own (num_threads, ...), which bound a batch split."""
    needs = backend_needs(backend)
    if not needs.program:
        return Plan(None)
    if check_numerics:  # a failing call leaves parameters and donated inputs as they were
        donate, batch_split = (), False
    if batch_split and needs.batch_parts is not None and not donate and not params and opt_level >= 1:
        split = _batch_split(graph, backend, needs.batch_parts(dict(options or {})), opt_level, verify)
        if split is not None:
            return Plan(None, split)
    return Plan(lower_program(graph, needs, opt_level=opt_level, donated=donate,
                              check_numerics=check_numerics, verify=verify))


def _batch_split(graph: Graph, backend: str, threads: int, opt_level: int,
                 verify: int | None) -> BatchSplit | None:
    """The graph as the largest number of equal batch slices up to `threads`, or None."""
    from .compile import optimize_graph
    needs = backend_needs(backend)
    from .passes.batch_split import split_batch
    if threads < 2 or not graph.inputs or graph.inputs[0].type.rank == 0:
        return None
    n = graph.inputs[0].shape[0]
    parts = max((d for d in range(2, threads + 1) if n % d == 0), default=0)
    if not parts:
        return None
    sub, _ = split_batch(graph, parts)
    if sub is None:
        return None
    # The whole graph's passes already chose Winograd where they would (its transform ops
    # have no batch rule, so such graphs never get here): the part keeps its convolutions.
    part, single, _ = optimize_graph(sub, backend=backend, opt_level=opt_level, winograd="off",
                                     verify=verify)
    return BatchSplit(parts, part, single, lower_program(part, needs, opt_level=opt_level, verify=verify),
                      lambda: lower_program(graph, needs, opt_level=opt_level, verify=verify))


def compile_graph(graph: Graph, backend: str, params: Mapping[str, Any] | None = None,
                  single_output: bool = False, opt_level: int = 2, donate: Sequence[str] = (),
                  check_numerics: bool = False, ledger: list | None = None,
                  batch_split: bool = True, verify: int | None = None, **options: Any) -> Executable:
    """An optimised graph -> the backend's Executable (gc.compile's last step). The
    kernel-IR steps join `ledger` (the pass ledger) as rows of their own. `options` go to
    the backend's factory (llvm: num_threads, cache, options=CodegenOptions)."""
    p = plan(graph, backend, params=params, opt_level=opt_level, donate=donate,
             check_numerics=check_numerics, batch_split=batch_split, options=options, verify=verify)
    factory = backend_factory(backend)
    program = p.program if p.split is None else p.split.program
    if ledger is not None and program is not None:
        ledger.extend(kernel_ir_rows(program))
    if check_numerics:
        options["check_numerics"] = True
    if p.split is not None:
        return factory(graph, None, split=p.split, single_output=single_output, **options)
    return factory(graph, program, params=params, single_output=single_output,
                   donate=tuple(donate), **options)


def kernel_ir_rows(program: Program) -> list[LedgerEntry]:
    """Ledger rows for the kernel-IR steps lowering recorded (passes/lower.py after_step)."""
    return [LedgerEntry(name, seconds, kernels_before, kernels_after, 0, 0,
                        {"kernels": kernels_after}, [what] if what else [])
            for name, seconds, kernels_before, kernels_after, what in program.steps]


__all__ = ["Plan", "BatchSplit", "plan", "lower_program", "compile_graph", "kernel_ir_rows"]
