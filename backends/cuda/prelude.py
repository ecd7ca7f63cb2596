"""The CUDA C every generated translation unit starts with: scalar semantics and reductions.

The helpers give the kernel IR's scalar operations numpy's meaning, as the LLVM backend
does (see backends/llvm/codegen.py, "Scalar semantics"): floor division and Python modulo
for integers with x // 0 = 0 and no INT_MIN / -1 trap, wrapping integer arithmetic
(through unsigned types, so the C++ compiler may not assume no overflow), NaN-propagating
max/min, half precision kept in float registers and rounded once per conversion. The file
is compiled with `-fmad=false`, so `a * b + c` rounds twice, as numpy does; the GEMM
templates ask for fused multiply-adds explicitly.

`gc_group_reduce<Op, G>` folds one value per thread over aligned groups of G threads
(G a power of two, 32 <= G <= block size): a butterfly of warp shuffles, then, for
groups wider than a warp, one partial per warp through shared memory. Every thread of a
group gets the result. All threads of the block must call it (it synchronises the block).
"""

PRELUDE = r"""
#include <cuda_fp16.h>
#include <mma.h>

typedef long long gc_i64;

__device__ __forceinline__ float gc_round_half(float x) { return __half2float(__float2half_rn(x)); }
__device__ __forceinline__ float gc_round_half(double x) { return __half2float(__double2half(x)); }

// float -> int as ir.dtypes.float_to_int: truncate, saturate, NaN -> 0. (On the GPU a plain
// conversion is cvt.rzi, which does the same; spelling it out keeps the CPU emulator exact.)
template <typename T, typename F> __device__ __forceinline__ T gc_float_to_int(F x) {
  const bool wide = sizeof(T) == 8;
  const F hi = wide ? (F)9223372036854775808.0 : (F)2147483648.0;
  if (x != x) return (T)0;
  if (x >= hi) return wide ? (T)0x7fffffffffffffffLL : (T)0x7fffffff;
  if (x < -hi) return wide ? (T)(-0x7fffffffffffffffLL - 1) : (T)(-0x7fffffff - 1);
  return (T)x;
}

template <typename T> __device__ __forceinline__ T gc_wadd(T a, T b);
template <> __device__ __forceinline__ int gc_wadd<int>(int a, int b) { return (int)((unsigned)a + (unsigned)b); }
template <> __device__ __forceinline__ gc_i64 gc_wadd<gc_i64>(gc_i64 a, gc_i64 b) { return (gc_i64)((unsigned long long)a + (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T gc_wsub(T a, T b);
template <> __device__ __forceinline__ int gc_wsub<int>(int a, int b) { return (int)((unsigned)a - (unsigned)b); }
template <> __device__ __forceinline__ gc_i64 gc_wsub<gc_i64>(gc_i64 a, gc_i64 b) { return (gc_i64)((unsigned long long)a - (unsigned long long)b); }
template <typename T> __device__ __forceinline__ T gc_wmul(T a, T b);
template <> __device__ __forceinline__ int gc_wmul<int>(int a, int b) { return (int)((unsigned)a * (unsigned)b); }
template <> __device__ __forceinline__ gc_i64 gc_wmul<gc_i64>(gc_i64 a, gc_i64 b) { return (gc_i64)((unsigned long long)a * (unsigned long long)b); }

template <typename T> __device__ __forceinline__ T gc_idiv(T a, T b) {
  // floor division; x // 0 = 0, x // -1 = -x (wrapping)
  if (b == 0) return 0;
  if (b == -1) return gc_wsub<T>((T)0, a);
  T q = a / b, r = a % b;
  return (r != 0 && ((r ^ b) < 0)) ? q - 1 : q;
}
template <typename T> __device__ __forceinline__ T gc_imod(T a, T b) {
  // Python modulo: the divisor's sign; x % 0 = 0
  if (b == 0 || b == -1) return 0;
  T r = a % b;
  return (r != 0 && ((r ^ b) < 0)) ? r + b : r;
}
template <typename T> __device__ __forceinline__ T gc_ipow(T base, T e) {
  if (e < 0) return base == 1 ? (T)1 : (base == -1 ? ((e & 1) ? (T)-1 : (T)1) : (T)0);
  T acc = 1;
  while (e != 0) {
    if (e & 1) acc = gc_wmul<T>(acc, base);
    base = gc_wmul<T>(base, base);
    e >>= 1;
  }
  return acc;
}
template <typename T> __device__ __forceinline__ T gc_imax(T a, T b) { return a > b ? a : b; }
template <typename T> __device__ __forceinline__ T gc_imin(T a, T b) { return a < b ? a : b; }
template <typename T> __device__ __forceinline__ T gc_iabs(T a) { return a < 0 ? gc_wsub<T>((T)0, a) : a; }
template <typename T> __device__ __forceinline__ T gc_isign(T a) { return (T)(a > 0) - (T)(a < 0); }

template <typename T> __device__ __forceinline__ T gc_fmax(T a, T b) { return (a >= b || a != a) ? a : b; }
template <typename T> __device__ __forceinline__ T gc_fmin(T a, T b) { return (a <= b || a != a) ? a : b; }
template <typename T> __device__ __forceinline__ T gc_fsign(T x) {
  return x != x ? x : (x > (T)0 ? (T)1 : (x < (T)0 ? (T)-1 : (T)0));
}
__device__ __forceinline__ float gc_fmod(float a, float b) {
  float r = fmodf(a, b);
  if (r != 0.0f && ((r < 0.0f) != (b < 0.0f))) r += b;
  return r == 0.0f ? copysignf(0.0f, b) : r;
}
__device__ __forceinline__ double gc_fmod(double a, double b) {
  double r = fmod(a, b);
  if (r != 0.0 && ((r < 0.0) != (b < 0.0))) r += b;
  return r == 0.0 ? copysign(0.0, b) : r;
}
__device__ __forceinline__ float gc_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double gc_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float gc_rsqrt(float x) { return 1.0f / sqrtf(x); }
__device__ __forceinline__ double gc_rsqrt(double x) { return 1.0 / sqrt(x); }

struct GcAdd { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return a + b; } };
struct GcMaxF { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return gc_fmax<T>(a, b); } };
struct GcMinF { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return gc_fmin<T>(a, b); } };
struct GcAddI { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return gc_wadd<T>(a, b); } };
struct GcMaxI { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return gc_imax<T>(a, b); } };
struct GcMinI { template <typename T> __device__ __forceinline__ static T apply(T a, T b) { return gc_imin<T>(a, b); } };

template <class Op, int G, typename T>
__device__ __forceinline__ T gc_group_reduce(T v, T* smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = Op::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (G > 32) {
    const int warp = threadIdx.x >> 5;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) smem[warp] = v;
    __syncthreads();
    const int first = (warp / (G / 32)) * (G / 32);
    v = smem[first];
#pragma unroll
    for (int w = 1; w < G / 32; ++w) v = Op::apply(v, smem[first + w]);
  }
  return v;
}

// blockDim.x = 32 * L: thread (column c = tid % 32, lane l = tid / 32); folds the L lanes
// of each column through shared memory (32 * L entries); the result is valid in lane 0.
template <class Op, int L, typename T>
__device__ __forceinline__ T gc_column_reduce(T v, T* smem) {
  const int c = threadIdx.x & 31, l = threadIdx.x >> 5;
  __syncthreads();
  smem[l * 32 + c] = v;
  __syncthreads();
  if (l == 0) {
#pragma unroll
    for (int i = 1; i < L; ++i) v = Op::apply(v, smem[i * 32 + c]);
  }
  return v;
}
"""
