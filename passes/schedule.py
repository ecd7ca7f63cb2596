"""Memory-aware kernel order: run each kernel as soon as doing so frees memory.

Graph order puts every parameter update at the end of a train step, so each weight
gradient stays alive from the backward kernel that makes it until then: the whole
gradient of the model is resident at once. Reordering the kernels (a list schedule over
their storage dependencies) lets an update run right after its gradient, and its
gradient die there.

Dependencies are on storage roots (`storage_root`: views share their base): kernel j
before kernel i in the original order must stay before it when j writes something i
touches or i writes something j touches. Kernels that write the status buffer stay
before every kernel that writes a parameter (state must not be updated by a call that
fails; see `Program.status`).

Greedy choice among the ready kernels: the one that frees the most bytes net (arena temps
whose last toucher it is, minus temps it is the first to touch), ties in original order.
The new order is kept only when its live-bytes peak (the lower bound of any arena plan)
is strictly smaller than the original order's.
"""
from __future__ import annotations

from ..ir.kernel import Program
from .inplace import kernel_access, storage_root


def _touches(p: Program) -> tuple[list[set[str]], list[set[str]]]:
    """(roots read, roots written) per kernel."""
    root = {n: storage_root(p, n)[0] for n in p.buffers}
    reads, writes = [], []
    for k in p.kernels:
        r, w = kernel_access(k)
        reads.append({root.get(b, b) for b in r})
        writes.append({root.get(b, b) for b in w})
    return reads, writes


def _temp_bytes(p: Program) -> dict[str, int]:
    return {b.name: b.size * b.dtype.itemsize for b in p.buffers.values()
            if b.kind == "temp" and b.name not in p.aliases}


def live_peak(p: Program, order: list[int] | None = None) -> int:
    """Most arena-temp bytes live while one kernel runs, kernels run in `order`."""
    order = list(range(len(p.kernels))) if order is None else order
    reads, writes = _touches(p)
    size = _temp_bytes(p)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for step, i in enumerate(order):
        for b in reads[i] | writes[i]:
            if b in size:
                first.setdefault(b, step)
                last[b] = step
    delta = [0] * (len(order) + 1)
    for b, s in first.items():
        delta[s] += size[b]
        delta[last[b] + 1] -= size[b]
    peak = cur = 0
    for d in delta:
        cur += d
        peak = max(peak, cur)
    return peak


def schedule_kernels(p: Program) -> bool:
    """Reorder p.kernels to lower the live-bytes peak; True when the order changed."""
    n = len(p.kernels)
    reads, writes = _touches(p)
    touched = [reads[i] | writes[i] for i in range(n)]
    params = set(p.params.values())
    preds: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        for j in range(i):
            if writes[j] & touched[i] or reads[j] & writes[i]:
                preds[i].add(j)
    if p.status is not None:
        reporters = [j for j in range(n) if p.status in writes[j]]
        for i in range(n):
            if writes[i] & params:
                preds[i].update(j for j in reporters if j != i)
    size = _temp_bytes(p)
    users: dict[str, int] = {}
    for t in touched:
        for b in t:
            if b in size:
                users[b] = users.get(b, 0) + 1

    remaining = dict(users)
    live: set[str] = set()
    done: set[int] = set()
    order: list[int] = []
    while len(order) < n:
        best, best_key = -1, None
        for i in range(n):
            if i in done or not preds[i] <= done:
                continue
            gain = 0
            for b in touched[i]:
                if b in size:
                    if remaining[b] == 1:
                        gain += size[b]
                    if b not in live:
                        gain -= size[b]
            key = (gain, -i)
            if best_key is None or key > best_key:
                best, best_key = i, key
        if best < 0:
            raise AssertionError("kernel dependencies form a cycle")
        order.append(best)
        done.add(best)
        for b in touched[best]:
            if b in size:
                remaining[b] -= 1
                live.add(b)
    if order == list(range(n)) or live_peak(p, order) >= live_peak(p):
        return False
    p.kernels = [p.kernels[i] for i in order]
    return True
