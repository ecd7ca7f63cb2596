"""CUDA C templates of graphc's generated GEMM (instantiated per `Gemm` by gemm.py).

`gc_gemm_simt<TA, TB, Acc, BM, BN, BK, TM, TN, TRA, TRB>`: shared-memory tiling with
register blocking for any element type. A block of (BM/TM)*(BN/TN) threads computes a
BM x BN tile of C; per step of BK it stages the A and B tiles in shared memory (converted
to the accumulator type, zero-filled past the matrix edges, loaded along the contiguous
dimension of each operand so that a warp reads consecutive addresses), then each thread
accumulates a TM x TN block in registers with explicit fused multiply-adds. A thread owns
groups of four consecutive rows and columns, spread over the tile (the classic layout of
register-blocked SGEMM), so it reads its operands from shared memory with 16-byte loads;
rows are padded by four elements, which keeps those loads aligned and the tile stores off
a single bank. The next tiles' global loads are issued into registers before the current
tile is multiplied, so their latency overlaps the arithmetic.

`gc_gemm_wmma<BM, BN, BK, TRA, TRB>`: f16 inputs on tensor cores (sm_70+, WMMA 16x16x16,
f32 accumulation). Tiles are staged through shared memory with row strides padded to
keep every fragment pointer 32-byte aligned and ldm a multiple of 8 (half) or 4 (float),
which lets any M, N, K, leading dimension and transposition use the tensor cores; the
accumulators go back through shared memory so the epilogue sees (row, column, value).

Both call `store(i, j, acc)` for every element of C inside the matrix: the generated
wrapper adds C for accumulating GEMMs, applies the fused epilogue and converts to C's
element type. Both must be called by every thread of the block (they synchronise).
"""

GEMM_TEMPLATES = r"""
__device__ __forceinline__ float gc_val(__half x) { return __half2float(x); }
__device__ __forceinline__ float gc_val(float x) { return x; }
__device__ __forceinline__ double gc_val(double x) { return x; }
__device__ __forceinline__ int gc_val(int x) { return x; }
__device__ __forceinline__ gc_i64 gc_val(gc_i64 x) { return x; }
__device__ __forceinline__ int gc_val(unsigned char x) { return x != 0; }

template <typename TC> __device__ __forceinline__ TC gc_from(float v) { return (TC)v; }
template <typename TC> __device__ __forceinline__ TC gc_from(double v) { return (TC)v; }
template <typename TC> __device__ __forceinline__ TC gc_from(int v) { return (TC)v; }
template <typename TC> __device__ __forceinline__ TC gc_from(gc_i64 v) { return (TC)v; }
template <> __device__ __forceinline__ __half gc_from<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __half gc_from<__half>(double v) { return __double2half(v); }
template <> __device__ __forceinline__ __half gc_from<__half>(int v) { return __float2half_rn((float)v); }
template <> __device__ __forceinline__ __half gc_from<__half>(gc_i64 v) { return __float2half_rn((float)v); }
template <> __device__ __forceinline__ unsigned char gc_from<unsigned char>(int v) { return v != 0; }
template <> __device__ __forceinline__ unsigned char gc_from<unsigned char>(gc_i64 v) { return v != 0; }
template <> __device__ __forceinline__ unsigned char gc_from<unsigned char>(float v) { return v != 0; }
template <> __device__ __forceinline__ unsigned char gc_from<unsigned char>(double v) { return v != 0; }

__device__ __forceinline__ float gc_fma(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double gc_fma(double a, double b, double c) { return fma(a, b, c); }
__device__ __forceinline__ int gc_fma(int a, int b, int c) { return gc_wadd<int>(gc_wmul<int>(a, b), c); }
__device__ __forceinline__ gc_i64 gc_fma(gc_i64 a, gc_i64 b, gc_i64 c) { return gc_wadd<gc_i64>(gc_wmul<gc_i64>(a, b), c); }

// The plain store (no epilogue): one type for every GEMM of the same element types, so
// kernels without an epilogue share their template instantiations.
template <typename TC, typename Acc, bool ACCUMULATE>
struct GcStore {
  TC* c;
  gc_i64 ldc;
  __device__ __forceinline__ void operator()(gc_i64 i, gc_i64 j, Acc v) const {
    TC* dst = c + i * ldc + j;
    if (ACCUMULATE) v = v + (Acc)gc_val(*dst);
    *dst = gc_from<TC>(v);
  }
};

// Four consecutive shared-memory elements into registers: one 16-byte load for float
// (the addresses are 16-byte aligned by construction), four loads otherwise.
template <typename T> __device__ __forceinline__ void gc_lds4(const T* p, T* out) {
#pragma unroll
  for (int q = 0; q < 4; ++q) out[q] = p[q];
}
template <> __device__ __forceinline__ void gc_lds4<float>(const float* p, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(p);
  out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
}

template <typename TA, typename TB, typename Acc, int BM, int BN, int BK, int TM, int TN,
          bool TRA, bool TRB, class Store>
__device__ __forceinline__ void gc_gemm_simt(const TA* __restrict__ A, const TB* __restrict__ B,
                                             gc_i64 M, gc_i64 N, gc_i64 K, gc_i64 lda, gc_i64 ldb,
                                             Store& store) {
  // Thread (tx, ty) owns rows  (i / 4) * (BM / HM) + ty * 4 + i % 4  (HM = TM / 4 groups)
  // and columns (j / 4) * (BN / HN) + tx * 4 + j % 4: groups of four consecutive rows and
  // columns, so each step reads them from shared memory four at a time.
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register blocks are made of groups of four");
  constexpr int TX = BN / TN, TY = BM / TM, NT = TX * TY, HM = TM / 4, HN = TN / 4;
  constexpr int PAD = 4;  // keeps rows 16-byte aligned and spreads the tile stores over banks
  __shared__ __align__(16) Acc As[BK][BM + PAD];
  __shared__ __align__(16) Acc Bs[BK][BN + PAD];
  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const gc_i64 m0 = (gc_i64)blockIdx.y * BM, n0 = (gc_i64)blockIdx.x * BN;
  Acc acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = (Acc)0;
  // The next tiles are loaded into registers while this one is multiplied (prefetch).
  constexpr int LA = (BM * BK + NT - 1) / NT, LB = (BK * BN + NT - 1) / NT;
  Acc ra[LA], rb[LB];
  auto load = [&](gc_i64 k0) {
#pragma unroll
    for (int q = 0; q < LA; ++q) {
      const int e = tid + q * NT;
      const int mm = TRA ? e % BM : e / BK, kk = TRA ? e / BM : e % BK;
      const gc_i64 gm = m0 + mm, gk = k0 + kk;
      ra[q] = (e < BM * BK && gm < M && gk < K) ? (Acc)gc_val(A[TRA ? gk * lda + gm : gm * lda + gk]) : (Acc)0;
    }
#pragma unroll
    for (int q = 0; q < LB; ++q) {
      const int e = tid + q * NT;
      const int nn = TRB ? e / BK : e % BN, kk = TRB ? e % BK : e / BN;
      const gc_i64 gn = n0 + nn, gk = k0 + kk;
      rb[q] = (e < BK * BN && gn < N && gk < K) ? (Acc)gc_val(B[TRB ? gn * ldb + gk : gk * ldb + gn]) : (Acc)0;
    }
  };
  load(0);
  for (gc_i64 k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
    for (int q = 0; q < LA; ++q) {
      const int e = tid + q * NT;
      if (e < BM * BK) As[TRA ? e / BM : e % BK][TRA ? e % BM : e / BK] = ra[q];
    }
#pragma unroll
    for (int q = 0; q < LB; ++q) {
      const int e = tid + q * NT;
      if (e < BK * BN) Bs[TRB ? e % BK : e / BN][TRB ? e / BK : e % BN] = rb[q];
    }
    __syncthreads();
    if (k0 + BK < K) load(k0 + BK);
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      Acc a[TM], b[TN];
#pragma unroll
      for (int h = 0; h < HM; ++h) gc_lds4<Acc>(&As[kk][h * (BM / HM) + ty * 4], &a[h * 4]);
#pragma unroll
      for (int h = 0; h < HN; ++h) gc_lds4<Acc>(&Bs[kk][h * (BN / HN) + tx * 4], &b[h * 4]);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = gc_fma(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const gc_i64 gm = m0 + (i / 4) * (BM / HM) + ty * 4 + i % 4;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const gc_i64 gn = n0 + (j / 4) * (BN / HN) + tx * 4 + j % 4;
      if (gm < M && gn < N) store(gm, gn, acc[i][j]);
    }
  }
}

template <int BM, int BN, int BK, bool TRA, bool TRB, class Store>
__device__ __forceinline__ void gc_gemm_wmma(const __half* __restrict__ A, const __half* __restrict__ B,
                                             gc_i64 M, gc_i64 N, gc_i64 K, gc_i64 lda, gc_i64 ldb,
                                             Store& store) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  using namespace nvcuda;
  constexpr int WM = 32, WN = 32, WARPS_N = BN / WN, NT = (BM / WM) * (BN / WN) * 32;
  constexpr int LDA_S = BK + 8, LDB_S = BN + 8, LDC_S = BN + 4;
  __shared__ __align__(32) __half As[BM * LDA_S];
  __shared__ __align__(32) __half Bs[BK * LDB_S];
  __shared__ __align__(32) float Cs[BM * LDC_S];
  const int tid = threadIdx.x, warp = tid / 32;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  const gc_i64 m0 = (gc_i64)blockIdx.y * BM, n0 = (gc_i64)blockIdx.x * BN;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[WM / 16][WN / 16];
#pragma unroll
  for (int i = 0; i < WM / 16; ++i)
#pragma unroll
    for (int j = 0; j < WN / 16; ++j) wmma::fill_fragment(c[i][j], 0.0f);
  const __half zero = __float2half(0.0f);
  for (gc_i64 k0 = 0; k0 < K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += NT) {
      const int mm = TRA ? e % BM : e / BK, kk = TRA ? e / BM : e % BK;
      const gc_i64 gm = m0 + mm, gk = k0 + kk;
      As[mm * LDA_S + kk] = (gm < M && gk < K) ? A[TRA ? gk * lda + gm : gm * lda + gk] : zero;
    }
    for (int e = tid; e < BK * BN; e += NT) {
      const int nn = TRB ? e / BK : e % BN, kk = TRB ? e % BK : e / BN;
      const gc_i64 gn = n0 + nn, gk = k0 + kk;
      Bs[kk * LDB_S + nn] = (gn < N && gk < K) ? B[TRB ? gn * ldb + gk : gk * ldb + gn] : zero;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[WM / 16];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b[WN / 16];
#pragma unroll
      for (int i = 0; i < WM / 16; ++i)
        wmma::load_matrix_sync(a[i], As + (wm * WM + i * 16) * LDA_S + kk, LDA_S);
#pragma unroll
      for (int j = 0; j < WN / 16; ++j)
        wmma::load_matrix_sync(b[j], Bs + kk * LDB_S + wn * WN + j * 16, LDB_S);
#pragma unroll
      for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 16; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < WM / 16; ++i)
#pragma unroll
    for (int j = 0; j < WN / 16; ++j)
      wmma::store_matrix_sync(Cs + (wm * WM + i * 16) * LDC_S + wn * WN + j * 16, c[i][j], LDC_S,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < BM * BN; e += NT) {
    const int mm = e / BN, nn = e % BN;
    const gc_i64 gm = m0 + mm, gn = n0 + nn;
    if (gm < M && gn < N) store(gm, gn, Cs[mm * LDC_S + nn]);
  }
  __syncthreads();
#endif
}
"""
