"""Square f32 GEMM: graphc's generated BLIS-style GEMM vs numpy (OpenBLAS) and, when
importable, PyTorch and JAX. Also measures the threading choice for the generated code:
an OpenMP team (libgomp's GOMP_parallel, outlined in LLVM IR) vs a pool of Python threads
calling the per-thread kernel through ctypes (which releases the GIL).

    python benchmarks/gemm.py [--sizes 256 512 1024 2048] [--runs 5] [--rounds 3]
                              [--threads 2] [--no-single] [--no-threading]

Sections: (1) the main table, graphc on `threads` threads (OpenMP) vs numpy as shipped;
(2) one thread each, timed in thread CPU time, which is robust to other jobs on a shared
machine; (3) threading runtimes: libgomp under three wait policies vs a Python pool.

Timings are medians over `rounds` x `runs` calls per contender; the rounds interleave the
contenders (each block after a pause and a warm-up call) so a noisy neighbour on a shared
machine hits them alike, and one runtime's idle spinning threads do not slow the next.
Nothing sets BLAS thread counts: numpy uses OpenBLAS's default (all cores).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from graphc.backends.llvm.gemm import GemmTarget  # noqa: E402
from tests.backends.gemm_support import CompiledGemm  # noqa: E402  (test/benchmark support)


def _time_calls(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# Idle threads of OpenBLAS (yield-spin ~2^28 cycles) and libgomp (spin GOMP_SPINCOUNT
# iterations) keep a core busy for up to ~0.1 s after a call; a contender that starts
# inside that window shares a core with them. Each block of runs starts after this pause.
SETTLE_S = 0.25


WARMUP_S = 0.1


def _warm_up(fn) -> None:
    """Call fn for WARMUP_S (at least once): first-touch, thread wake-up, and the clock of
    a core that was idle ramping back up (a single call of a small GEMM is too short)."""
    t_end = time.perf_counter() + WARMUP_S
    fn()
    while time.perf_counter() < t_end:
        fn()


def _median_interleaved(contenders: dict, runs: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(SETTLE_S)
            _warm_up(fn)
            samples[name] += _time_calls(fn, runs)
    return {k: statistics.median(v) for k, v in samples.items()}


def _optional_contenders(n: int, threads: int):
    out = {}
    try:
        import torch
        ta, tb = torch.rand(n, n), torch.rand(n, n)
        out["torch"] = lambda: torch.mm(ta, tb)
    except ImportError:
        pass
    try:
        import jax
        import jax.numpy as jnp
        ja = jnp.asarray(np.random.rand(n, n).astype(np.float32))
        jb = jnp.asarray(np.random.rand(n, n).astype(np.float32))
        f = jax.jit(jnp.matmul)
        out["jax"] = lambda: f(ja, jb).block_until_ready()
    except ImportError:
        pass
    return out


class PythonPoolGemm:
    """The alternative to OpenMP: Python threads, each calling the per-thread kernel via
    ctypes (the GIL is released during the foreign call). The calling thread runs share
    0 so only threads-1 hand-offs go through the pool."""

    def __init__(self, kernel, threads: int):
        self.kernel, self.threads = kernel, threads
        self.pool = ThreadPoolExecutor(max_workers=max(threads - 1, 1))

    def __call__(self, args):
        nt = self.threads
        futs = [self.pool.submit(self.kernel, *args, t, nt, None, None) for t in range(1, nt)]
        self.kernel(*args, 0, nt, None, None)
        for f in futs:
            f.result()

    def close(self):
        self.pool.shutdown()


def bench_sizes(g: CompiledGemm, sizes, threads: int, runs: int, rounds: int):
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        dt, args = g.args(a, b, c, num_threads=threads)
        par = g.parallel[dt]
        contenders = {"graphc": lambda: par(*args, threads), "numpy": lambda: a @ b}
        contenders.update(_optional_contenders(n, threads))
        med = _median_interleaved(contenders, runs, rounds)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3 * n)
        gf = {k: 2 * n ** 3 / t / 1e9 for k, t in med.items()}
        rows.append((n, gf))
        extra = "  ".join(f"{k} {v:7.1f}" for k, v in gf.items() if k not in ("graphc", "numpy"))
        print(f"{n:6d} {gf['graphc']:10.1f} {gf['numpy']:10.1f} "
              f"{gf['graphc'] / gf['numpy']:8.2f}   {extra}", flush=True)
    return rows


def bench_single_thread(g: CompiledGemm, sizes, runs: int, rounds: int):
    """One thread each (run with OPENBLAS_NUM_THREADS=1), timed in thread CPU time: the
    kernel-quality comparison that survives other jobs preempting us on a shared machine."""
    rng = np.random.default_rng(2)
    print(f"{'n':>6} {'graphc':>10} {'numpy':>10} {'ratio':>8}   (GFLOP/s, 1 thread, CPU time)")
    for n in sizes:
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        c = np.empty((n, n), np.float32)
        dt, args = g.args(a, b, c, num_threads=1)
        k1 = g.kernels[dt]
        samples = {"graphc": [], "numpy": []}
        for _ in range(rounds):
            for name, fn in (("graphc", lambda: k1(*args, 0, 1, None, None)), ("numpy", lambda: a @ b)):
                _warm_up(fn)
                for _ in range(runs):
                    t0 = time.thread_time()
                    fn()
                    samples[name].append(time.thread_time() - t0)
        gf = {k: 2 * n ** 3 / statistics.median(v) / 1e9 for k, v in samples.items()}
        print(f"{n:6d} {gf['graphc']:10.1f} {gf['numpy']:10.1f} "
              f"{gf['graphc'] / gf['numpy']:8.2f}", flush=True)


def bench_threading(g: CompiledGemm, threads: int, runs: int, rounds: int,
                    sizes=(8, 256, 512, 1024)):
    """Per-call overhead (tiny GEMM) and throughput: GOMP team vs Python thread pool."""
    pool = PythonPoolGemm(g.kernels["f32"], threads)
    rng = np.random.default_rng(1)
    print(f"threading ({threads} threads): median time per call, GFLOP/s")
    print(f"{'n':>6} {'1 thread':>16} {'GOMP_parallel':>22} {'Python pool':>22}")
    try:
        for n in sizes:
            a = rng.random((n, n), dtype=np.float32)
            b = rng.random((n, n), dtype=np.float32)
            c = np.empty((n, n), np.float32)
            dt, args = g.args(a, b, c, num_threads=threads)
            k1, par = g.kernels[dt], g.parallel[dt]
            reps = max(runs, int(2e8 // (2 * n ** 3)) if n < 256 else runs)
            med = _median_interleaved({
                "serial": lambda: k1(*args, 0, 1, None, None),
                "gomp": lambda: par(*args, threads),
                "pool": lambda: pool(args),
            }, reps, rounds)
            f = 2 * n ** 3 / 1e9
            print(f"{n:6d} {med['serial'] * 1e6:9.1f} us {f / med['serial']:5.1f}"
                  f" {med['gomp'] * 1e6:12.1f} us {f / med['gomp']:7.1f}"
                  f" {med['pool'] * 1e6:12.1f} us {f / med['pool']:7.1f}", flush=True)
            if n < 64:
                print(f"{'':6} overhead vs serial: GOMP {1e6 * (med['gomp'] - med['serial']):.1f}"
                      f" us, Python pool {1e6 * (med['pool'] - med['serial']):.1f} us per call")
    finally:
        pool.close()


# libgomp reads these when it is loaded, so each policy runs in its own process.
GOMP_POLICIES = [
    ("libgomp's default (spin 300k, then sleep)", {"GOMP_SPINCOUNT": "300000"}),  # (graphc's
    # loader, engine.load_gomp, makes workers passive unless one of these is set)
    ("GOMP_SPINCOUNT=10000", {"GOMP_SPINCOUNT": "10000"}),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}),
]


def _machine_busy() -> str:
    """Share of CPU time the whole machine spent busy over 0.5 s (others' jobs show)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    try:
        t0, i0 = snap()
        time.sleep(0.5)
        t1, i1 = snap()
        return f"{100 * (1 - (i1 - i0) / max(t1 - t0, 1)):.0f}% busy"
    except OSError:
        return "load unknown"


def main(argv=None):
    import os
    import subprocess
    import sys
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024, 2048])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-threading", action="store_true")
    ap.add_argument("--no-single", action="store_true",
                    help="skip the 1-thread CPU-time comparison")
    ap.add_argument("--threading-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--single-only", action="store_true", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)

    t0 = time.perf_counter()
    target = GemmTarget.for_host()
    g = CompiledGemm(target, dtypes=("f32",))
    if opts.threading_only:
        bench_threading(g, opts.threads, opts.runs, opts.rounds)
        return
    if opts.single_only:
        bench_single_thread(g, opts.sizes, opts.runs, opts.rounds)
        return
    bl = target.f32
    print(f"graphc GEMM f32: {target.vector_width}-lane vectors, MRxNR {bl.mr}x{bl.nr}, "
          f"KC {bl.kc}, MC {bl.mc}, NC {bl.nc}, unroll {target.unroll}; "
          f"compiled in {time.perf_counter() - t0:.2f} s; graphc on {opts.threads} threads "
          f"(OpenMP, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'default')}); "
          f"median of {opts.rounds}x{opts.runs} runs; machine {_machine_busy()} before")
    print(f"{'n':>6} {'graphc':>10} {'numpy':>10} {'ratio':>8}   (GFLOP/s)")
    bench_sizes(g, opts.sizes, opts.threads, opts.runs, opts.rounds)
    print(f"machine {_machine_busy()} after (other jobs on a shared machine skew 2-thread runs)")
    common = ["--threads", str(opts.threads), "--runs", str(opts.runs), "--rounds",
              str(opts.rounds)]
    if not opts.no_single:
        print("\n== one thread each (OPENBLAS_NUM_THREADS=1), thread CPU time", flush=True)
        subprocess.run([sys.executable, __file__, "--single-only", "--sizes",
                        *map(str, opts.sizes), *common],
                       env={**os.environ, "OPENBLAS_NUM_THREADS": "1"}, check=True)
    if not opts.no_threading:
        for label, env in GOMP_POLICIES:
            print(f"\n== libgomp policy: {label}", flush=True)
            subprocess.run([sys.executable, __file__, "--threading-only", *common],
                           env={**os.environ, **env}, check=True)


if __name__ == "__main__":
    main()
