"""exe.profile on the LLVM backend: a second build of the program with
`CodegenOptions(profile=True)` (the entry adds each kernel's rdtsc delta to a counter,
codegen.py), made on first use and kept; its counters are read around `repeat` calls and
turned into seconds with the time-stamp counter's rate, measured once per process.

The profiling build is the program's own code plus two `rdtsc` per kernel (~20 ns each);
parallel kernels are timed on the calling thread, i.e. wall time of the team.
"""
from __future__ import annotations

import ctypes
import threading
import time

from ..profile import Profile, build_profile, kernel_rows
from . import engine

_RDTSC = """define i64 @graphc_rdtsc() {
  %c = call i64 @llvm.readcyclecounter()
  ret i64 %c
}
declare i64 @llvm.readcyclecounter()
"""
_rate: list[float] = []  # explicit cache: counter ticks per second
_rate_lock = threading.Lock()


def ticks_per_second() -> float:
    """The rate of llvm.readcyclecounter (the invariant TSC on x86), against perf_counter."""
    with _rate_lock:
        if not _rate:
            target = engine.host_target()
            jm = engine.JitModule(engine.optimize_and_emit(_RDTSC, target)[0], target)
            rdtsc = ctypes.CFUNCTYPE(ctypes.c_uint64)(jm.address("graphc_rdtsc"))
            best = []
            for _ in range(3):
                t0, c0 = time.perf_counter(), rdtsc()
                time.sleep(0.02)
                t1, c1 = time.perf_counter(), rdtsc()
                best.append((c1 - c0) / (t1 - t0))
            _rate.append(sorted(best)[1])
            _rate.append(jm)  # keep the code alive
        return _rate[0]


def profile(exe, inputs: dict, params: dict, repeat: int, build) -> Profile:
    """Run the profiling build of `exe` (`build(exe)`, made once and kept on it: see
    runtime.profiling_build) `repeat` times on copies of the parameters; rows per kernel."""
    prof = getattr(exe, "_profiler", None)
    if prof is None:
        prof = exe._profiler = build(exe)
    prof.num_threads = getattr(exe, "num_threads", prof.num_threads)
    prof._execute(inputs, params)  # warm-up (and first-touch of the arena)
    prof.compiled.kernel_cycles(reset=True)
    t0 = time.perf_counter()
    for _ in range(repeat):
        prof._execute(inputs, params)
    call = (time.perf_counter() - t0) / repeat
    rate = ticks_per_second()
    seconds = [c / rate / repeat for _, c in prof.compiled.kernel_cycles(reset=True)]
    return build_profile(prof.program.provenance.graph if prof.program.provenance else exe.graph,
                         "llvm", kernel_rows(prof.program, seconds), call, repeat,
                         f"rdtsc per kernel, {rate / 1e9:.2f} GHz")
