"""Runs generated CUDA C on the CPU, so the code generator's output is executed and
compared with the reference interpreter on machines without a GPU (CI, this one).

The generated translation unit is compiled unchanged by g++ (C++20) against a small shim
that stands in for the CUDA headers: `__global__`/`__device__` are plain functions,
`threadIdx`/`blockIdx`/... are thread-local, a thread block is `blockDim.x` OS threads
that walk the grid's blocks in step (one block at a time, so `__shared__` = a static local
is the running block's shared memory), `__syncthreads()` is a barrier of those threads,
`__shfl_xor_sync` exchanges through a block-wide buffer between two barriers (the
generated code only calls it block-uniformly), `__half` is `_Float16` (round to nearest
even, as `__float2half_rn`), and the WMMA fragments hold whole 16x16 tiles per thread
(every lane of a warp computes the same tile, which is what the collective ops mean).

What this does not show: timing, occupancy, the warp-synchronous details real hardware
adds (lane masks, memory ordering between threads), or ptxas/driver issues;
the nvcc compile test and the GPU conformance suite (`pytest -m cuda`) cover those.

A barrier that waits more than 20 s (a block that does not reach `__syncthreads` as a
whole) fails the launch instead of hanging.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from . import codegen
from ...ir import kernel as K

SHIM_FP16 = r"""
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__ __restrict
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __CUDA_ARCH__ 800

struct gc_dim3 { unsigned x = 1, y = 1, z = 1; };
extern thread_local gc_dim3 threadIdx, blockIdx, blockDim, gridDim;
void __syncthreads();
uint64_t gc_exchange(uint64_t v, int partner);

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int o) {
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  u = gc_exchange(u, (int)threadIdx.x ^ o);
  T r;
  std::memcpy(&r, &u, sizeof(T));
  return r;
}

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct __half { _Float16 h; };
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }
inline __half __float2half(float f) { return __half{(_Float16)f}; }
inline __half __double2half(double d) { return __half{(_Float16)d}; }
inline float __half2float(__half h) { return (float)h.h; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
"""

SHIM_MMA = r"""
#pragma once
namespace nvcuda { namespace wmma {
struct row_major {}; struct col_major {};
struct matrix_a {}; struct matrix_b {}; struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment { T x[16 * 16]; };
template <class Use, class T, class L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = p[r * ldm + c];
}
template <class T>
inline void fill_fragment(fragment<accumulator, 16, 16, 16, T>& f, T v) {
  for (int i = 0; i < 256; ++i) f.x[i] = v;
}
template <class T, class A, class B>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, A>& a,
                     const fragment<matrix_b, 16, 16, 16, T, B>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int i = 0; i < 16; ++i) for (int j = 0; j < 16; ++j) {
    float s = c.x[i * 16 + j];
    for (int k = 0; k < 16; ++k) s += __half2float(a.x[i * 16 + k]) * __half2float(b.x[k * 16 + j]);
    out[i * 16 + j] = s;
  }
  for (int i = 0; i < 256; ++i) d.x[i] = out[i];
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t) {
  for (int r = 0; r < 16; ++r) for (int c = 0; c < 16; ++c) p[r * ldm + c] = f.x[r * 16 + c];
}
}}
"""

RUNNER = r"""
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

thread_local gc_dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace {
struct Barrier {  // a reusable barrier that gives up (and flags the launch) after 20 s
  std::mutex m; std::condition_variable cv; int n = 0, waiting = 0; long gen = 0;
  std::atomic<bool> failed{false};
  void wait() {
    if (failed) return;
    std::unique_lock<std::mutex> lk(m);
    long g = gen;
    if (++waiting == n) { waiting = 0; ++gen; cv.notify_all(); return; }
    if (!cv.wait_for(lk, std::chrono::seconds(20), [&] { return gen != g || failed.load(); })) {
      failed = true; cv.notify_all();
    }
  }
};
Barrier g_bar;
uint64_t g_xchg[1024];
}

void __syncthreads() { g_bar.wait(); }
uint64_t gc_exchange(uint64_t v, int partner) {
  g_xchg[threadIdx.x] = v;
  g_bar.wait();
  uint64_t r = g_xchg[partner];
  g_bar.wait();
  return r;
}

template <class... P, size_t... I>
static void gc_call(void (*f)(P...), void** a, std::index_sequence<I...>) { f(static_cast<P>(a[I])...); }

template <class... P>
static int gc_launch(void (*f)(P...), void** args, int gx, int gy, int gz, int bx) {
  g_bar.n = bx; g_bar.waiting = 0; g_bar.failed = false;
  std::vector<std::thread> threads;
  for (int t = 0; t < bx; ++t) {
    threads.emplace_back([=] {
      threadIdx.x = t; blockDim.x = bx;
      gridDim.x = gx; gridDim.y = gy; gridDim.z = gz;
      for (int z = 0; z < gz; ++z) for (int y = 0; y < gy; ++y) for (int x = 0; x < gx; ++x) {
        blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
        gc_call(f, args, std::index_sequence_for<P...>{});
        g_bar.wait();  // the next block reuses the shared memory
      }
    });
  }
  for (auto& th : threads) th.join();
  return g_bar.failed ? 1 : 0;
}
"""


def _compiler() -> str | None:
    return shutil.which("g++") or shutil.which("clang++")


def available() -> bool:
    return _compiler() is not None


def build(source: str, functions: list[str], workdir: Path) -> ctypes.CDLL:
    """Compile a translation unit (as codegen.translation_unit produces) for the CPU."""
    inc = workdir / "include"
    inc.mkdir(parents=True, exist_ok=True)
    (inc / "cuda_fp16.h").write_text(SHIM_FP16)
    (inc / "mma.h").write_text(SHIM_MMA)
    wrappers = "\n".join(
        f'extern "C" int gcemu_{f}(void** a, int gx, int gy, int gz, int bx) '
        f"{{ return gc_launch({f}, a, gx, gy, gz, bx); }}" for f in functions)
    src = workdir / "emu.cpp"
    src.write_text(source + "\n" + RUNNER + "\n" + wrappers + "\n")
    lib = workdir / "emu.so"
    cmd = [_compiler(), "-std=c++20", "-O0", "-fPIC", "-shared", "-pthread", "-w",
           "-fno-fast-math", "-ffp-contract=off", f"-I{inc}", str(src), "-o", str(lib)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError("emulator build failed:\n" + res.stderr[-6000:])
    return ctypes.CDLL(str(lib))


def run(lib: ctypes.CDLL, module: codegen.CudaModule, arrays: dict[str, np.ndarray],
        grid_cap: int = 2) -> None:
    """Run every launch of `module` in order over `arrays` (one per external buffer, by
    name; outputs are written in place). Grid-stride launches run with at most
    `grid_cap` blocks: their loops cover the rest."""
    arena = np.zeros(max(module.arena_bytes, 1) + 64, np.uint8)
    base = {"<arena>": arena.ctypes.data + (-arena.ctypes.data) % 64}
    for name in module.external:
        a = arrays[name]
        assert a.flags.c_contiguous
        base[name] = a.ctypes.data
    for launch in module.launches:
        ptrs = (ctypes.c_void_p * max(len(launch.buffers), 1))()
        for i, b in enumerate(launch.buffers):
            st = module.storage[b]
            ptrs[i] = base[st.root] + st.offset
        gx, gy, gz = launch.grid
        if launch.grid_stride:
            gx = min(gx, grid_cap)
        gz = min(gz, grid_cap)  # GEMM batches are a grid-stride loop over z
        fn = getattr(lib, f"gcemu_{launch.function}")
        if fn(ptrs, gx, gy, gz, launch.block[0]):
            raise RuntimeError(f"{launch.function}: a barrier timed out (non-uniform __syncthreads)")


def external_arrays(program: K.Program, inputs: dict[str, np.ndarray],
                    params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host arrays for a program's external buffers: inputs (by graph input order),
    parameters, constants, zeroed outputs."""
    out: dict[str, np.ndarray] = {}
    for name, b in program.buffers.items():
        if name in program.aliases or b.kind == "temp":
            continue
        out[name] = np.zeros(b.size, b.dtype.np_dtype)
    for buf, arr in inputs.items():
        out[buf] = np.ascontiguousarray(arr, dtype=program.buffers[buf].dtype.np_dtype).reshape(-1).copy()
    for pname, buf in program.params.items():
        out[buf] = np.ascontiguousarray(params[pname], dtype=program.buffers[buf].dtype.np_dtype).reshape(-1).copy()
    for buf, data in program.constants.items():
        out[buf] = np.ascontiguousarray(np.asarray(data), dtype=program.buffers[buf].dtype.np_dtype).reshape(-1).copy()
    return out
