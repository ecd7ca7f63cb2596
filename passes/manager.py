"""The pass manager: named passes, pipelines (-O0..-O3), verification, dumps and a ledger.

A pass is a name, a one-line description and a function that changes a graph in place and
may return counts of what it did (and, under the key "notes", lines explaining its decisions). A Pipeline runs passes in order; after each it can run
the verifier (always in tests: GRAPHC_VERIFY=1; opt-in in production) and, with
GRAPHC_VERIFY=2, translation validation (ir/validate.py), print the IR, and
write one numbered file per pass (like LLVM's -print-after-all). Every run leaves a ledger:
per pass, its time, nodes and estimated FLOPs before and after, and its own counts.

Inside a compile (ir/observe.py) each pass is a stage of the compile's progress, and with
the compile's dump folder the IR after each pass is written there. Each pass's time and
effect is logged at DEBUG on `graphc.passes` (GRAPHC_LOG=passes).
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence, TextIO

from ..ir import observe
from ..ir.errors import GraphcError
from ..ir.graph import Graph
from ..ir.summary import graph_cost
from ..ir.validate import check_rewrite, verify_level
from .passdef import Pass


@dataclass
class LedgerEntry:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    flops_before: int
    flops_after: int
    details: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # per-decision lines (a pass's "notes")


class Ledger(list):
    """What each pass changed, readable from Python (`exe.report()`) and the CLI."""

    def __str__(self) -> str:
        head = f"{'pass':<12} {'ms':>8} {'nodes':>13} {'MFLOP':>17}  details"
        lines = [head, "-" * len(head)]
        for e in self:
            details = ", ".join(f"{k} {v}" for k, v in e.details.items() if v)
            lines.append(f"{e.name:<12} {e.seconds * 1e3:8.2f} {e.nodes_before:>6} -> {e.nodes_after:<5}"
                         f" {e.flops_before / 1e6:>7.2f} -> {e.flops_after / 1e6:<7.2f}  {details}")
            lines.extend(f"    {note}" for note in e.notes)
        return "\n".join(lines)


def _simplify(g: Graph) -> dict[str, int]:
    from .simplify import simplify
    return simplify(g).as_dict()


def _dce(g: Graph) -> dict[str, int]:
    from .dce import eliminate_dead_code
    return {"dead nodes removed": eliminate_dead_code(g)}


def _legalize(g: Graph) -> dict[str, int]:
    from .legalize import has_kernel, legalize
    return {"composite ops decomposed": legalize(g, keep=has_kernel)}


def _legalize_flat(g: Graph) -> dict[str, int]:
    from .legalize import has_flat_kernel, legalize
    return {"composite ops decomposed": legalize(g, keep=has_flat_kernel)}


def _winograd(g: Graph) -> dict:
    from .winograd import winograd
    return winograd(g)


def _fusion(g: Graph) -> dict[str, int]:
    from .fusion import fuse
    s = fuse(g)
    return {"groups": s.groups, "nodes fused": s.nodes_fused, "kernels saved": s.kernels_saved,
            "row kernels": s.row_kernels, "GEMM epilogues": s.gemm_epilogues}


PASSES: dict[str, Pass] = {p.name: p for p in [
    Pass("dce", "remove nodes no output or update needs", _dce),
    Pass("simplify", "constant folding, CSE, algebraic identities, DCE (to a fixpoint)", _simplify),
    Pass("resimplify", "simplify again after legalisation (-O3): CSE and folding across the "
         "ops composite ops were decomposed into", _simplify),
    Pass("winograd", "Winograd 3x3 convolutions where the cost model says so", _winograd),
    Pass("legalize", "decompose composite ops into ops the backend has kernels for", _legalize),
    Pass("legalize_flat", "legalize, also decomposing ops whose kernels nest GEMMs in loops "
         "(for backends that launch each GEMM alone)", _legalize_flat),
    Pass("fusion", "group elementwise chains, row reductions with their producers and consumers, "
         "and matmul epilogues into kernels",
         _fusion),
]}


# What each level adds, in one place (README "Optimisation levels"). Backend passes not
# listed for a level (legalisation: what running needs) always run.
LEVEL_ADDS: dict[int, tuple[str, ...]] = {
    0: ("dce",),            # debugging: the graph as built, pruned; no planning either
    1: ("simplify",),       # folding, CSE, identities; memory planning in the lowering
    2: ("winograd", "fusion"),  # the default: the backend's optimisations
    3: ("resimplify",),     # CSE and folding again over what legalisation decomposed
}


def standard_passes(opt_level: int, backend_passes: Sequence[str] = ()) -> list[Pass]:
    """The pipeline of -O`opt_level` for a backend whose passes are `backend_passes`:
    -O0 only what running needs (DCE, legalisation), -O1 adds simplification (and the
    lowering's memory plan), -O2 the backend's optimisations (Winograd, fusion), -O3 a
    second simplification after legalisation."""
    if opt_level not in LEVEL_ADDS:
        raise GraphcError(f"opt_level must be 0, 1, 2 or 3, got {opt_level!r}")
    on = {name for level, names in LEVEL_ADDS.items() if level <= opt_level for name in names}
    names = ["simplify" if "simplify" in on else "dce"]
    for name in backend_passes:
        if name.startswith("legalize"):
            names.append(name)
            if "resimplify" in on:
                names.append("resimplify")
        elif name in on:
            names.append(name)
    return [PASSES[n] for n in names]


def resolve(passes: Iterable["Pass | str"]) -> list[Pass]:
    out = []
    for p in passes:
        if isinstance(p, Pass):
            out.append(p)
        elif p in PASSES:
            out.append(PASSES[p])
        else:
            raise GraphcError(f"unknown pass {p!r}; passes: {', '.join(PASSES)}")
    return out


log = logging.getLogger("graphc.passes")


class Pipeline:
    def __init__(self, passes: Iterable["Pass | str"], *, verify: "bool | int | None" = None,
                 print_after: "Iterable[str] | str" = (), dump_dir: str | None = None,
                 stream: TextIO | None = None, dump_format: str = "text",
                 on_pass: "Callable[[str, Graph], None] | None" = None) -> None:
        """print_after: passes after which the IR is written to `stream` (stdout).
        dump_dir: one numbered file per pass (and the input) plus index.txt, besides any
        dump of the compile in progress. Both in `dump_format` (text, dot, json, summary).
        on_pass(name, graph) is called after each pass (the CLI renders what it asks for).
        verify: a level (0, 1, 2 as GRAPHC_VERIFY, which None reads) or a bool (1 or 0)."""
        self.passes = resolve(passes)
        level = verify_level() if verify is None else int(verify)
        self.verify = level >= 1
        # level 2: every pass is also checked by running the graph before and after it on
        # random inputs (ir/validate.py), so a wrong pass names itself
        self.validate = level >= 2 if not isinstance(verify, bool) else verify and verify_level() >= 2
        self.print_after = set(self.passes_named(print_after))
        self.dump_dir = dump_dir
        self.dump_format = dump_format
        self.on_pass = on_pass
        self.stream = stream

    def passes_named(self, names: "Iterable[str] | str") -> list[str]:
        if names == "all":
            return [p.name for p in self.passes]
        names = [names] if isinstance(names, str) else list(names)
        known = {p.name for p in self.passes}
        for n in names:
            if n not in known:
                raise GraphcError(f"pass {n!r} is not in this pipeline ({', '.join(known) or 'empty'})")
        return names

    def run(self, graph: Graph) -> Ledger:
        from ..ir.text import print_graph
        ledger = Ledger()
        session = observe.current()
        own = observe.Dumper(self.dump_dir, self.dump_format) if self.dump_dir else None
        for dumper in (own, session):
            if dumper is not None:
                (dumper.graph if dumper is own else dumper.dump_graph)(
                    "input", graph, f"the graph the passes start from: {len(graph.nodes)} nodes")
        for i, p in enumerate(self.passes, 1):
            session.stage(f"pass {p.name}")
            before_nodes, (before_flops, _) = len(graph.nodes), graph_cost(graph)
            before = graph.copy() if self.validate else None
            t0 = time.perf_counter()
            details = dict(p.run(graph) or {})
            notes = list(details.pop("notes", []))
            seconds = time.perf_counter() - t0
            if self.verify:
                try:
                    graph.verify()
                except GraphcError as e:
                    raise GraphcError(f"the graph is invalid after pass {p.name!r}:\n{e}") from e
            if before is not None:
                check_rewrite(before, graph, p.name)
            entry = LedgerEntry(p.name, seconds, before_nodes, len(graph.nodes), before_flops,
                                graph_cost(graph)[0], dict(details), notes)
            ledger.append(entry)
            effect = _effect(entry)
            log.debug("%s: %.2f ms, %s", p.name, seconds * 1e3, effect)
            if p.name in self.print_after:
                out = self.stream or sys.stdout
                text = print_graph(graph) if self.dump_format == "text" else \
                    observe.render_graph(graph, self.dump_format)
                out.write(f"// IR after {p.name}\n{text.rstrip()}\n")
            if self.on_pass is not None:
                self.on_pass(p.name, graph)
            if own is not None:
                own.graph(p.name, graph, f"after pass {p.name}: {effect}")
            session.dump_graph(p.name, graph, f"after pass {p.name}: {effect}")
        return ledger


def _effect(e: LedgerEntry) -> str:
    """What one pass changed, in a line (logs and dump indexes)."""
    details = ", ".join(f"{k} {v}" for k, v in e.details.items() if v)
    return (f"nodes {e.nodes_before} -> {e.nodes_after}, MFLOP {e.flops_before / 1e6:.2f} -> "
            f"{e.flops_after / 1e6:.2f}" + (f", {details}" if details else ""))
