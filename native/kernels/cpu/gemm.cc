// gemm.cc — single-precision GEMM, row-major: C(M,N) = alpha * op(A)(M,K) · op(B)(K,N) + beta * C.
//
// Blocking (BLIS/GotoBLAS). The register block is MR x NR = 6 x 16: twelve 8-float accumulators, two
// B vectors and one broadcast A value fit the 16 ymm registers; per k step the micro-kernel does
// 2 B loads + 6 broadcasts for 12 FMAs. Operands reach the micro-kernel as
//   A panel: kc x MR, stored k-major (a[k*MR + r]), always packed (zero-padded rows);
//   B panel: kc rows of NR floats (row stride NR; panels zero-padded past N).
// Packing absorbs the transposes: op(A)/op(B) are gathered into the panel layout, so all four
// (transA, transB) combinations run the same micro-kernel (transposed B is packed with 8x8
// register transposes).
// Four drivers, chosen by shape:
//  * general (M > 64, or B not transposed and M > 8): Goto loops jc (NC=3072 columns, packed B block
//    KC x NC) -> pc (KC=256; a B micro-panel KC x 16 = 16 KB stays in L1) -> ic (MC=144 rows, packed A
//    block MC x KC = 144 KB in L2) -> jr -> ir -> micro-kernel. C is cut into one tile per thread
//    (rows or columns, whichever keeps tiles squarest); each thread packs its own operands into
//    thread-local buffers, so there is no synchronisation inside the region.
//  * K-split (B not transposed, M <= 8: decode / GEMV, bandwidth bound): threads split the K rows of
//    B so each streams one contiguous region of memory exactly once (measured: 16-column strips or
//    1 KB row pieces reach only ~40-50% of DRAM bandwidth here); each part writes partial sums and a
//    final pass forms alpha*sum + beta*C. M <= 2 uses a streaming GEMV kernel (4 rows of B at a time,
//    no copy); 3..8 copy kc x N blocks (~256 KB, L2) into panels reused by the row panels.
//  * skinny-T (transB, 4 < M <= 64, e.g. the LM head over a prompt): threads split N; blocks of
//    KC x 256 of op(B) are transposed from memory once into an L2 panel buffer (next block software
//    prefetched) and each 16-column strip is reused from L1 by all ceil(M/6) row panels.
//  * dot (transB, M <= 4: the LM head at decode, logits = h·wteᵀ): each row of B (N x K) is read once
//    and dotted with all M rows of A (register block M x up to 8 rows of B).
// B is never packed into a large buffer in the three skinny drivers.
// Tall panels (AVX-512 only): products of 7 to 64 rows on a packed W (the skinny packed driver) and
// general-driver tiles of 7 to 64 rows use 8-row A panels (kTallMR x 32 from two strips, 16 zmm
// accumulators), read in place from a row-major A; per element the same operations as the 6-row kernel.
// Packed matrices (PackedMatrix, below): weights kept in the B-panel layout once, read in place. A
// weight kept only as its packed transpose X = Bᵀ (the tied LM head wteᵀ) has gemm_packed_nt /
// gemm_packed_nn, which take gemm's drivers for M > 4 (bit-identical to gemm on the row-major B); at
// M <= 4 (decode, a few label rows) they stream X's strips in place, the forward through the
// micro-kernel and the backward into per-lane sums, instead of gemm's dot and GEMV kernels, which
// read B's rows (transposing them out of the strips cost 20-70% more than the product).
// Dispatch: the AVX2/FMA kernels are compiled with __attribute__((target("avx2,fma"))) (the file
// itself is built without -mavx2) and chosen at run time by __builtin_cpu_supports; otherwise, and
// on non-x86 targets, portable C++ kernels with the same data layouts run (auto-vectorised).
// gemm_force_portable() switches paths for tests. Thread safety: the only mutable state is the
// thread-local pack buffers and the atomic force flag.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "../../core/threadpool.h"
#include "../kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace mend {
namespace {

using i64 = int64_t;

constexpr int MR = 6;    // micro-tile rows
constexpr int kTallMR = 8;  // AVX-512, 7 to kSkinnyM rows: 8-row panels (16 of 32 zmm accumulate)
constexpr int NR = 16;   // micro-tile columns
constexpr int KC = 256;  // k block: B micro-panel KC x NR = 16 KB (L1)
constexpr int MC = 144;  // A block MC x KC = 144 KB (L2)
constexpr int NC = 3072; // B block KC x NC = 3 MB (L2/L3)
constexpr int kSkinnyM = 64;       // M at or below this: skinny driver (B streamed once)
static_assert(kSkinnyM < MC, "a tile of at most kSkinnyM rows is one block of rows");
constexpr int kDotM = 4;           // transB and M at or below this: dot driver
constexpr int kSkinnyKS = 4096;    // skinny driver packs A in K superblocks of this many columns
constexpr int kSkinnyStrips = 16;  // skinny driver: B blocks of KC x (16 x NR) (256 KB, L2)
constexpr int kGemvM = 2;          // B not transposed and M at or below this: streaming GEMV kernel
constexpr int kKSplitM = 8;        // B not transposed and M at or below this: K-split driver
constexpr int kGemvW = 4096;       // K-split GEMV: columns per chunk (partial rows stay in L1)
constexpr int kKSplitW = 4096;     // K-split, M > kGemvM: B blocks of kc x <= 4096 columns (~256 KB)
constexpr int kKSplitMinK = 128;   // K-split driver: fewest rows of B per part
constexpr int kLaneGroup = 8;     // gemm_packed_lanes: strips per lane_acc call (8 streams; the sums' tiles
                                   // are loaded and stored once per group)
constexpr int kLanePrefetchRows = 16;  // lane_acc_avx512: rows of each strip prefetched ahead (L1)
constexpr int kPrefetchRows = 64;  // micro-kernels: B rows prefetched ahead into L2 (4 KB per strip;
                                   // packed weights streamed from DRAM: AVX-512 ~10% over none, flat 24..256;
                                   // AVX2 16-row fc 1.05 -> 0.86 ms)

// ---------------------------------------------------------------------------------------------
// Thread-local 64-byte aligned pack buffers.
struct PackBuf {
  float* p = nullptr;
  size_t cap = 0;  // floats
  ~PackBuf() { std::free(p); }
  float* get(size_t n) {
    if (n > cap) {
      std::free(p);
      size_t c = (n + 15) & ~size_t(15);
      p = static_cast<float*>(std::aligned_alloc(64, c * sizeof(float)));
      cap = p ? c : 0;
    }
    return p;
  }
};
thread_local PackBuf tl_a;  // packed A (general driver: MC x KC block; skinny/dot: shared copy of A)
thread_local PackBuf tl_b;  // packed B (general: KC x NC block; skinny: one block of panels)
thread_local PackBuf tl_c;  // K-split driver: per-part partial sums of C

// ---------------------------------------------------------------------------------------------
// Kernel signatures (one implementation per backend).

// c (m x n, row stride ldc) = alpha * a·b + beta * c, beta == 0: c is not read.
// a: packed A panel (kc x MR, a[k*MR + r]); b: kc rows of NR floats, row stride ldb. m <= MR, n <= NR.
using UkrFn = void (*)(int kc, const float* a, const float* b, i64 ldb, float* c, i64 ldc, int m, int n,
                       float alpha, float beta);
// out (kc x NR, zero-padded columns) = transpose of b: out[k*NR + j] = b[j*ldb + k], j < nb.
using PackBTFn = void (*)(const float* b, i64 ldb, int kc, int nb, float* out);
// out (kc x MR) = the MR rows a[r*lda + k], k < kc, k-major: out[k*MR + r] (a full A panel, not transposed).
using PackA6Fn = void (*)(const float* a, i64 lda, int kc, float* out);
// c (m x nb) = alpha * a·bᵀ + beta * c; a (m x K, row stride lda), b (nb x K, row stride ldb).
// m <= kDotM, nb <= dot_nb(m) (the driver calls with nb == dot_nb(m) or nb == 1).
using DotFn = void (*)(int K, int m, int nb, const float* a, i64 lda, const float* b, i64 ldb, float* c,
                       i64 ldc, float alpha, float beta);

// c (m x n, row stride ldc) += a·b (init: c = a·b): a (m x kc, row stride lda), b (kc x n, row stride
// ldb, read row by row). m <= kGemvM. The streaming kernel for B not transposed and tiny M.
using GemvNFn = void (*)(int kc, int m, int n, const float* a, i64 lda, const float* b, i64 ldb, float* c,
                         i64 ldc, bool init);

// Two adjacent 16-column strips at once: c (m x n, n <= 2*NR) from B panels b (columns 0..15) and
// b2 (columns 16..31), both kc rows of NR floats with row stride ldb. Per element the same operations
// in the same order as UkrFn (so results are bit-identical to two UkrFn calls); null where the
// backend has no such kernel.
using Ukr2Fn = void (*)(int kc, const float* a, const float* b, const float* b2, i64 ldb, float* c, i64 ldc, int m,
                        int n, float alpha, float beta);

// Ukr2Fn on A panels of kTallMR rows (lda == 0: a[k*kTallMR + r]) or on A's rows in place (lda > 0:
// a[r*lda + k]), whose k loop prefetches row k of pf and of pf2 (one line each, row stride ldb), or B's
// own rows kPrefetchRows ahead where pf is null.
using Ukr2TallFn = void (*)(int kc, const float* a, i64 lda, const float* b, const float* b2, i64 ldb, float* c, i64 ldc,
                            int m, int n, float alpha, float beta, const float* pf, const float* pf2);
// acc[(i*kc + k)*NR + j] += a[i*lda + j] * s[k*NR + j] for i < m <= kDotM, k < kc, lanes j < NR: the
// strip's kc rows scaled lane by lane by the m rows of a (NR values each) and summed into per-lane
// accumulators (A · B for B = Xᵀ, read from X's strips in place; the lanes are summed at the end).
// For a group of nstr strips g (strip g at s + g*sstride, its m rows of A's values at a + g*astride + i*NR):
// the strips in order, per (i, k, lane) the same FMAs in the same order whatever the backend's blocking.
using LaneAccFn = void (*)(int kc, int m, const float* a, i64 astride, const float* s, i64 sstride, int nstr, float* acc);
// UkrFn whose k loop prefetches row k of pf (one line per row, row stride ldb) instead of B's row
// k + kPrefetchRows: a panel that reads its B strip from L1 fetches the next one meanwhile. Null where
// the backend has none.
using UkrPfFn = void (*)(int kc, const float* a, const float* b, i64 ldb, float* c, i64 ldc, int m, int n,
                         float alpha, float beta, const float* pf);
// out[j*ldo + k] = s[k*NR + j] for lanes j < nb <= NR, k < kc: a strip's lanes (kc rows of NR floats) as
// rows (unpack_matrix_t: the rows of Xᵀ for a packed X).
using StripTFn = void (*)(const float* s, int kc, int nb, float* out, i64 ldo);

constexpr int dot_nb(int m) { return m == 1 ? 8 : m == 2 ? 6 : m == 3 ? 4 : 3; }

struct Ops {
  UkrFn ukr;
  Ukr2Fn ukr2;
  PackBTFn pack_bt;
  PackA6Fn pack_a6;
  DotFn dot;
  GemvNFn gemvn;
  StripTFn strip_t;
  LaneAccFn lane_acc;
  UkrPfFn ukr_pf;
  // Tall panels (kTallMR rows, products of MR < M <= kSkinnyM rows): ukr2's arithmetic on 8-row A
  // panels or on A's rows in place. Null where the backend keeps MR.
  Ukr2TallFn ukr2_tall;
  const char* name;
};

// ---------------------------------------------------------------------------------------------
// Portable kernels.

template <int M_>
void ukr_port_t(int kc, const float* __restrict a, const float* __restrict b, i64 ldb, float* c, i64 ldc,
                int n, float alpha, float beta) {
  // Two rows at a time keep the accumulators in registers (8 x 4-float vectors with SSE2).
  for (int i0 = 0; i0 < M_; i0 += 2) {
    const int rows = std::min(2, M_ - i0);
    float acc[2][NR] = {};
    const float* bk = b;
    const float* ak = a + i0;
    if (rows == 2) {
      for (int k = 0; k < kc; k++, bk += ldb, ak += MR) {
        const float a0 = ak[0], a1 = ak[1];
        for (int j = 0; j < NR; j++) {
          acc[0][j] += a0 * bk[j];
          acc[1][j] += a1 * bk[j];
        }
      }
    } else {
      for (int k = 0; k < kc; k++, bk += ldb, ak += MR) {
        const float a0 = ak[0];
        for (int j = 0; j < NR; j++) acc[0][j] += a0 * bk[j];
      }
    }
    for (int r = 0; r < rows; r++) {
      float* cr = c + (i64)(i0 + r) * ldc;
      if (beta == 0.0f) {
        for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j];
      } else {
        for (int j = 0; j < n; j++) cr[j] = alpha * acc[r][j] + beta * cr[j];
      }
    }
  }
}

void ukr_port(int kc, const float* a, const float* b, i64 ldb, float* c, i64 ldc, int m, int n, float alpha,
              float beta) {
  switch (m) {
    case 1: return ukr_port_t<1>(kc, a, b, ldb, c, ldc, n, alpha, beta);
    case 2: return ukr_port_t<2>(kc, a, b, ldb, c, ldc, n, alpha, beta);
    case 3: return ukr_port_t<3>(kc, a, b, ldb, c, ldc, n, alpha, beta);
    case 4: return ukr_port_t<4>(kc, a, b, ldb, c, ldc, n, alpha, beta);
    case 5: return ukr_port_t<5>(kc, a, b, ldb, c, ldc, n, alpha, beta);
    default: return ukr_port_t<6>(kc, a, b, ldb, c, ldc, n, alpha, beta);
  }
}

void pack_bt_port(const float* b, i64 ldb, int kc, int nb, float* out) {
  for (int j = 0; j < nb; j++) {
    const float* bj = b + (i64)j * ldb;
    for (int k = 0; k < kc; k++) out[(i64)k * NR + j] = bj[k];
  }
  for (int j = nb; j < NR; j++)
    for (int k = 0; k < kc; k++) out[(i64)k * NR + j] = 0.0f;
}

void pack_a6_port(const float* a, i64 lda, int kc, float* out) {
  for (int r = 0; r < MR; r++) {
    const float* src = a + (i64)r * lda;
    for (int k = 0; k < kc; k++) out[(i64)k * MR + r] = src[k];
  }
}

void dot_port(int K, int m, int nb, const float* a, i64 lda, const float* b, i64 ldb, float* c, i64 ldc,
              float alpha, float beta) {
  for (int i = 0; i < m; i++) {
    const float* ai = a + (i64)i * lda;
    for (int j = 0; j < nb; j++) {
      const float* bj = b + (i64)j * ldb;
      float s8[8] = {};
      int k = 0;
      for (; k + 8 <= K; k += 8)
        for (int l = 0; l < 8; l++) s8[l] += ai[k + l] * bj[k + l];
      float s = ((s8[0] + s8[4]) + (s8[1] + s8[5])) + ((s8[2] + s8[6]) + (s8[3] + s8[7]));
      for (; k < K; k++) s += ai[k] * bj[k];
      float* cij = c + (i64)i * ldc + j;
      *cij = beta == 0.0f ? alpha * s : alpha * s + beta * *cij;
    }
  }
}

void gemvn_port(int kc, int m, int n, const float* a, i64 lda, const float* b, i64 ldb, float* c, i64 ldc,
                bool init) {
  for (int i = 0; i < m; i++) {
    float* ci = c + (i64)i * ldc;
    const float* ai = a + (i64)i * lda;
    if (init) std::memset(ci, 0, sizeof(float) * n);
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
      const float a0 = ai[k], a1 = ai[k + 1], a2 = ai[k + 2], a3 = ai[k + 3];
      const float *b0 = b + (i64)k * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
      for (int j = 0; j < n; j++) ci[j] += a0 * b0[j] + a1 * b1[j] + a2 * b2[j] + a3 * b3[j];
    }
    for (; k < kc; k++) {
      const float a0 = ai[k];
      const float* b0 = b + (i64)k * ldb;
      for (int j = 0; j < n; j++) ci[j] += a0 * b0[j];
    }
  }
}

void strip_t_port(const float* s, int kc, int nb, float* out, i64 ldo) {
  for (int j = 0; j < nb; j++) {
    float* o = out + (i64)j * ldo;
    for (int k = 0; k < kc; k++) o[k] = s[(i64)k * NR + j];
  }
}

void lane_acc_port(int kc, int m, const float* a, i64 astride, const float* s, i64 sstride, int nstr, float* acc) {
  for (int g = 0; g < nstr; g++, a += astride, s += sstride)
    for (int i = 0; i < m; i++) {
      const float* ai = a + (i64)i * NR;
      float* ac = acc + (i64)i * kc * NR;
      for (int k = 0; k < kc; k++)
        for (int j = 0; j < NR; j++) ac[(i64)k * NR + j] += ai[j] * s[(i64)k * NR + j];
    }
}

const Ops kPortable = {ukr_port, nullptr, pack_bt_port, pack_a6_port, dot_port, gemvn_port, strip_t_port, lane_acc_port,
                       nullptr, nullptr, "portable"};

// ---------------------------------------------------------------------------------------------
// AVX2/FMA kernels (compiled for the target, selected only when the CPU supports it).
#if defined(__x86_64__)
#define MEND_AVX2 __attribute__((target("avx2,fma")))

alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

// Lanes [0, n) set, n in [0, 8].
MEND_AVX2 inline __m256i lane_mask(int n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - n));
}

// Stores one micro-tile row: c[0..n) = alpha * (r0|r1) + beta * c.
MEND_AVX2 inline void store_row(float* cr, __m256 r0, __m256 r1, int n, __m256 va, float beta) {
  r0 = _mm256_mul_ps(va, r0);
  r1 = _mm256_mul_ps(va, r1);
  const __m256 vb = _mm256_set1_ps(beta);
  if (n == NR) {
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), r1);
    }
    _mm256_storeu_ps(cr, r0);
    _mm256_storeu_ps(cr + 8, r1);
  } else {
    const __m256i m0 = lane_mask(std::min(n, 8)), m1 = lane_mask(std::max(n - 8, 0));
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr, m0), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(cr + 8, m1), r1);
    }
    _mm256_maskstore_ps(cr, m0, r0);
    _mm256_maskstore_ps(cr + 8, m1, r1);
  }
}

// The micro-tile's rows of C (rows [0, M_), columns [0, n)) requested into L1 as the kernel starts:
// C is read (beta != 0: every k block after the first) and written only after the k loop, and its rows
// lie ldc apart, usually in L3 by then; without this the loads at the end stalled each call (GPT-2's
// block GEMMs at M = 1024: 0.85 -> 1.02 of OpenBLAS's time, paired). Bit-identical: no arithmetic.
template <int M_>
inline void prefetch_c_tile(const float* c, i64 ldc, int n) {
  for (int i = 0; i < M_; i++) {
    const char* row = reinterpret_cast<const char*>(c + i * ldc);
    for (int off = 0; off < n * (int)sizeof(float); off += 64) _mm_prefetch(row + off, _MM_HINT_T0);
    _mm_prefetch(row + n * sizeof(float) - 1, _MM_HINT_T0);
  }
}

// M_ x 16 micro-kernel. The accumulators are named variables (GCC keeps arrays of vectors on the
// stack); rows >= M_ are compiled out.
template <int M_>
MEND_AVX2 void ukr_avx2_t(int kc, const float* __restrict a, const float* __restrict b, i64 ldb, float* c,
                          i64 ldc, int n, float alpha, float beta, const float* pf = nullptr) {
  // pf: where the k loop's prefetches go, a row (one line of a strip) per k: kPrefetchRows ahead in
  // B by default, else from pf on (the next block of B, while this panel reads B from L1).
  const char* pfp = reinterpret_cast<const char*>(pf ? pf : b + kPrefetchRows * ldb);
  const i64 pfs = (i64)ldb * sizeof(float);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  prefetch_c_tile<M_>(c, ldc, NR);
#define MEND_ROW(i)                                       \
  if constexpr (M_ > i) {                                 \
    const __m256 av = _mm256_broadcast_ss(a + i);         \
    c##i##0 = _mm256_fmadd_ps(av, b0, c##i##0);           \
    c##i##1 = _mm256_fmadd_ps(av, b1, c##i##1);           \
  }
#pragma GCC unroll 4
  for (int k = 0; k < kc; k++) {
    _mm_prefetch(pfp, _MM_HINT_T1);
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    MEND_ROW(0) MEND_ROW(1) MEND_ROW(2) MEND_ROW(3) MEND_ROW(4) MEND_ROW(5)
    a += MR;
    b += ldb;
    pfp += pfs;
  }
#undef MEND_ROW
  const __m256 va = _mm256_set1_ps(alpha);
  store_row(c, c00, c01, n, va, beta);
  if constexpr (M_ > 1) store_row(c + ldc, c10, c11, n, va, beta);
  if constexpr (M_ > 2) store_row(c + 2 * ldc, c20, c21, n, va, beta);
  if constexpr (M_ > 3) store_row(c + 3 * ldc, c30, c31, n, va, beta);
  if constexpr (M_ > 4) store_row(c + 4 * ldc, c40, c41, n, va, beta);
  if constexpr (M_ > 5) store_row(c + 5 * ldc, c50, c51, n, va, beta);
}

MEND_AVX2 void ukr_pf_avx2(int kc, const float* a, const float* b, i64 ldb, float* c, i64 ldc, int m, int n,
                           float alpha, float beta, const float* pf) {
  switch (m) {
    case 1: return ukr_avx2_t<1>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
    case 2: return ukr_avx2_t<2>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
    case 3: return ukr_avx2_t<3>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
    case 4: return ukr_avx2_t<4>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
    case 5: return ukr_avx2_t<5>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
    default: return ukr_avx2_t<6>(kc, a, b, ldb, c, ldc, n, alpha, beta, pf);
  }
}

MEND_AVX2 void ukr_avx2(int kc, const float* a, const float* b, i64 ldb, float* c, i64 ldc, int m, int n,
                        float alpha, float beta) {
  ukr_pf_avx2(kc, a, b, ldb, c, ldc, m, n, alpha, beta, nullptr);
}

// In-register 8x8 transpose of r[0..7].
MEND_AVX2 inline void transpose8(__m256 r[8]) {
  __m256 t[8], s[8];
  for (int i = 0; i < 4; i++) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int h = 0; h < 2; h++) {
    __m256 *tt = t + 4 * h, *ss = s + 4 * h;
    ss[0] = _mm256_shuffle_ps(tt[0], tt[2], 0x44);
    ss[1] = _mm256_shuffle_ps(tt[0], tt[2], 0xEE);
    ss[2] = _mm256_shuffle_ps(tt[1], tt[3], 0x44);
    ss[3] = _mm256_shuffle_ps(tt[1], tt[3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    r[i] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(s[i], s[i + 4], 0x31);
  }
}

MEND_AVX2 void pack_bt_avx2(const float* b, i64 ldb, int kc, int nb, float* out) {
  int k = 0;
  for (; k + 8 <= kc; k += 8) {
    for (int h = 0; h < 2; h++) {
      __m256 r[8];
      for (int j = 0; j < 8; j++) {
        const int jj = h * 8 + j;
        r[j] = jj < nb ? _mm256_loadu_ps(b + (i64)jj * ldb + k) : _mm256_setzero_ps();
      }
      transpose8(r);
      for (int t = 0; t < 8; t++) _mm256_store_ps(out + (i64)(k + t) * NR + h * 8, r[t]);
    }
  }
  for (; k < kc; k++) {
    float* o = out + (i64)k * NR;
    for (int j = 0; j < nb; j++) o[j] = b[(i64)j * ldb + k];
    for (int j = nb; j < NR; j++) o[j] = 0.0f;
  }
}

// Eight k at a time: the six rows' 8-float pieces (and two zero rows) transposed in registers, then
// each k's six values stored at out + k*MR; an 8-float store leaves two values for the next k to
// overwrite, and the panel's last k is a masked store, so nothing past the panel is written.
MEND_AVX2 void pack_a6_avx2(const float* a, i64 lda, int kc, float* out) {
  static_assert(MR == 6, "pack_a6_avx2 packs six-row panels");
  const __m256i m6 = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
  int k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 r[8];
    for (int i = 0; i < MR; i++) r[i] = _mm256_loadu_ps(a + (i64)i * lda + k);
    r[6] = r[7] = _mm256_setzero_ps();
    transpose8(r);
    for (int t = 0; t < 8; t++) {
      float* o = out + (i64)(k + t) * MR;
      if (k + t + 1 < kc) _mm256_storeu_ps(o, r[t]);
      else _mm256_maskstore_ps(o, m6, r[t]);
    }
  }
  for (; k < kc; k++)
    for (int i = 0; i < MR; i++) out[(i64)k * MR + i] = a[(i64)i * lda + k];
}

MEND_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <int MA, int NB>
MEND_AVX2 void dot_avx2_t(int K, const float* __restrict a, i64 lda, const float* __restrict b, i64 ldb,
                          float* c, i64 ldc, float alpha, float beta) {
  __m256 acc[MA][NB];
  for (int i = 0; i < MA; i++)
    for (int j = 0; j < NB; j++) acc[i][j] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 bv[NB];
    for (int j = 0; j < NB; j++) bv[j] = _mm256_loadu_ps(b + (i64)j * ldb + k);
    for (int i = 0; i < MA; i++) {
      const __m256 av = _mm256_loadu_ps(a + (i64)i * lda + k);
      for (int j = 0; j < NB; j++) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  if (k < K) {
    const __m256i mk = lane_mask(K - k);
    __m256 bv[NB];
    for (int j = 0; j < NB; j++) bv[j] = _mm256_maskload_ps(b + (i64)j * ldb + k, mk);
    for (int i = 0; i < MA; i++) {
      const __m256 av = _mm256_maskload_ps(a + (i64)i * lda + k, mk);
      for (int j = 0; j < NB; j++) acc[i][j] = _mm256_fmadd_ps(av, bv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MA; i++)
    for (int j = 0; j < NB; j++) {
      float* cij = c + (i64)i * ldc + j;
      const float s = hsum(acc[i][j]);
      *cij = beta == 0.0f ? alpha * s : alpha * s + beta * *cij;
    }
}

MEND_AVX2 void dot_avx2(int K, int m, int nb, const float* a, i64 lda, const float* b, i64 ldb, float* c,
                        i64 ldc, float alpha, float beta) {
  if (nb == 1) {
    switch (m) {
      case 1: return dot_avx2_t<1, 1>(K, a, lda, b, ldb, c, ldc, alpha, beta);
      case 2: return dot_avx2_t<2, 1>(K, a, lda, b, ldb, c, ldc, alpha, beta);
      case 3: return dot_avx2_t<3, 1>(K, a, lda, b, ldb, c, ldc, alpha, beta);
      default: return dot_avx2_t<4, 1>(K, a, lda, b, ldb, c, ldc, alpha, beta);
    }
  }
  switch (m) {
    case 1: return dot_avx2_t<1, dot_nb(1)>(K, a, lda, b, ldb, c, ldc, alpha, beta);
    case 2: return dot_avx2_t<2, dot_nb(2)>(K, a, lda, b, ldb, c, ldc, alpha, beta);
    case 3: return dot_avx2_t<3, dot_nb(3)>(K, a, lda, b, ldb, c, ldc, alpha, beta);
    default: return dot_avx2_t<4, dot_nb(4)>(K, a, lda, b, ldb, c, ldc, alpha, beta);
  }
}

// Rows of B are streamed 4 at a time (4 sequential DRAM streams); c stays in L1 (n <= kGemvW).
template <int MA>
MEND_AVX2 void gemvn_avx2_t(int kc, int n, const float* __restrict a, i64 lda, const float* __restrict b, i64 ldb,
                            float* __restrict c, i64 ldc, bool init) {
  if (init)
    for (int i = 0; i < MA; i++) std::memset(c + (i64)i * ldc, 0, sizeof(float) * n);
  const int n8 = n & ~7;
  int k = 0;
  for (; k + 4 <= kc; k += 4) {
    const float *b0 = b + (i64)k * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
    __m256 av[MA][4];
    for (int i = 0; i < MA; i++)
      for (int t = 0; t < 4; t++) av[i][t] = _mm256_broadcast_ss(a + (i64)i * lda + k + t);
    for (int j = 0; j < n8; j += 8) {
      const __m256 v0 = _mm256_loadu_ps(b0 + j), v1 = _mm256_loadu_ps(b1 + j);
      const __m256 v2 = _mm256_loadu_ps(b2 + j), v3 = _mm256_loadu_ps(b3 + j);
      for (int i = 0; i < MA; i++) {
        float* cj = c + (i64)i * ldc + j;
        __m256 s0 = _mm256_fmadd_ps(av[i][0], v0, _mm256_loadu_ps(cj));
        __m256 s1 = _mm256_mul_ps(av[i][1], v1);
        s0 = _mm256_fmadd_ps(av[i][2], v2, s0);
        s1 = _mm256_fmadd_ps(av[i][3], v3, s1);
        _mm256_storeu_ps(cj, _mm256_add_ps(s0, s1));
      }
    }
    for (int i = 0; i < MA; i++) {
      const float* ai = a + (i64)i * lda + k;
      float* ci = c + (i64)i * ldc;
      for (int j = n8; j < n; j++) ci[j] += ai[0] * b0[j] + ai[1] * b1[j] + ai[2] * b2[j] + ai[3] * b3[j];
    }
  }
  for (; k < kc; k++) {
    const float* b0 = b + (i64)k * ldb;
    for (int i = 0; i < MA; i++) {
      const float ai = a[(i64)i * lda + k];
      float* ci = c + (i64)i * ldc;
      for (int j = 0; j < n; j++) ci[j] += ai * b0[j];
    }
  }
}

MEND_AVX2 void gemvn_avx2(int kc, int m, int n, const float* a, i64 lda, const float* b, i64 ldb, float* c,
                          i64 ldc, bool init) {
  if (m == 1) return gemvn_avx2_t<1>(kc, n, a, lda, b, ldb, c, ldc, init);
  return gemvn_avx2_t<2>(kc, n, a, lda, b, ldb, c, ldc, init);
}

// Eight rows of eight lanes at a time, transposed in registers (transpose8).
MEND_AVX2 void strip_t_avx2(const float* s, int kc, int nb, float* out, i64 ldo) {
  for (int h = 0; h * 8 < nb; h++) {
    const int j1 = std::min(nb, h * 8 + 8);
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int t = 0; t < 8; t++) r[t] = _mm256_loadu_ps(s + (i64)(k + t) * NR + h * 8);
      transpose8(r);
      for (int j = h * 8; j < j1; j++) _mm256_storeu_ps(out + (i64)j * ldo + k, r[j - h * 8]);
    }
    for (; k < kc; k++)
      for (int j = h * 8; j < j1; j++) out[(i64)j * ldo + k] = s[(i64)k * NR + j];
  }
}

template <int MA>
MEND_AVX2 void lane_acc_avx2_t(int kc, const float* a, i64 lda, const float* __restrict s, float* __restrict acc) {
  __m256 a0[MA], a1[MA];
  for (int i = 0; i < MA; i++) {
    a0[i] = _mm256_loadu_ps(a + (i64)i * lda);
    a1[i] = _mm256_loadu_ps(a + (i64)i * lda + 8);
  }
  for (int k = 0; k < kc; k++) {
    const __m256 s0 = _mm256_loadu_ps(s + (i64)k * NR), s1 = _mm256_loadu_ps(s + (i64)k * NR + 8);
    for (int i = 0; i < MA; i++) {
      float* ac = acc + ((i64)i * kc + k) * NR;
      _mm256_store_ps(ac, _mm256_fmadd_ps(a0[i], s0, _mm256_load_ps(ac)));
      _mm256_store_ps(ac + 8, _mm256_fmadd_ps(a1[i], s1, _mm256_load_ps(ac + 8)));
    }
  }
}

MEND_AVX2 void lane_acc_avx2(int kc, int m, const float* a, i64 astride, const float* s, i64 sstride, int nstr,
                             float* acc) {
  for (int g = 0; g < nstr; g++, a += astride, s += sstride) switch (m) {
      case 1: lane_acc_avx2_t<1>(kc, a, NR, s, acc); break;
      case 2: lane_acc_avx2_t<2>(kc, a, NR, s, acc); break;
      case 3: lane_acc_avx2_t<3>(kc, a, NR, s, acc); break;
      default: lane_acc_avx2_t<4>(kc, a, NR, s, acc); break;
    }
}

const Ops kAvx2 = {ukr_avx2, nullptr, pack_bt_avx2, pack_a6_avx2, dot_avx2, gemvn_avx2, strip_t_avx2, lane_acc_avx2,
                   ukr_pf_avx2, nullptr, "avx2-fma"};

// ---------------------------------------------------------------------------------------------
// AVX-512F micro-kernel: M_ x 32 from two 16-column strips, one zmm per row and strip: 12
// accumulators (enough independent FMA chains for two 512-bit FMA ports), per k 2 B loads and M_
// broadcasts for 2*M_ FMAs. One zmm lane does what one ymm lane of ukr_avx2 does (multiply by
// alpha, then fma with beta * C), so the results are bit-identical to the AVX2 kernel. Packing,
// the dot and GEMV kernels are the AVX2 ones (bandwidth bound).
#define MEND_AVX512 __attribute__((target("avx512f,avx2,fma")))

MEND_AVX512 inline void store_row512(float* cr, __m512 r, __mmask16 m, __m512 va, float beta) {
  r = _mm512_mul_ps(va, r);
  if (beta != 0.0f) r = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, cr), r);
  _mm512_mask_storeu_ps(cr, m, r);
}

// P_: the A panel's height (its row stride per k): MR, or kTallMR for the skinny packed driver's
// 8-row panels (16 accumulators; per k 2 B loads and 8 broadcasts for 16 FMAs, against 12 FMAs per
// 2 + 6 at six rows, and a 16- or 32-row product needs no partly empty panel). Per element the same
// operations in the same order at either height, so the results are bit-identical.
// pf, pf2: where the k loop's two prefetches (one line each per k, row stride ldb) point; null: B's
// own rows kPrefetchRows ahead.
// RM_: A read in place, row-major (element (i, k) at a[i*lda + k]) instead of from a packed panel: the
// same values, so the same results; the skinny packed driver then needs no copy of A.
template <int M_, int P_, bool RM_ = false>
MEND_AVX512 void ukr2_avx512_t(int kc, const float* __restrict a, const float* __restrict b, const float* __restrict b2,
                               i64 ldb, float* c, i64 ldc, int n, float alpha, float beta, const float* pf = nullptr,
                               const float* pf2 = nullptr, i64 lda = 0) {
  static_assert(M_ <= P_ && P_ <= 8, "at most eight rows");
  if (!pf) {
    pf = b + kPrefetchRows * ldb;
    pf2 = b2 + kPrefetchRows * ldb;
  }
  __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  __m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00;
  prefetch_c_tile<M_>(c, ldc, 2 * NR);
#define MEND_ROW(i)                                 \
  if constexpr (M_ > i) {                           \
    const __m512 av = _mm512_set1_ps(RM_ ? a[i * lda] : a[i]); \
    c##i##0 = _mm512_fmadd_ps(av, x0, c##i##0);     \
    c##i##1 = _mm512_fmadd_ps(av, x1, c##i##1);     \
  }
#pragma GCC unroll 4
  for (int k = 0; k < kc; k++) {
    // B streamed from memory (a packed weight read in place) wants its lines in flight early: one
    // row (one line) of each strip kPrefetchRows ahead (a hit where B is an L1/L2-resident panel).
    _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(pf2), _MM_HINT_T1);
    const __m512 x0 = _mm512_loadu_ps(b), x1 = _mm512_loadu_ps(b2);
    MEND_ROW(0) MEND_ROW(1) MEND_ROW(2) MEND_ROW(3) MEND_ROW(4) MEND_ROW(5) MEND_ROW(6) MEND_ROW(7)
    a += RM_ ? 1 : P_;
    b += ldb;
    b2 += ldb;
    pf += ldb;
    pf2 += ldb;
  }
#undef MEND_ROW
  const __m512 va = _mm512_set1_ps(alpha);
  const __mmask16 m0 = n >= NR ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
  const __mmask16 m1 = n >= 2 * NR ? (__mmask16)0xFFFF : n <= NR ? (__mmask16)0 : (__mmask16)((1u << (n - NR)) - 1);
  store_row512(c, c00, m0, va, beta);
  store_row512(c + NR, c01, m1, va, beta);
#define MEND_STORE(i)                                                \
  if constexpr (M_ > i) {                                            \
    store_row512(c + i * ldc, c##i##0, m0, va, beta);                \
    store_row512(c + i * ldc + NR, c##i##1, m1, va, beta);           \
  }
  MEND_STORE(1) MEND_STORE(2) MEND_STORE(3) MEND_STORE(4) MEND_STORE(5) MEND_STORE(6) MEND_STORE(7)
#undef MEND_STORE
}

MEND_AVX512 void ukr2_avx512(int kc, const float* a, const float* b, const float* b2, i64 ldb, float* c, i64 ldc,
                             int m, int n, float alpha, float beta) {
  switch (m) {
    case 1: return ukr2_avx512_t<1, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
    case 2: return ukr2_avx512_t<2, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
    case 3: return ukr2_avx512_t<3, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
    case 4: return ukr2_avx512_t<4, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
    case 5: return ukr2_avx512_t<5, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
    default: return ukr2_avx512_t<6, MR>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta);
  }
}

template <bool RM_>
MEND_AVX512 void ukr2_tall_avx512_t(int kc, const float* a, i64 lda, const float* b, const float* b2, i64 ldb, float* c,
                                    i64 ldc, int m, int n, float alpha, float beta, const float* pf, const float* pf2) {
#define MEND_CASE(i) \
  case i: return ukr2_avx512_t<i, kTallMR, RM_>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta, pf, pf2, lda);
  switch (m) {
    MEND_CASE(1) MEND_CASE(2) MEND_CASE(3) MEND_CASE(4) MEND_CASE(5) MEND_CASE(6) MEND_CASE(7)
    default: return ukr2_avx512_t<8, kTallMR, RM_>(kc, a, b, b2, ldb, c, ldc, n, alpha, beta, pf, pf2, lda);
  }
#undef MEND_CASE
}

MEND_AVX512 void ukr2_tall_avx512(int kc, const float* a, i64 lda, const float* b, const float* b2, i64 ldb, float* c,
                                  i64 ldc, int m, int n, float alpha, float beta, const float* pf, const float* pf2) {
  if (lda) ukr2_tall_avx512_t<true>(kc, a, lda, b, b2, ldb, c, ldc, m, n, alpha, beta, pf, pf2);
  else ukr2_tall_avx512_t<false>(kc, a, 0, b, b2, ldb, c, ldc, m, n, alpha, beta, pf, pf2);
}

// lane_acc with the sums of a tile of rows in registers: for each tile of KT_ strip rows (KT_ * M_ = 24
// accumulators), the tile's sums are loaded once, every strip of the group adds into them in order,
// and they are stored once, instead of a load and a store of the sums per strip and row (the AVX2
// kernel, bound by those). Per (i, k, lane) the same FMAs in the same order: bit-identical to it.
template <int M_>
MEND_AVX512 void lane_acc_avx512_t(int kc, const float* a, i64 astride, const float* __restrict s, i64 sstride,
                                   int nstr, float* __restrict acc) {
  constexpr int KT_ = 24 / M_;
  int k = 0;
  for (; k + KT_ <= kc; k += KT_) {
    __m512 t[M_][KT_];
#pragma GCC unroll 24
    for (int i = 0; i < M_; i++)
#pragma GCC unroll 24
      for (int r = 0; r < KT_; r++) t[i][r] = _mm512_load_ps(acc + ((i64)i * kc + k + r) * NR);
    const float* ag = a;
    const float* sg = s + (i64)k * NR;
    for (int g = 0; g < nstr; g++, ag += astride, sg += sstride) {
      __m512 av[M_];
#pragma GCC unroll 4
      for (int i = 0; i < M_; i++) av[i] = _mm512_loadu_ps(ag + (i64)i * NR);
#pragma GCC unroll 24
      for (int r = 0; r < KT_; r++) {
        // Each of the group's streams fetched kLanePrefetchRows rows ahead: 4 rows, 3.9 -> 3.0 ms for
        // GPT-2's wteᵀ (38 -> 51 GB/s; 12 to 48 rows ahead within 5% of each other).
        _mm_prefetch(reinterpret_cast<const char*>(sg + (i64)(r + kLanePrefetchRows) * NR), _MM_HINT_T0);
        const __m512 x = _mm512_loadu_ps(sg + (i64)r * NR);
#pragma GCC unroll 4
        for (int i = 0; i < M_; i++) t[i][r] = _mm512_fmadd_ps(av[i], x, t[i][r]);
      }
    }
#pragma GCC unroll 24
    for (int i = 0; i < M_; i++)
#pragma GCC unroll 24
      for (int r = 0; r < KT_; r++) _mm512_store_ps(acc + ((i64)i * kc + k + r) * NR, t[i][r]);
  }
  for (; k < kc; k++) {  // the last rows, one at a time
    __m512 t[M_];
    for (int i = 0; i < M_; i++) t[i] = _mm512_load_ps(acc + ((i64)i * kc + k) * NR);
    const float* ag = a;
    const float* sg = s + (i64)k * NR;
    for (int g = 0; g < nstr; g++, ag += astride, sg += sstride) {
      const __m512 x = _mm512_loadu_ps(sg);
      for (int i = 0; i < M_; i++) t[i] = _mm512_fmadd_ps(_mm512_loadu_ps(ag + (i64)i * NR), x, t[i]);
    }
    for (int i = 0; i < M_; i++) _mm512_store_ps(acc + ((i64)i * kc + k) * NR, t[i]);
  }
}

MEND_AVX512 void lane_acc_avx512(int kc, int m, const float* a, i64 astride, const float* s, i64 sstride, int nstr,
                                 float* acc) {
  switch (m) {
    case 1: return lane_acc_avx512_t<1>(kc, a, astride, s, sstride, nstr, acc);
    case 2: return lane_acc_avx512_t<2>(kc, a, astride, s, sstride, nstr, acc);
    case 3: return lane_acc_avx512_t<3>(kc, a, astride, s, sstride, nstr, acc);
    default: return lane_acc_avx512_t<4>(kc, a, astride, s, sstride, nstr, acc);
  }
}

const Ops kAvx512 = {ukr_avx2, ukr2_avx512, pack_bt_avx2, pack_a6_avx2, dot_avx2, gemvn_avx2, strip_t_avx2, lane_acc_avx512,
                     nullptr, ukr2_tall_avx512, "avx512f"};


bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
bool cpu_has_avx512f() {
  __builtin_cpu_init();
  return cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
}
#endif  // __x86_64__

std::atomic<bool> g_force_portable{false};
std::atomic<bool> g_force_avx2{false};

const Ops& native_ops() {
#if defined(__x86_64__)
  static const bool has512 = cpu_has_avx512f(), has = cpu_has_avx2_fma();
  if (has512 && !g_force_avx2.load(std::memory_order_relaxed)) return kAvx512;
  if (has) return kAvx2;
#endif
  return kPortable;
}

const Ops& ops() { return g_force_portable.load(std::memory_order_relaxed) ? kPortable : native_ops(); }

// Runs the micro-kernels over strips [0, nstr) of one kc block: strip q's B panel at b + q*pstride
// (row stride ldb), C columns from c + q*NR; every strip is used by the npanels row panels of A
// (panel ip at a + ip*astride, rows min(MR, m - ip*MR)). Pairs of strips go to ukr2 where the
// backend has it (per element the same result as ukr).
// A GEMM epilogue (kernels.h GemmEpilogue) moved to one C tile: bias at the tile's first column,
// gelu at its first element.
struct EpTile {
  const float* bias;
  float* gelu;
  i64 ldg;
};

// The epilogue on rows [0, m) x columns [col0, col0 + nb) of c, while they are in L1.
inline void epilogue_block(const EpTile& et, float* c, i64 ldc, int m, int col0, int nb) {
  bias_gelu_rows(c + col0, ldc, et.bias ? et.bias + col0 : nullptr, et.gelu ? et.gelu + col0 : nullptr, et.ldg, m, nb);
}

inline void run_strips(const Ops& o, int kc, const float* a, i64 astride, int npanels, int m, const float* b,
                       i64 pstride, i64 ldb, int nstr, int ncols, float* c, i64 ldc, float alpha, float beta,
                       const EpTile* et = nullptr) {
  int q = 0;
  if (o.ukr2)
    for (; q + 1 < nstr; q += 2) {
      const int nb = std::min(2 * NR, ncols - q * NR);
      for (int ip = 0; ip < npanels; ip++)
        o.ukr2(kc, a + (i64)ip * astride, b + q * pstride, b + (q + 1) * pstride, ldb, c + (i64)ip * MR * ldc + q * NR,
               ldc, std::min(MR, m - ip * MR), nb, alpha, beta);
      if (et) epilogue_block(*et, c, ldc, m, q * NR, nb);
    }
  for (; q < nstr; q++) {
    const int nb = std::min(NR, ncols - q * NR);
    for (int ip = 0; ip < npanels; ip++)
      o.ukr(kc, a + (i64)ip * astride, b + q * pstride, ldb, c + (i64)ip * MR * ldc + q * NR, ldc,
            std::min(MR, m - ip * MR), nb, alpha, beta);
    if (et) epilogue_block(*et, c, ldc, m, q * NR, nb);
  }
}

// run_strips with tall panels (o.ukr2_tall): panel ip of A at a + ip*astride, read in place with row
// stride lda (lda > 0) or packed (lda == 0); strips in pairs (an odd last strip twice, its second
// half's columns masked off). pf (or null): the prefetch targets of panels 1 and 2, two each
// (pf[2*(ip-1)], pf[2*(ip-1)+1]; null entries: the kernel's own), for every pair.
inline void run_strips_tall(const Ops& o, int kc, const float* a, i64 lda, i64 astride, int m, const float* b,
                            i64 pstride, i64 ldb, int nstr, int ncols, float* c, i64 ldc, float alpha, float beta,
                            const EpTile* et, const float* const* pf = nullptr) {
  const int npanels = (m + kTallMR - 1) / kTallMR;
  for (int q = 0; q < nstr; q += 2) {
    const int nb = std::min(q + 1 < nstr ? 2 * NR : NR, ncols - q * NR);
    const float* b0 = b + q * pstride;
    const float* b1 = q + 1 < nstr ? b0 + pstride : b0;
    for (int ip = 0; ip < npanels; ip++) {
      const bool tgt = pf && (ip == 1 || ip == 2);
      o.ukr2_tall(kc, a + (i64)ip * astride, lda, b0, b1, ldb, c + (i64)ip * kTallMR * ldc + q * NR, ldc,
                  std::min(kTallMR, m - ip * kTallMR), nb, alpha, beta, tgt ? pf[2 * (ip - 1)] : nullptr,
                  tgt ? pf[2 * (ip - 1) + 1] : nullptr);
    }
    if (et) epilogue_block(*et, c, ldc, m, q * NR, nb);
  }
}

// The A panel height for at most kSkinnyM rows: kTallMR wherever the backend has tall panels and M > MR.
// Measured (GPT-2 small's forward GEMM sequence on packed weights, 2 threads, alternating builds):
// 8-row panels were faster at M = 10, 12, 16, 32 and 34 (by 7-14%) and even at 9 and 20, where both
// need the same number of panels (the kernel does 16 FMAs per 10 loads against 12 per 8).
inline int skinny_mr(const Ops& o, int M) { return o.ukr2_tall && M > MR ? kTallMR : MR; }

// ---------------------------------------------------------------------------------------------
// Packing of op(A) and op(B) (shared by both backends; transposed B uses ops().pack_bt).

// op(A)[i0 .. i0+mc, p0 .. p0+kc] -> ceil(mc/mr) panels, panel ip at out + ip*pstride, each kc x mr
// (out[k*mr + r]), rows past mc zero-filled. mr: MR, or kTallMR (tall panels of a transposed A).
void pack_a(const Ops& ops, bool transA, const float* A, i64 lda, int i0, int mc, int p0, int kc, float* out, i64 pstride,
            int mr = MR) {
  for (int ip = 0; ip * mr < mc; ip++) {
    float* o = out + (i64)ip * pstride;
    const int rows = std::min(mr, mc - ip * mr);
    const int r0 = i0 + ip * mr;
    if (transA) {  // A stored (K, M): row k of the panel is contiguous
      for (int k = 0; k < kc; k++) {
        const float* src = A + (i64)(p0 + k) * lda + r0;
        float* ok = o + (i64)k * mr;
        int r = 0;
        for (; r < rows; r++) ok[r] = src[r];
        for (; r < mr; r++) ok[r] = 0.0f;
      }
    } else if (rows == MR && mr == MR) {  // A stored (M, K), a full panel
      ops.pack_a6(A + (i64)r0 * lda + p0, lda, kc, o);
    } else {  // A stored (M, K): read each row contiguously, write with stride mr
      for (int r = 0; r < rows; r++) {
        const float* src = A + (i64)(r0 + r) * lda + p0;
        for (int k = 0; k < kc; k++) o[(i64)k * mr + r] = src[k];
      }
      for (int r = rows; r < mr; r++)
        for (int k = 0; k < kc; k++) o[(i64)k * mr + r] = 0.0f;
    }
  }
}

// op(B)[p0 .. p0+kc, j0 .. j0+nbw] -> ceil(nbw/NR) kc x NR panels, panel q at out + q*pstride.
// A non-transposed B is read row by row (nbw contiguous floats per row, the DRAM-friendly order);
// pstride = kc*NR + 16 keeps the panels' rows out of one L1 set while they are written.
void pack_b_block(const Ops& o, bool transB, const float* B, i64 ldb, int p0, int kc, int j0, int nbw,
                  float* out, i64 pstride) {
  if (transB) {
    for (int jr = 0, q = 0; jr < nbw; jr += NR, q++)
      o.pack_bt(B + (i64)(j0 + jr) * ldb + p0, ldb, kc, std::min(NR, nbw - jr), out + q * pstride);
    return;
  }
  const int full = nbw / NR, rem = nbw - full * NR;
  for (int k = 0; k < kc; k++) {
    const float* src = B + (i64)(p0 + k) * ldb + j0;
    float* dst = out + (i64)k * NR;
    for (int q = 0; q < full; q++) std::memcpy(dst + q * pstride, src + q * NR, NR * sizeof(float));
    if (rem) {
      float* d = dst + full * pstride;
      int j = 0;
      for (; j < rem; j++) d[j] = src[full * NR + j];
      for (; j < NR; j++) d[j] = 0.0f;
    }
  }
}

// A rows x cols block of floats in memory (row stride ld), for software prefetch.
struct Region {
  const float* p;
  i64 ld;
  int rows, cols;
};

// Prefetches (into L2) slice q of nq of the region's rows.
void prefetch_rows(const Region& r, int q, int nq) {
  const int r0 = (int)((i64)r.rows * q / nq), r1 = (int)((i64)r.rows * (q + 1) / nq);
  for (int i = r0; i < r1; i++) {
    const char* row = reinterpret_cast<const char*>(r.p + (i64)i * r.ld);
    const i64 bytes = (i64)r.cols * sizeof(float);
    for (i64 off = 0; off < bytes; off += 64) __builtin_prefetch(row + off, 0, 2);
    __builtin_prefetch(row + bytes - 1, 0, 2);
  }
}

// C (M,N) = beta * C; beta == 0 writes zeros without reading C.
void scale_c(int M, int N, float beta, float* C, i64 ldc) {
  if (beta == 1.0f) return;
  for (int i = 0; i < M; i++) {
    float* c = C + (i64)i * ldc;
    if (beta == 0.0f)
      std::memset(c, 0, sizeof(float) * N);
    else
      for (int j = 0; j < N; j++) c[j] *= beta;
  }
}

// Unblocked fallback, used only if a pack buffer cannot be allocated: C rows i0..i0+M, columns
// j0..j0+N, with op(B)[k][j] = b(k, j) (the row-major or the packed layout).
template <class BAt>
void gemm_naive_at(bool transA, int i0, int M, int j0, int N, int K, float alpha, const float* A, i64 lda,
                   const BAt& b, float beta, float* C, i64 ldc) {
  for (int i = i0; i < i0 + M; i++)
    for (int j = j0; j < j0 + N; j++) {
      float s = 0.0f;
      for (int k = 0; k < K; k++) s += (transA ? A[(i64)k * lda + i] : A[(i64)i * lda + k]) * b(k, j);
      float* c = C + (i64)i * ldc + j;
      *c = beta == 0.0f ? alpha * s : alpha * s + beta * *c;
    }
}

void gemm_naive(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, i64 lda,
                const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  gemm_naive_at(transA, 0, M, 0, N, K, alpha, A, lda,
                [&](int k, int j) { return transB ? B[(i64)j * ldb + k] : B[(i64)k * ldb + j]; }, beta, C, ldc);
}

// Splits [0, K) into equal blocks of at most kmax (multiples of 8 where possible).
int balanced_kc(int K, int kmax) {
  const int nb = (K + kmax - 1) / kmax;
  int kc = (K + nb - 1) / nb;
  kc = (kc + 7) & ~7;
  return std::min(kc, kmax);
}

// Threads worth using for a problem of this size (tiny products run on the caller).
int threads_for(double flops) {
  const int nt = num_threads();
  if (nt <= 1 || flops < 4.0e5) return 1;
  return nt;
}

// ---------------------------------------------------------------------------------------------
// Dot driver: transB, M <= kDotM. C (M,N): row j of B (N,K) is read once for all M rows of A.
void gemm_dot(const Ops& o, bool transA, int M, int N, int K, float alpha, const float* A, i64 lda,
              const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  const float* a = A;
  i64 la = lda;
  if (transA) {  // gather the M columns of A (K, M) into rows
    float* p = tl_a.get((size_t)M * K);
    if (!p) return gemm_naive(transA, true, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (int k = 0; k < K; k++)
      for (int i = 0; i < M; i++) p[(i64)i * K + k] = A[(i64)k * lda + i];
    a = p;
    la = K;
  }
  const int nb = dot_nb(M);
  const int nt = threads_for(2.0 * M * N * K);
  auto body = [&](int64_t j0, int64_t j1) {
    int64_t j = j0;
    for (; j + nb <= j1; j += nb) o.dot(K, M, nb, a, la, B + j * ldb, ldb, C + j, ldc, alpha, beta);
    for (; j < j1; j++) o.dot(K, M, 1, a, la, B + j * ldb, ldb, C + j, ldc, alpha, beta);
  };
  if (nt == 1)
    body(0, N);
  else
    parallel_for(N, body, 8);
}

// ---------------------------------------------------------------------------------------------
// Skinny driver, transposed B (B stored N x K), kDotM < M <= kSkinnyM. Threads split N; each thread
// walks blocks of kc x (kSkinnyStrips x NR) of op(B), transposing each block from memory once into an
// L2-resident panel buffer (reads: 256 rows of B, kc contiguous floats each) and prefetching the next
// block into L2 meanwhile; every 16-column strip is then reused from L1 by all ceil(M/6) row panels.
void gemm_skinny_t(const Ops& o, bool transA, int M, int N, int K, float alpha, const float* A, i64 lda,
                   const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  const int npanels = (M + MR - 1) / MR;
  const int nstrips = (N + NR - 1) / NR;
  const int nt = threads_for(2.0 * M * N * K);
  constexpr int kStrips = kSkinnyStrips;
  for (int ps = 0; ps < K; ps += kSkinnyKS) {
    const int ks = std::min(kSkinnyKS, K - ps);
    const float beta_s = ps == 0 ? beta : 1.0f;
    // A[:, ps .. ps+ks] packed once, shared by all threads: panel ip at apack + ip*ks*MR.
    float* apack = tl_a.get((size_t)npanels * ks * MR);
    if (!apack) return gemm_naive(transA, true, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    pack_a(o, transA, A, lda, 0, M, ps, ks, apack, (i64)ks * MR);
    const int kc_max = balanced_kc(ks, KC);
    const i64 pstride = (i64)kc_max * NR + 16;
    auto body = [&](int64_t s0, int64_t s1) {
      float* bbuf = tl_b.get((size_t)pstride * kStrips);
      if (!bbuf) {  // out of memory: do these columns unblocked
        const int j0 = (int)s0 * NR, n = std::min(N, (int)s1 * NR) - j0;
        gemm_naive(transA, true, M, n, ks, alpha, transA ? A + (i64)ps * lda : A + ps, lda,
                   B + (i64)j0 * ldb + ps, ldb, beta_s, C + j0, ldc);
        return;
      }
      // Block (sb, p): op(B) rows ps+p .. +kc, columns sb*NR .. +nbw.
      auto block = [&](int64_t sb, int p, int& j0, int& nbw, int& kc) {
        j0 = (int)sb * NR;
        nbw = (int)(std::min<int64_t>(N, std::min(s1, sb + kStrips) * NR) - j0);
        kc = std::min(kc_max, ks - p);
      };
      for (int64_t sb = s0; sb < s1; sb += kStrips) {
        for (int p = 0; p < ks; p += kc_max) {
          int j0, nbw, kc;
          block(sb, p, j0, nbw, kc);
          const float beta_e = p == 0 ? beta_s : 1.0f;
          pack_b_block(o, true, B, ldb, ps + p, kc, j0, nbw, bbuf, pstride);
          // Prefetch the next block (as stored: nbw rows of B, kc floats each), a slice per strip.
          Region next{nullptr, 0, 0, 0};
          int nj0, nnbw, nkc;
          if (p + kc_max < ks) {
            block(sb, p + kc_max, nj0, nnbw, nkc);
            next = {B + (i64)nj0 * ldb + ps + p + kc_max, ldb, nnbw, nkc};
          } else if (sb + kStrips < s1) {
            block(sb + kStrips, 0, nj0, nnbw, nkc);
            next = {B + (i64)nj0 * ldb + ps, ldb, nnbw, nkc};
          }
          const int nstr = (nbw + NR - 1) / NR;
          // Prefetch a slice of the next block per pair of strips, then the strips (in pairs).
          for (int q = 0; q < nstr; q += 2) {
            if (next.p) {
              prefetch_rows(next, q, nstr);
              if (q + 1 < nstr) prefetch_rows(next, q + 1, nstr);
            }
            const int nq = std::min(2, nstr - q);
            run_strips(o, kc, apack + (i64)p * MR, (i64)ks * MR, npanels, M, bbuf + q * pstride, pstride, NR, nq,
                       nbw - q * NR, C + j0 + q * NR, ldc, alpha, beta_e);
          }
        }
      }
    };
    if (nt == 1)
      body(0, nstrips);
    else
      parallel_for(nstrips, body, 1);
  }
}

// B stored (K, N) row-major, as gemm has it.
struct RowMajorB {
  static constexpr bool kGemv = true;  // M <= kGemvM: the streaming GEMV kernel on B's rows in place
  const float* B;
  i64 ldb;
  void gemv(const Ops& o, int k0, int kc, int j, int w, const float* a, i64 lda, int m, float* c, i64 ldc) const {
    o.gemvn(kc, m, w, a, lda, B + (i64)k0 * ldb + j, ldb, c, ldc, true);
  }
  void block(const Ops& o, int p, int kc, int j, int w, float* buf, i64 pstride) const {
    pack_b_block(o, false, B, ldb, p, kc, j, w, buf, pstride);
  }
  void naive(bool transA, int M, int N, int k0, int k1, float alpha, const float* A, i64 lda, float beta, float* C,
             i64 ldc) const {
    gemm_naive(transA, false, M, N, k1 - k0, alpha, A, lda, B + (i64)k0 * ldb, ldb, beta, C, ldc);
  }
};

// K-split driver, B not transposed (B stored K x N), M <= kSkinnyM. Bandwidth first: the threads split
// the K rows of B, so each streams one contiguous region (whole rows when ldb == N); each part writes
// raw partial sums (M x N) to its own buffer, and a final pass forms C = alpha * sum + beta * C.
// Per part: M <= kGemvM uses the streaming GEMV kernel (4 rows of B at a time, no copy); otherwise B is
// copied in blocks of kc rows x W columns (about 256 KB, rows read contiguously) into panels that
// all ceil(M/6) row panels reuse from L1.

// Where op(B) comes from is a source (RowMajorB above, or PackedBt: B given as its packed transpose):
//   src.gemv(o, k0, kc, j, w, a, lda, m, c, ldc): c = gemvn over rows k0..k0+kc, columns j..j+w (kGemv);
//   src.block(o, p, kc, j, w, buf, pstride): the panels of rows p..p+kc, columns j..j+w (pack_b_block's);
//   src.naive(transA, M, N, k0, k1, alpha, A, lda, beta, C, ldc): the unblocked product over rows k0..k1
//   (out of memory).
template <class Src>
void gemm_ksplit(const Ops& o, bool transA, int M, int N, int K, float alpha, const float* A, i64 lda,
                 const Src& src, float beta, float* C, i64 ldc) {
  auto naive = [&](int k0, int k1, float al, float be, float* c, i64 ldc_) {
    src.naive(transA, M, N, k0, k1, al, transA ? A + (i64)k0 * lda : A + k0, lda, be, c, ldc_);
  };
  const int T = threads_for(2.0 * M * N * K);
  const int parts = std::max(1, std::min(T, K / kKSplitMinK));
  const bool gemv = Src::kGemv && M <= kGemvM;
  const int npanels = (M + MR - 1) / MR;
  // A as the kernels want it: rows (M x K, contiguous) for GEMV, else K-long MR panels.
  const float* arows = A;
  i64 la = lda;
  float* apack = nullptr;
  if (gemv) {
    if (transA) {
      float* p = tl_a.get((size_t)M * K);
      if (!p) return naive(0, K, alpha, beta, C, ldc);
      for (int k = 0; k < K; k++)
        for (int i = 0; i < M; i++) p[(i64)i * K + k] = A[(i64)k * lda + i];
      arows = p;
      la = K;
    }
  } else {
    apack = tl_a.get((size_t)npanels * K * MR);
    if (!apack) return naive(0, K, alpha, beta, C, ldc);
    pack_a(o, transA, A, lda, 0, M, 0, K, apack, (i64)K * MR);
  }
  const i64 mn = (i64)M * N;
  float* part_buf = tl_c.get((size_t)(mn * parts));
  if (!part_buf) return naive(0, K, alpha, beta, C, ldc);
  const int W = std::min(N, gemv ? kGemvW : kKSplitW);
  const int kcb = std::clamp(((65536 / W) & ~7), 16, KC);  // block kc x W ~ 256 KB
  const i64 pstride = (i64)kcb * NR + 16;
  auto part = [&](int64_t t) {
    const int k0 = (int)((i64)K * t / parts), k1 = (int)((i64)K * (t + 1) / parts);
    float* cp = part_buf + t * mn;  // partial C (M x N), row stride N
    if constexpr (Src::kGemv) {
      if (gemv) {
        for (int j = 0; j < N; j += W)
          src.gemv(o, k0, k1 - k0, j, std::min(W, N - j), arows + k0, la, M, cp + j, N);
        return;
      }
    }
    float* bbuf = tl_b.get((size_t)pstride * ((W + NR - 1) / NR));
    if (!bbuf) {
      naive(k0, k1, 1.0f, 0.0f, cp, N);
      return;
    }
    for (int j = 0; j < N; j += W) {
      const int w = std::min(W, N - j), nstr = (w + NR - 1) / NR;
      for (int p = k0; p < k1; p += kcb) {
        const int kc = std::min(kcb, k1 - p);
        src.block(o, p, kc, j, w, bbuf, pstride);
        run_strips(o, kc, apack + (i64)p * MR, (i64)K * MR, npanels, M, bbuf, pstride, NR, nstr, w, cp + j, N, 1.0f,
                   p == k0 ? 0.0f : 1.0f);
      }
    }
  };
  if (parts == 1)
    part(0);
  else
    parallel_tasks(parts, part);
  // C = alpha * sum of parts + beta * C (beta == 0: C not read).
  auto reduce = [&](int64_t j0, int64_t j1) {
    for (int i = 0; i < M; i++) {
      float* c = C + (i64)i * ldc;
      const float* p0 = part_buf + (i64)i * N;
      for (int64_t j = j0; j < j1; j++) {
        float sum = p0[j];
        for (int t = 1; t < parts; t++) sum += p0[t * mn + j];
        c[j] = beta == 0.0f ? alpha * sum : alpha * sum + beta * c[j];
      }
    }
  };
  if (T == 1 || mn < 16384)
    reduce(0, N);
  else
    parallel_for(N, reduce, 64);
}

// ---------------------------------------------------------------------------------------------
// General driver: Goto/BLIS loops on one C tile, with thread-local packed blocks. Where op(B) comes
// from is a functor: block(pc, kc, j, nc, buf, buf_stride, &stride) returns the ceil(nc/NR) panels of
// op(B) rows pc..pc+kc, columns j..j+nc (panel q at result + q*stride), packed into buf or found in
// place (a PackedMatrix not transposed: its strips are those panels already).
template <class BlockB>
bool gemm_tile_t(const Ops& o, bool transA, int i0, int mt, int j0, int nt_, int K, float alpha, const float* A,
                 i64 lda, const BlockB& block, float beta, float* C, i64 ldc, const GemmEpilogue* ep) {
  const int kc_max = balanced_kc(K, KC);
  const int nc_max = std::min(NC, (nt_ + NR - 1) / NR * NR);
  const int mc_max = std::min(MC, (mt + MR - 1) / MR * MR);
  // Panel q of the packed B block at bpack + q*pstride (+16: the panels' rows out of one L1 set).
  const i64 pstride = (i64)kc_max * NR + 16;
  // A tile of MR < mt <= kSkinnyM rows takes tall panels where the backend has them (skinny_mr),
  // reading a row-major A in place; bit-identical either way.
  const bool tall = mt <= kSkinnyM && skinny_mr(o, mt) == kTallMR;
  const bool a_in_place = tall && !transA;
  float* bpack = tl_b.get((size_t)pstride * (nc_max / NR));
  float* apack = a_in_place ? nullptr : tl_a.get((size_t)kc_max * (tall ? (mt + kTallMR - 1) / kTallMR * kTallMR : mc_max));
  if (!bpack || (!a_in_place && !apack)) return false;
  for (int jc = 0; jc < nt_; jc += nc_max) {
    const int nc = std::min(nc_max, nt_ - jc);
    for (int pc = 0; pc < K; pc += kc_max) {
      const int kc = std::min(kc_max, K - pc);
      const float beta_e = pc == 0 ? beta : 1.0f;
      i64 bstride = pstride;
      const float* bp = block(pc, kc, j0 + jc, nc, bpack, pstride, &bstride);
      for (int ic = 0; ic < mt; ic += mc_max) {
        const int mc = std::min(mc_max, mt - ic);
        // the epilogue with the last k block, on each strip's rows while they are in L1
        EpTile et{};
        const bool last = ep && pc + kc >= K;
        if (last) et = {ep->bias ? ep->bias + j0 + jc : nullptr, ep->gelu ? ep->gelu + (i64)(i0 + ic) * ep->ldg + j0 + jc : nullptr, ep->ldg};
        if (tall) {  // mc == mt (mt <= kSkinnyM < MC)
          if (!a_in_place) pack_a(o, transA, A, lda, i0 + ic, mc, pc, kc, apack, (i64)kc * kTallMR, kTallMR);
          const float* a = a_in_place ? A + (i64)(i0 + ic) * lda + pc : apack;
          run_strips_tall(o, kc, a, a_in_place ? lda : 0, a_in_place ? kTallMR * lda : (i64)kc * kTallMR, mc, bp, bstride,
                          NR, (nc + NR - 1) / NR, nc, C + (i64)(i0 + ic) * ldc + j0 + jc, ldc, alpha, beta_e,
                          last ? &et : nullptr);
          continue;
        }
        pack_a(o, transA, A, lda, i0 + ic, mc, pc, kc, apack, (i64)kc * MR);
        run_strips(o, kc, apack, (i64)kc * MR, (mc + MR - 1) / MR, mc, bp, bstride, NR, (nc + NR - 1) / NR, nc,
                   C + (i64)(i0 + ic) * ldc + j0 + jc, ldc, alpha, beta_e, last ? &et : nullptr);
      }
    }
  }
  return true;
}

// naive(i0, m, j0, n): the tile unblocked (used only if a pack buffer cannot be allocated).
template <class BlockB, class Naive>
void gemm_general_t(const Ops& o, bool transA, int M, int N, int K, float alpha, const float* A, i64 lda,
                    const BlockB& block, const Naive& naive, float beta, float* C, i64 ldc,
                    const GemmEpilogue* ep = nullptr) {
  const int T = threads_for(2.0 * M * N * K);
  // Pick a tm x tn grid of T tiles (aligned to MR / NR) with the smallest tile perimeter, i.e. the
  // least redundant packing per thread.
  int best_tm = 1, best_tn = 1;
  i64 best_cost = -1;
  for (int tm = 1; tm <= T; tm++) {
    if (T % tm) continue;
    const int tn = T / tm;
    const i64 mt = ((M + tm - 1) / tm + MR - 1) / MR * MR;
    const i64 ntl = ((N + tn - 1) / tn + NR - 1) / NR * NR;
    if ((tm > 1 && mt * (tm - 1) >= M) || (tn > 1 && ntl * (tn - 1) >= N)) continue;  // empty tiles
    const i64 cost = mt * ntl + (mt + ntl) * 64;  // padded tile area + packing
    if (best_cost < 0 || cost < best_cost) { best_cost = cost; best_tm = tm; best_tn = tn; }
  }
  const int mt = ((M + best_tm - 1) / best_tm + MR - 1) / MR * MR;
  const int ntl = ((N + best_tn - 1) / best_tn + NR - 1) / NR * NR;
  auto tile = [&](int64_t t) {
    const int i0 = (int)(t / best_tn) * mt, j0 = (int)(t % best_tn) * ntl;
    const int m = std::min(mt, M - i0), n = std::min(ntl, N - j0);
    if (m <= 0 || n <= 0) return;
    if (gemm_tile_t(o, transA, i0, m, j0, n, K, alpha, A, lda, block, beta, C, ldc, ep)) return;
    naive(i0, m, j0, n);
    if (ep) epilogue_block({ep->bias, ep->gelu ? ep->gelu + (i64)i0 * ep->ldg : nullptr, ep->ldg}, C + (i64)i0 * ldc, ldc, m, j0, n);
  };
  if (best_tm * best_tn == 1)
    tile(0);
  else
    parallel_tasks(best_tm * best_tn, tile);
}

void gemm_general(const Ops& o, bool transA, bool transB, int M, int N, int K, float alpha, const float* A,
                  i64 lda, const float* B, i64 ldb, float beta, float* C, i64 ldc) {
  // B not transposed is packed row by row (nc contiguous floats per row of B: DRAM streams it;
  // 16-float pieces per row, one strip at a time, ran at a fraction of the bandwidth).
  auto block = [&](int pc, int kc, int j, int nc, float* buf, i64 stride, i64*) -> const float* {
    pack_b_block(o, transB, B, ldb, pc, kc, j, nc, buf, stride);
    return buf;
  };
  auto naive = [&](int i0, int m, int j0, int n) {
    gemm_naive(transA, transB, m, n, K, alpha, transA ? A + i0 : A + (i64)i0 * lda, lda,
               transB ? B + (i64)j0 * ldb : B + j0, ldb, beta, C + (i64)i0 * ldc + j0, ldc);
  };
  gemm_general_t(o, transA, M, N, K, alpha, A, lda, block, naive, beta, C, ldc);
}

// ---------------------------------------------------------------------------------------------
// Packed matrices (kernels.h PackedMatrix): W (K, N) in 16-column strips, strip s = rows 0..K-1 of
// columns 16s..16s+15 (zero past N), K*NR floats each. Not transposed, op(B) = W: the strips are the
// micro-kernel's B panels, read in place (no copy of B per call: at B = 1 and 16-32 tokens the copy
// cost about as much as the arithmetic). Transposed, op(B) = Wᵀ (N, K): a panel of kc rows x 16
// columns of Wᵀ is 16 rows of W times kc columns, i.e. 16 x 16 blocks that lie contiguous (1 KB) in
// W's strips, each transposed into the panel by pack_bt.

void pack_bt_from_packed(const Ops& o, const PackedMatrix& W, int p0, int kc, int j0, int nbw, float* out, i64 pstride) {
  // op(B) = Wᵀ rows p0..p0+kc (columns of W), columns j0..j0+nbw (rows of W). One strip of W at a time:
  // its rows j0..j0+nbw are one contiguous run (nbw x 64 bytes), read in memory order and transposed
  // into every panel (panel by panel, the reads jumped between the kc/16 strips, 1 KB from each).
  for (int k = p0; k < p0 + kc;) {
    const int strip = k / NR, koff = k - strip * NR, len = std::min(NR - koff, p0 + kc - k);
    const float* src = W.data + (i64)strip * W.K * NR + koff;
    for (int jr = 0, q = 0; jr < nbw; jr += NR, q++)
      o.pack_bt(src + (i64)(j0 + jr) * NR, NR, len, std::min(NR, nbw - jr), out + q * pstride + (i64)(k - p0) * NR);
    k += len;
  }
}

// Skinny driver for a packed W not transposed, M <= kSkinnyM: op(A) is packed once (K-long MR
// panels, in L2) and shared; threads split W's strips into contiguous ranges and walk them in
// memory order: each pair of strips from its first row to its last (two sequential streams), used by
// every row panel from L1.
// ksuper: K is taken in superblocks of at most this many rows, each with its own balanced k blocks
// (K: one superblock; kSkinnyKS: the k blocks gemm_skinny_t uses, for gemm_nt_prepacked).
// ep: the epilogue, run on each pair of strips' columns after its last k block, while they are in L1.
bool gemm_packed_skinny(const Ops& o, bool transA, int M, int N, int K, float alpha, const float* A, i64 lda,
                        const PackedMatrix& W, float beta, float* C, i64 ldc, int ksuper,
                        const GemmEpilogue* ep = nullptr) {
  const int mr = skinny_mr(o, M);
  const int npanels = (M + mr - 1) / mr;
  const int nstrips = (N + NR - 1) / NR;
  const i64 sstride = (i64)K * NR;
  const int threads = threads_for(2.0 * M * N * K);
  for (int ps = 0; ps < K; ps += ksuper) {
    const int ks = std::min(ksuper, K - ps);
    const float beta_s = ps == 0 ? beta : 1.0f;
    // Tall panels read a row-major A in place (no copy); otherwise A is packed once per superblock.
    const bool a_in_place = mr == kTallMR && !transA;
    float* apack = nullptr;
    if (!a_in_place) {
      apack = tl_a.get((size_t)npanels * ks * mr);
      if (!apack) return false;  // (only before anything is written: the first superblock's buffer
                                 // is the largest, and a later get() of no more floats reuses it)
      pack_a(o, transA, A, lda, 0, M, ps, ks, apack, (i64)ks * mr, mr);
    }
    const int kc_max = balanced_kc(ks, KC);
    auto body = [&](int64_t s0, int64_t s1) {
      // The blocks this thread reads after (s, p, q), in its order: the pair's other strip (this
      // block), else the next block of the pair's first strip, else the next pair's first.
      auto after = [&](int64_t& s_, int& p_, int& q_) {
        const int nq_ = (int)std::min<int64_t>(2, s1 - s_);
        if (q_ + 1 < nq_) { q_++; return true; }
        q_ = 0;
        if (p_ + kc_max < ks) { p_ += kc_max; return true; }
        p_ = 0;
        s_ += 2;
        return s_ < s1;
      };
      auto at = [&](int64_t s_, int p_, int q_) { return W.data + (s_ + q_) * sstride + (i64)(ps + p_) * NR; };
      for (int64_t s = s0; s < s1; s += 2) {
        const int nq = (int)std::min<int64_t>(2, s1 - s);
        const float* strip = W.data + s * sstride + (i64)ps * NR;
        const int j0 = (int)s * NR;
        for (int p = 0; p < ks; p += kc_max) {
          const int kc = std::min(kc_max, ks - p);
          const float beta_e = p == 0 ? beta_s : 1.0f;
          // The pair's columns are final after this block: the epilogue runs on them next.
          const bool last = ep && ps + ks >= K && p + kc >= ks;
          const int ncols = std::min(nq * NR, N - j0);
          EpTile et{};
          if (last) et = {ep->bias ? ep->bias + j0 : nullptr, ep->gelu ? ep->gelu + j0 : nullptr, ep->ldg};
          if (mr == kTallMR) {
            // Tall panels, both strips of the pair at once (an odd last strip twice, its second
            // half's columns masked off). The panels after the first read the block from L1 while
            // the DRAM stream would idle: panel 1 prefetches the next block this thread reads (both
            // of its strips, a line each per k) and panel 2 the one after. Prefetches only.
            const float* pf[4] = {};  // panel 1: the next block's two strips; panel 2: the one after
            int64_t s2 = s;
            int p2 = p, q2 = 1;  // past this block's pair
            for (int t = 0; t < 2 && t + 1 < npanels && after(s2, p2, q2); t++, q2 = 1) {
              pf[2 * t] = at(s2, p2, 0);
              pf[2 * t + 1] = s2 + 1 < s1 ? at(s2, p2, 1) : pf[2 * t];
            }
            const float* a = a_in_place ? A + ps + p : apack + (i64)p * mr;
            run_strips_tall(o, kc, a, a_in_place ? lda : 0, a_in_place ? mr * lda : (i64)ks * mr, M, strip + (i64)p * NR,
                            sstride, NR, nq, N - j0, C + j0, ldc, alpha, beta_e, last ? &et : nullptr, pf);
            continue;
          }
          if (!o.ukr_pf || npanels < 2) {
            run_strips(o, kc, apack + (i64)p * MR, (i64)ks * MR, npanels, M, strip + (i64)p * NR, sstride, NR, nq,
                       N - j0, C + j0, ldc, alpha, beta_e, last ? &et : nullptr);
            continue;
          }
          // With the AVX2 kernel, the row panels after the first read their strip block from L1 while
          // the DRAM stream would idle: panel 1 prefetches the block this thread reads next and panel
          // 2 the one after it (bit-identical: prefetches only). GPT-2 small's 48 block weights (packed,
          // from DRAM) at 16 rows: 82-88 -> 89-104 GFLOP/s in four alternations, 2 threads; 1 thread
          // 56 -> 60; at 32 rows 124 -> 132.
          for (int q = 0; q < nq; q++) {
            int64_t s2 = s;
            int p2 = p, q2 = q;
            const float* next = after(s2, p2, q2) ? at(s2, p2, q2) : nullptr;
            const float* next2 = next && npanels > 2 && after(s2, p2, q2) ? at(s2, p2, q2) : nullptr;
            const float* bq = strip + (i64)q * sstride + (i64)p * NR;
            const int ncol = std::min(NR, N - j0 - q * NR);
            for (int ip = 0; ip < npanels; ip++) {
              const float* a = apack + (i64)p * MR + (i64)ip * ks * MR;
              float* c = C + (i64)ip * MR * ldc + j0 + q * NR;
              const int m = std::min(MR, M - ip * MR);
              if (ip == 1 && next) o.ukr_pf(kc, a, bq, NR, c, ldc, m, ncol, alpha, beta_e, next);
              else if (ip == 2 && next2) o.ukr_pf(kc, a, bq, NR, c, ldc, m, ncol, alpha, beta_e, next2);
              else o.ukr(kc, a, bq, NR, c, ldc, m, ncol, alpha, beta_e);
            }
          }
          if (last) epilogue_block(et, C + j0, ldc, M, 0, ncols);
        }
      }
    };
    if (threads == 1)
      body(0, nstrips);
    else
      parallel_for(nstrips, body, 2);
  }
  return true;
}

inline float packed_at(const PackedMatrix& W, int k, int n) { return W.data[((i64)(n / NR) * W.K + k) * NR + n % NR]; }

// B (K, N) given as its packed transpose X = Bᵀ (X.K = N, X.N = K), for gemm_ksplit at M > kDotM (fewer
// rows take gemm_packed_lanes): the panels are pack_bt_from_packed's, the same floats pack_b_block
// copies from a row-major B, so the sums are gemm's.
struct PackedBt {
  static constexpr bool kGemv = false;  // (M <= kGemvM never comes here)
  const PackedMatrix& X;
  void block(const Ops& o, int p, int kc, int j, int w, float* buf, i64 pstride) const {
    pack_bt_from_packed(o, X, p, kc, j, w, buf, pstride);
  }
  void naive(bool transA, int M, int N, int k0, int k1, float alpha, const float* A, i64 lda, float beta, float* C,
             i64 ldc) const {
    gemm_naive_at(transA, 0, M, 0, N, k1 - k0, alpha, A, lda, [&](int k, int j) { return packed_at(X, j, k0 + k); },
                  beta, C, ldc);
  }
};

}  // namespace

size_t packed_floats(int K, int N) { return (size_t)K * (size_t)((N + NR - 1) / NR) * NR; }

void pack_matrix(const float* W, int K, int N, float* out) {
  const int nstrips = (N + NR - 1) / NR;
  parallel_for(nstrips, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) {
      float* o = out + s * (i64)K * NR;
      const int j0 = (int)s * NR, nb = std::min(NR, N - j0);
      for (int k = 0; k < K; k++) {
        const float* src = W + (i64)k * N + j0;
        float* d = o + (i64)k * NR;
        int j = 0;
        for (; j < nb; j++) d[j] = src[j];
        for (; j < NR; j++) d[j] = 0.0f;
      }
    }
  }, 1);
}

void pack_matrix_t(const float* B, int N, int K, float* out) {
  const Ops& o = ops();
  parallel_for((N + NR - 1) / NR, [&](int64_t s0, int64_t s1) {
    // Strip s = rows 16s.. of B, transposed by pack_bt (which zero-fills past N) KC rows at a time into
    // an aligned block (pack_bt's stores are aligned; out need not be), then copied into place.
    alignas(64) float blk[KC * NR];
    for (int64_t s = s0; s < s1; s++) {
      const int nb = std::min<int>(NR, N - (int)s * NR);
      for (int k = 0; k < K; k += KC) {
        const int kc = std::min(KC, K - k);
        o.pack_bt(B + s * NR * (i64)K + k, K, kc, nb, blk);
        std::memcpy(out + (s * (i64)K + k) * NR, blk, sizeof(float) * kc * NR);
      }
    }
  }, 1);
}

void unpack_matrix(const PackedMatrix& W, float* out) {
  parallel_for(W.K, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; k++)
      for (int s = 0; s * NR < W.N; s++) {
        const int nb = std::min(NR, W.N - s * NR);
        std::memcpy(out + k * W.N + s * NR, W.data + ((i64)s * W.K + k) * NR, nb * sizeof(float));
      }
  }, 16);
}

void unpack_matrix_t(const PackedMatrix& X, float* out) {
  const Ops& o = ops();
  parallel_for((X.N + NR - 1) / NR, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++)
      o.strip_t(X.data + s * X.K * NR, X.K, std::min<int>(NR, X.N - (int)s * NR), out + s * NR * X.K, X.K);
  }, 4);
}

void packed_column(const PackedMatrix& X, int n, float* out) {
  const float* p = X.data + (i64)(n / NR) * X.K * NR + n % NR;
  for (int k = 0; k < X.K; k++) out[k] = p[(i64)k * NR];
}

// The epilogue as passes of its own over C (M x N), for the drivers that do not fuse it.
void epilogue_after(int M, int N, float* C, i64 ldc, const GemmEpilogue* ep) {
  if (!ep) return;
  if (ldc != N || (ep->gelu && ep->ldg != N)) return epilogue_block({ep->bias, ep->gelu, ep->ldg}, C, ldc, M, 0, N);
  if (ep->bias) bias_forward(C, ep->bias, M, N);
  if (ep->gelu) gelu_forward(ep->gelu, C, (int64_t)M * N);
}

void gemm_packed(bool transA, bool transW, int M, float alpha, const float* A, int lda, const PackedMatrix& W,
                 float beta, float* C, int ldc, const GemmEpilogue* ep) {
  const int N = transW ? W.K : W.N, K = transW ? W.N : W.K;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) {
    scale_c(M, N, beta, C, ldc);
    return epilogue_after(M, N, C, ldc, ep);
  }
  const Ops& o = ops();
  auto naive = [&](int i0, int m, int j0, int n) {
    gemm_naive_at(transA, i0, m, j0, n, K, alpha, A, lda,
                  [&](int k, int j) { return transW ? packed_at(W, j, k) : packed_at(W, k, j); }, beta, C, ldc);
  };
  if (!transW && M <= kSkinnyM && gemm_packed_skinny(o, transA, M, N, K, alpha, A, lda, W, beta, C, ldc, K, ep))
    return;
  if (!transW) {
    auto block = [&](int pc, int, int j, int, float*, i64, i64* stride) -> const float* {
      *stride = (i64)W.K * NR;
      return W.data + (i64)(j / NR) * W.K * NR + (i64)pc * NR;
    };
    gemm_general_t(o, transA, M, N, K, alpha, A, lda, block, naive, beta, C, ldc, ep);
  } else {
    auto block = [&](int pc, int kc, int j, int nc, float* buf, i64 stride, i64*) -> const float* {
      pack_bt_from_packed(o, W, pc, kc, j, nc, buf, stride);
      return buf;
    };
    gemm_general_t(o, transA, M, N, K, alpha, A, lda, block, naive, beta, C, ldc);
    epilogue_after(M, N, C, ldc, ep);
  }
}

bool gemm_nt_prepacked(int M, float alpha, const float* A, int lda, const PackedMatrix& Bt, float beta, float* C,
                       int ldc) {
  const bool trivial = M <= 0 || Bt.N <= 0 || Bt.K <= 0 || alpha == 0.0f;
  if (!trivial && M <= kDotM) return false;  // gemm's dot driver: B's rows read in place are cheaper
  gemm_packed_nt(M, alpha, A, lda, Bt, beta, C, ldc);
  return true;
}

// C (M, X.K) = alpha · A · Xᵀ + beta · C for M <= kDotM, X's strips read once, in place: threads split the
// strips; each keeps per-lane sums (M x X.K x 16, L2) of its strips' rows scaled by A's 16 matching
// values (ops().lane_acc), and the final pass sums each output's lanes (in lane order) and the parts.
void gemm_packed_lanes(const Ops& o, int M, float alpha, const float* A, i64 lda, const PackedMatrix& X, float beta,
                       float* C, i64 ldc) {
  const int N = X.K, K = X.N;  // C (M, N), A (M, K)
  const int nstrips = (K + NR - 1) / NR;
  const int parts = std::max(1, std::min(threads_for(2.0 * M * N * K), nstrips / 8));
  const i64 per = (i64)M * N * NR;  // floats of one part's sums
  float* sums = tl_c.get((size_t)(per * parts));
  if (!sums)
    return gemm_naive_at(false, 0, M, 0, N, K, alpha, A, lda, [&](int k, int j) { return packed_at(X, j, k); }, beta,
                         C, ldc);
  auto part = [&](int64_t t) {
    float* acc = sums + t * per;
    std::memset(acc, 0, sizeof(float) * per);
    const int64_t s0 = nstrips * t / parts, s1 = nstrips * (t + 1) / parts;
    // Groups of kLaneGroup strips (kLaneGroup sequential streams), with A's values for each strip's
    // lanes (zero past K) at a16 + g*kDotM*NR.
    alignas(64) float a16[kLaneGroup * kDotM * NR];
    for (int64_t s = s0; s < s1; s += kLaneGroup) {
      const int ng = (int)std::min<int64_t>(kLaneGroup, s1 - s);
      for (int g = 0; g < ng; g++) {
        const int k0 = (int)(s + g) * NR, nk = std::min(NR, K - k0);
        for (int i = 0; i < M; i++)
          for (int j = 0; j < NR; j++) a16[(g * kDotM + i) * NR + j] = j < nk ? A[(i64)i * lda + k0 + j] : 0.0f;
      }
      o.lane_acc(N, M, a16, kDotM * NR, X.data + s * (i64)N * NR, (i64)N * NR, ng, acc);
    }
  };
  if (parts == 1)
    part(0);
  else
    parallel_tasks(parts, part);
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      float sum = 0.0f;
      for (int t = 0; t < parts; t++) {
        const float* l = sums + t * per + ((i64)i * N + j) * NR;
        float ps = 0.0f;
        for (int q = 0; q < NR; q++) ps += l[q];
        sum += ps;
      }
      float* c = C + (i64)i * ldc + j;
      *c = beta == 0.0f ? alpha * sum : alpha * sum + beta * *c;
    }
}

void gemm_packed_nt(int M, float alpha, const float* A, int lda, const PackedMatrix& X, float beta, float* C, int ldc) {
  const int N = X.N, K = X.K;
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
  const Ops& o = ops();
  if (M <= kSkinnyM) {  // (M <= kDotM too: X's strips in place, where gemm's dot kernel reads B's rows)
    if (gemm_packed_skinny(o, false, M, N, K, alpha, A, lda, X, beta, C, ldc, kSkinnyKS)) return;
    return gemm_naive_at(false, 0, M, 0, N, K, alpha, A, lda, [&](int k, int j) { return packed_at(X, k, j); }, beta,
                         C, ldc);
  }
  gemm_packed(false, false, M, alpha, A, lda, X, beta, C, ldc);
}

void gemm_packed_nn(int M, float alpha, const float* A, int lda, const PackedMatrix& X, float beta, float* C, int ldc) {
  const int N = X.K, K = X.N;  // C (M, N) = A (M, K) · B, B = Xᵀ (K, N)
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
  const Ops& o = ops();
  if (M <= kDotM) return gemm_packed_lanes(o, M, alpha, A, lda, X, beta, C, ldc);
  if (M <= kSkinnyM && (M <= kKSplitM || K >= 8 * N))
    return gemm_ksplit(o, false, M, N, K, alpha, A, lda, PackedBt{X}, beta, C, ldc);
  gemm_packed(false, true, M, alpha, A, lda, X, beta, C, ldc);  // gemm_general's blocks, panels from X
}

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.0f) return scale_c(M, N, beta, C, ldc);
  const Ops& o = ops();
  if (transB && M <= kDotM) return gemm_dot(o, transA, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (M <= kSkinnyM) {
    if (transB) return gemm_skinny_t(o, transA, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    // K-split also for a tall B (K >= 8N: the LM head backward, dlogits · wte with K = 50257, N = 768),
    // where splitting N would leave each thread short, strided pieces of every row of B.
    if (M <= kKSplitM || K >= 8 * N) return gemm_ksplit(o, transA, M, N, K, alpha, A, lda, RowMajorB{B, ldb}, beta, C, ldc);
  }
  gemm_general(o, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* gemm_backend() { return ops().name; }

bool gemm_force_portable(bool on) { return g_force_portable.exchange(on); }

bool gemm_force_avx2(bool on) { return g_force_avx2.exchange(on); }

}  // namespace mend
