"""Liveness-based memory planning: every arena temp of a kernel-IR Program gets a byte
offset in one arena, and temps whose lifetimes do not overlap share bytes.

    plan = plan_memory(program)          # writes program.arena / program.arena_bytes
    print(plan)                          # peak, naive, savings, largest buffers

Working at the Program level, the plan serves every code generator.

Liveness. Kernels run one after another, in `Program.kernels` order. A *slot* is an arena
temp that is not a view (`Program.aliases`) together with every buffer whose storage is
it (views, chains of views, in-place outputs). Its live range is the closed interval
[first kernel touching any member, last kernel touching any member], touching meaning a
read or a write (declared in `Kernel.reads`/`writes` or found in the statements). So a
temp nobody reads after its writer is still live during that kernel, and a view keeps its
base alive. Two slots conflict when their intervals intersect.

Packing. Each slot takes its size rounded up to `ARENA_ALIGN` (64) bytes, so all offsets
are 64-byte aligned. Slots are placed one at a time, each at the best-fitting gap (the
smallest one that holds it) between the already-placed slots it conflicts with, or after
the last of them when no gap fits: the greedy-by-size/best-fit scheme of TFLite's
`GreedyMemoryPlanner` and MXNet's planner. The order of placement matters, so the plan
tries several (size descending; size x lifetime descending; lifetime descending; first
use) and keeps the smallest peak. The result is never below `lower_bound` (the most bytes
live during one kernel) and never above the no-reuse total.

In-place (passes/inplace.py) runs first when asked for: outputs that may overwrite a dead
input become views of it, which merges two slots into one.

Unplanned layout (`naive_layout`, used by `lower(..., plan=False)`): every slot its own
bytes, in buffer order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir.kernel import ARENA_ALIGN, Program  # (ARENA_ALIGN re-exported for tests)
from .inplace import InPlace, apply_inplace, kernel_access, storage_root



def _aligned(nbytes: int) -> int:
    return -(-max(nbytes, 1) // ARENA_ALIGN) * ARENA_ALIGN


@dataclass
class Placement:
    """One arena slot: its root buffer, members sharing its storage, bytes and lifetime
    (kernel indices, inclusive; (-1, -1) when no kernel touches it)."""
    name: str
    offset: int
    nbytes: int  # aligned
    start: int
    end: int
    members: tuple[str, ...] = ()

    def overlaps_in_time(self, other: "Placement") -> bool:
        if self.start < 0 or other.start < 0:
            return False
        return self.start <= other.end and other.start <= self.end

    def overlaps_in_memory(self, other: "Placement") -> bool:
        return self.offset < other.offset + other.nbytes and other.offset < self.offset + self.nbytes


@dataclass
class MemoryPlan:
    program: str
    placements: dict[str, Placement]
    peak_bytes: int            # the arena size
    naive_bytes: int           # every slot its own bytes, no in-place (planning off)
    reuse_bytes: int           # the plan's peak without in-place
    lower_bound: int           # most bytes live during one kernel (no packing beats it)
    inplace: list[InPlace] = field(default_factory=list)
    order: str = ""            # the placement order that won
    kernels: list[str] = field(default_factory=list)
    donated: list = field(default_factory=list)   # passes/donate.py records (plan_program)
    live_peak_graph_order: int = 0                # before passes/schedule.py (plan_program)

    def summary(self) -> str:
        """One line for reports: what each memory step bought."""
        text = (f"memory: arena {self.peak_bytes:,} B (no reuse {self.naive_bytes:,} B, reuse "
                f"{self.reuse_bytes:,} B, {len(self.inplace)} kernels in place)")
        if self.live_peak_graph_order:
            text += (f"; kernel order lowers the live peak {self.live_peak_graph_order:,} -> "
                     f"{self.lower_bound:,} B")
        if self.donated:
            text += (f"; {len(self.donated)} parameter updates in place "
                     f"({sum(d.nbytes for d in self.donated):,} B not copied)")
        return text

    @property
    def saved_by_reuse(self) -> int:
        return self.naive_bytes - self.reuse_bytes

    @property
    def saved_by_inplace(self) -> int:
        return self.reuse_bytes - self.peak_bytes

    @property
    def inplace_bytes(self) -> int:
        """Bytes of the outputs that stopped needing storage of their own."""
        return sum(r.nbytes for r in self.inplace)

    def __str__(self) -> str:
        def mb(n: int) -> str:
            return f"{n:,} bytes ({n / 2**20:.2f} MiB)"
        lines = [f"memory plan @{self.program}: {len(self.placements)} arena slots over "
                 f"{len(self.kernels)} kernels (placement order: {self.order or '-'})",
                 f"  peak arena        {mb(self.peak_bytes)}",
                 f"  naive (no reuse)  {mb(self.naive_bytes)}",
                 f"  saved by reuse    {mb(self.saved_by_reuse)}",
                 f"  saved in place    {mb(self.saved_by_inplace)}: {len(self.inplace)} kernels in place, "
                 f"{self.inplace_bytes:,} bytes of outputs need no slot",
                 f"  lower bound       {mb(self.lower_bound)}: the most bytes live during one kernel"]
        if self.live_peak_graph_order:
            lines.append(f"  kernel order      live peak {mb(self.live_peak_graph_order)} in graph order")
        for d in self.donated[:12]:
            lines.append(f"  donated: {d}")
        big = sorted(self.placements.values(), key=lambda q: (-q.nbytes, q.start))[:8]
        if big:
            lines.append("  largest slots:")
            for q in big:
                if q.start < 0:
                    life = "never touched"
                else:
                    life = f"kernels {q.start}..{q.end} ({self.kernels[q.start]} .. {self.kernels[q.end]})"
                more = f" + {', '.join(q.members[1:4])}{'...' if len(q.members) > 4 else ''}" \
                    if len(q.members) > 1 else ""
                lines.append(f"    {q.name}{more}: {q.nbytes:,} bytes @ {q.offset:,}, {life}")
        for r in self.inplace[:12]:
            lines.append(f"  in place: {r}")
        if len(self.inplace) > 12:
            lines.append(f"  ... {len(self.inplace) - 12} more in place")
        return "\n".join(lines)


# -- liveness ---------------------------------------------------------------------------------

def live_slots(p: Program) -> dict[str, Placement]:
    """Arena slots (offset 0 until packed) with their members and live ranges."""
    slots: dict[str, Placement] = {}
    members: dict[str, list[str]] = {}
    root_of: dict[str, str] = {}
    for name, b in p.buffers.items():
        root = storage_root(p, name)[0]
        rb = p.buffers.get(root)
        if rb is None or rb.kind != "temp":
            continue  # views of inputs, params, constants, outputs: not in the arena
        root_of[name] = root
        members.setdefault(root, []).append(name)
    for root, ms in members.items():
        rb = p.buffers[root]
        ms.sort(key=lambda m: m != root)
        slots[root] = Placement(root, 0, _aligned(rb.size * rb.dtype.itemsize), -1, -1, tuple(ms))
    for i, k in enumerate(p.kernels):
        reads, writes = kernel_access(k)
        for b in reads | writes:
            root = root_of.get(b)
            if root is None:
                continue
            s = slots[root]
            if s.start < 0:
                s.start = i
            s.end = i
    return slots


def lower_bound(slots: dict[str, Placement], n_kernels: int) -> int:
    """The most slot bytes live during one kernel."""
    delta = [0] * (n_kernels + 1)
    for s in slots.values():
        if s.start >= 0:
            delta[s.start] += s.nbytes
            delta[s.end + 1] -= s.nbytes
    best = cur = 0
    for d in delta[:n_kernels]:
        cur += d
        best = max(best, cur)
    untouched = [s.nbytes for s in slots.values() if s.start < 0]
    return max([best, *untouched])


# -- packing ----------------------------------------------------------------------------------

ORDERS = {
    "size": lambda s: (-s.nbytes, s.start, s.name),
    "size*lifetime": lambda s: (-s.nbytes * (s.end - s.start + 1), -s.nbytes, s.start, s.name),
    "lifetime": lambda s: (-(s.end - s.start), -s.nbytes, s.start, s.name),
    "first use": lambda s: (s.start, -s.nbytes, s.name),
}


def _best_fit(slots: list[Placement], key) -> tuple[dict[str, int], int]:
    placed: list[Placement] = []
    offsets: dict[str, int] = {}
    peak = 0
    for s in sorted(slots, key=key):
        conflicts = sorted((q for q in placed if q.overlaps_in_time(s)), key=lambda q: q.offset)
        best, best_gap, prev_end = None, None, 0
        for q in conflicts:
            gap = q.offset - prev_end
            if gap >= s.nbytes and (best_gap is None or gap < best_gap):
                best, best_gap = prev_end, gap
            prev_end = max(prev_end, q.offset + q.nbytes)
        off = prev_end if best is None else best
        offsets[s.name] = off
        peak = max(peak, off + s.nbytes)
        placed.append(Placement(s.name, off, s.nbytes, s.start, s.end))
    return offsets, peak


def pack(slots: dict[str, Placement]) -> tuple[int, str]:
    """Give every slot an offset (in place); returns (peak bytes, order used)."""
    if not slots:
        return 0, ""
    best = None
    for name, key in ORDERS.items():
        offsets, peak = _best_fit(list(slots.values()), key)
        if best is None or peak < best[0]:
            best = (peak, name, offsets)
    peak, name, offsets = best
    for n, off in offsets.items():
        slots[n].offset = off
    return peak, name


def naive_bytes(slots: dict[str, Placement]) -> int:
    return sum(s.nbytes for s in slots.values())


# -- entry points -----------------------------------------------------------------------------

def naive_layout(p: Program) -> int:
    """Planning off: every arena slot its own bytes, in buffer order. Returns the size."""
    slots = live_slots(p)
    p.arena = {}
    offset = 0
    for name in p.buffers:
        if name in slots:
            p.arena[name] = offset
            offset += slots[name].nbytes
    p.arena_bytes = offset
    return offset


def plan_memory(p: Program, *, inplace: bool = True, writable: frozenset[str] = frozenset()) -> MemoryPlan:
    """Plan the arena of p: in-place rewrites (when `inplace`), liveness, best-fit packing.
    Writes `p.arena` and `p.arena_bytes` (and `p.aliases` for in-place outputs)."""
    before = live_slots(p)
    naive = naive_bytes(before)
    reuse, order = pack(before)
    records: list[InPlace] = []
    slots = before
    if inplace:
        saved = dict(p.aliases), list(p.kernels)
        records = apply_inplace(p, writable)
        if records:
            slots = live_slots(p)
            peak, order2 = pack(slots)
            if peak > reuse:  # never with an optimal packer, but a heuristic may wobble:
                p.aliases, p.kernels = saved  # keep the better plan (views and stores both)
                records, slots = [], before
            else:
                order = order2
    peak = max((s.offset + s.nbytes for s in slots.values()), default=0)
    p.arena = {n: s.offset for n, s in slots.items()}
    p.arena_bytes = peak
    return MemoryPlan(p.name, slots, peak, naive, reuse, lower_bound(slots, len(p.kernels)),
                      records, order, [k.name for k in p.kernels])


def plan_program(p: Program, donate: bool = True, writable: frozenset[str] = frozenset(),
                 after_step: "Callable[[str, str], None] | None" = None) -> MemoryPlan:
    """The whole memory pipeline `lower(..., plan=True)` runs: parameter updates in place
    (passes/donate.py), a memory-aware kernel order (passes/schedule.py), then in-place
    kernels and placement (`plan_memory`; `writable`: input buffers the caller donated).
    after_step(step, what it did) is called after each step (dumps, logs: passes/lower.py)."""
    from .donate import donate_state
    from .schedule import live_peak, schedule_kernels
    donated = donate_state(p) if donate else []
    if after_step:
        after_step("donate", f"{len(donated)} parameter updates in place")
    graph_order = live_peak(p)
    reordered = schedule_kernels(p)
    if after_step:
        after_step("schedule", f"kernel order {'changed' if reordered else 'kept'}, live peak "
                   f"{graph_order:,} B in graph order")
    plan = plan_memory(p, inplace=True, writable=writable)
    plan.donated = donated
    plan.live_peak_graph_order = graph_order if reordered else 0
    p.memory_plan = plan
    return plan
