"""Shared timing for the benchmarks: interleaved rounds, medians, a plain table.

Contenders run in alternating rounds, so a noisy neighbour on a shared machine slows them
alike and the ratios measured side by side stay meaningful.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable


def median_times(contenders: dict[str, Callable[[], object]], runs: int = 5,
                 rounds: int = 3, settle: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each contender (after one warm-up call). The order
    rotates every round, and `settle` seconds pass before each contender's block: a
    runtime's idle threads keep spinning after its last call (ONNX Runtime's burned a core
    for 50-70 ms on the development machine), and whoever runs in that time shares the
    cores with them."""
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():
        fn()
    names = list(contenders)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = contenders[name]
            if settle:
                time.sleep(settle)
                fn()  # the caches, after the pause
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


def table(rows: list[list[object]], head: list[str]) -> str:
    cells = [[str(c) for c in r] for r in [head] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def optional(module: str):
    """Import a comparison system if installed, else None."""
    try:
        return __import__(module, fromlist=["_"])
    except Exception:
        return None
