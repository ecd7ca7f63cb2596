"""`exe.profile(...)`'s result: time per kernel, its share, and GFLOP/s and GB/s against
the machine's peaks, with the ops and source lines each kernel computes.

Rows are kernels as the backend runs them: a fused group (or an op lowered to several
kernels, e.g. im2col + GEMM) is one row naming its kernels; the reference backend's rows
are nodes. FLOPs and bytes come from the op registry's cost entries (ir/registry.py). For
a fused group, the bytes of values that stay inside the group (produced and only consumed
there, in registers or cache) are taken out: what remains is the group's traffic with
memory, the number to hold against copy bandwidth.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from ..ir import kernel as K
from ..ir.graph import Graph, Node, Value
from ..ir.registry import get_op


@dataclass(frozen=True)
class MachinePeaks:
    """What GFLOP/s and GB/s are measured against."""
    gflops: float   # fp32 FMA peak, all cores
    gbps: float     # copy bandwidth (read + write) to DRAM
    what: str = ""


# The development machine (2-core AMD EPYC, AVX2/FMA): 2 cores x 2 FMA units x 8 f32 lanes
# x 2 flops x ~3.2 GHz ~= 203 GFLOP/s; a large memcpy moves ~27 GB/s (benchmarks/
# elementwise.py's copy bandwidth). GRAPHC_PEAK_GFLOPS / GRAPHC_PEAK_GBPS override them.
DEV_MACHINE = MachinePeaks(203.0, 27.0, "2-core EPYC: fp32 FMA, memcpy")


def machine_peaks() -> MachinePeaks:
    """This machine's peaks: DEV_MACHINE unless the environment says otherwise."""
    flops = os.environ.get("GRAPHC_PEAK_GFLOPS", "").strip()
    gbps = os.environ.get("GRAPHC_PEAK_GBPS", "").strip()
    if not flops and not gbps:
        return DEV_MACHINE
    try:
        return MachinePeaks(float(flops or DEV_MACHINE.gflops), float(gbps or DEV_MACHINE.gbps),
                            "GRAPHC_PEAK_GFLOPS / GRAPHC_PEAK_GBPS")
    except ValueError:
        return DEV_MACHINE


def node_cost(node: Node) -> tuple[int, int]:
    """(flops, bytes) of one node from its registry entry."""
    c = get_op(node.op).estimate_cost([v.type for v in node.inputs], [v.type for v in node.outputs],
                                      node.attrs)
    return int(c.flops), int(c.bytes)


def group_cost(graph: Graph, nodes: Sequence[Node]) -> tuple[int, int]:
    """(flops, bytes) of nodes computed together in one kernel: the registry's sums, less
    the traffic of values that never leave the group."""
    flops = nbytes = 0
    for n in nodes:
        f, b = node_cost(n)
        flops, nbytes = flops + f, nbytes + b
    if len(nodes) > 1:
        members = set(nodes)
        results = set(graph.outputs) | set(graph.updates.values())
        used_outside: set[Value] = set(results)
        for n in graph.nodes:
            if n not in members:
                used_outside.update(n.inputs)
        for n in nodes:
            for v in n.outputs:
                uses = sum(u is v for m in nodes for u in m.inputs)
                internal = uses + (0 if v in used_outside else 1)
                nbytes -= internal * v.type.nbytes if uses else 0
    return flops, max(nbytes, 0)


@dataclass
class KernelProfile:
    """One row: the kernel(s), the nodes they compute, time and cost."""
    kernels: tuple[str, ...]
    ops: tuple[str, ...]
    lines: tuple[str, ...]       # distinct source lines of the nodes ('file:line')
    seconds: float               # per call
    share: float                 # of the kernels' total
    flops: int
    bytes: int
    peaks: MachinePeaks = field(repr=False, default=DEV_MACHINE)

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def flops_of_peak(self) -> float:
        return self.gflops / self.peaks.gflops

    @property
    def bytes_of_peak(self) -> float:
        return self.gbps / self.peaks.gbps

    def as_dict(self) -> dict:
        return {"kernels": list(self.kernels), "ops": list(self.ops), "lines": list(self.lines),
                "seconds": self.seconds, "share": self.share, "flops": self.flops,
                "bytes": self.bytes, "gflops": self.gflops, "gbps": self.gbps,
                "flops_of_peak": self.flops_of_peak, "bytes_of_peak": self.bytes_of_peak}


@dataclass
class Profile:
    """exe.profile()'s result: `rows` (KernelProfile, in execution order), `call_seconds`
    (wall time of one call, Python included), `repeat` (calls measured). `str()` or
    `.table()` prints it; `.as_dicts()` gives plain data."""
    graph: str
    backend: str
    rows: list[KernelProfile]
    call_seconds: float
    repeat: int
    peaks: MachinePeaks = DEV_MACHINE
    clock: str = ""

    @property
    def kernel_seconds(self) -> float:
        return sum(r.seconds for r in self.rows)

    def as_dicts(self) -> list[dict]:
        return [r.as_dict() for r in self.rows]

    def top(self, n: int = 10) -> list[KernelProfile]:
        """The n rows that took longest."""
        return sorted(self.rows, key=lambda r: -r.seconds)[:n]

    def table(self, limit: int | None = None, sort: bool = False) -> str:
        """The rows as an aligned text table (the longest first when sort)."""
        rows = self.top(len(self.rows)) if sort else list(self.rows)
        shown = rows if limit is None else rows[:limit]
        head = (f"profile of {self.graph!r} on {self.backend}: {self.repeat} calls, "
                f"{self.call_seconds * 1e3:.3f} ms per call, kernels {self.kernel_seconds * 1e3:.3f} ms"
                + (f" ({self.clock})" if self.clock else "")
                + f"\npeaks: {self.peaks.gflops:g} GFLOP/s, {self.peaks.gbps:g} GB/s"
                + (f" ({self.peaks.what})" if self.peaks.what else ""))
        cols = ("#", "ms", "share", "GFLOP/s", "%peak", "GB/s", "%peak", "kernel", "ops @ lines")
        body = []
        for i, r in enumerate(shown):
            lines = ", ".join(_short(x) for x in r.lines[:3]) + (" ..." if len(r.lines) > 3 else "")
            ops = ", ".join(dict.fromkeys(r.ops)) if r.ops else "(copy)"
            kname = r.kernels[0] + (f" +{len(r.kernels) - 1}" if len(r.kernels) > 1 else "")
            body.append((str(rows.index(r) + 1 if sort else i + 1), f"{r.seconds * 1e3:.3f}",
                         f"{r.share:.1%}", f"{r.gflops:.1f}", f"{r.flops_of_peak:.0%}",
                         f"{r.gbps:.2f}", f"{r.bytes_of_peak:.0%}", kname,
                         ops + (f" @ {lines}" if lines else "")))
        widths = [max(len(c), *(len(b[j]) for b in body)) if body else len(c) for j, c in enumerate(cols)]
        fmt = "  ".join(f"{{:>{w}}}" if j < 7 else f"{{:<{w}}}" for j, w in enumerate(widths))
        out = [head, fmt.format(*cols).rstrip()] + [fmt.format(*b).rstrip() for b in body]
        if limit is not None and len(rows) > limit:
            out.append(f"... {len(rows) - limit} more rows")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _short(loc: str) -> str:
    return os.path.basename(loc)


def _lines(nodes: Sequence[Node]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(n.loc) for n in nodes if n.loc is not None))


def build_profile(graph: Graph, backend: str, timed: list[tuple[tuple[str, ...], Sequence[Node], float, int]],
                  call_seconds: float, repeat: int, clock: str = "") -> Profile:
    """timed: (kernel names, the nodes they compute, seconds per call, bytes when no nodes),
    in execution order."""
    peaks = machine_peaks()
    total = sum(t for _, _, t, _ in timed) or 1.0
    rows = []
    for kernels, nodes, seconds, extra_bytes in timed:
        flops, nbytes = group_cost(graph, nodes) if nodes else (0, extra_bytes)
        rows.append(KernelProfile(tuple(kernels), tuple(n.op for n in nodes), _lines(nodes), seconds,
                                  seconds / total, flops, nbytes, peaks))
    return Profile(graph.name, backend, rows, call_seconds, repeat, peaks, clock)


def kernel_rows(program, seconds: Sequence[float]) -> list[tuple[tuple[str, ...], tuple[Node, ...], float, int]]:
    """Per-kernel times of a lowered program grouped into rows: the kernels of one node or
    fused group (ir/provenance.py) form one row, at its first kernel's place."""
    prov = program.provenance
    rows: dict[object, list] = {}
    for k, t in zip(program.kernels, seconds):
        nodes = prov.nodes_of(k.name) if prov is not None else ()
        key = id(nodes[0]) if nodes else k.name
        if key not in rows:
            nbytes = 0
            if not nodes:  # a copy of a result that is an input or a parameter: read + write
                nbytes = 2 * sum(program.buffers[b].size * program.buffers[b].dtype.itemsize
                                 for b in K.written_buffers(k) if b in program.buffers)
            rows[key] = [[], nodes, 0.0, nbytes]
        rows[key][0].append(k.name)
        rows[key][2] += t
    return [(tuple(r[0]), r[1], r[2], r[3]) for r in rows.values()]
