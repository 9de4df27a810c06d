// attention.cc — causal multi-head self-attention with a key padding mask (GPT-2 attn core,
// between c_attn and c_proj).
// attention_forward:  out (B,Tq,C) =, att (B,NH,Tq,Tk) = (softmax probabilities; may be null)
// attention_backward: dqkv (B,T,3C) =   (full sequence, q/k/v packed as c_attn gives them)
// Query t sits at absolute position q_off + t and sees keys j <= q_off + t with mask[b,j] != 0; a query
// that sees no key gets output 0 and an all-zero probability row (HF would give a uniform row there,
// but such rows are padding and never reach the loss).
// Inner loops are axpy-shaped over contiguous memory (K and V are transposed per head into scratch
// where the reduction would otherwise run along the head dimension), four rows at a time, so -O3
// vectorises them without -ffast-math. A few queries (KV-cache decoding) take direct dot products
// instead, since transposing the cache would cost as much as the products themselves.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/cpu/vec_math.h"
#include "core/threadpool.h"

namespace mend {
namespace {

// Per-thread scratch, grown on demand (tasks never nest, so one buffer per thread is enough).
float* scratch(std::vector<float>& buf, size_t n) {
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}
thread_local std::vector<float> tl_a, tl_b, tl_c, tl_d;

// s (n) += sum over r < hs of x[r] * mT[r*ld + j]   (mT (hs, ld) row-major, j < n)
inline __attribute__((always_inline)) void gemv_t(float* __restrict s, const float* __restrict x, const float* __restrict mT,
                   int64_t ld, int hs, int n) {
  int r = 0;
  for (; r + 4 <= hs; r += 4) {
    const float x0 = x[r], x1 = x[r + 1], x2 = x[r + 2], x3 = x[r + 3];
    const float* __restrict m0 = mT + r * ld;
    const float* __restrict m1 = m0 + ld;
    const float* __restrict m2 = m1 + ld;
    const float* __restrict m3 = m2 + ld;
    for (int j = 0; j < n; j++) s[j] += x0 * m0[j] + x1 * m1[j] + x2 * m2[j] + x3 * m3[j];
  }
  for (; r < hs; r++) {
    const float xr = x[r];
    const float* __restrict m0 = mT + r * ld;
    for (int j = 0; j < n; j++) s[j] += xr * m0[j];
  }
}

// y (hs) += sum over j < n of p[j] * row_j, row_j = base + j*rs (hs contiguous floats each)
inline __attribute__((always_inline)) void axpy_rows(float* __restrict y, const float* __restrict p, const float* base, int64_t rs, int hs,
                      int n) {
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
    if (p0 == 0.f && p1 == 0.f && p2 == 0.f && p3 == 0.f) continue;  // masked keys
    const float* __restrict r0 = base + j * rs;
    const float* __restrict r1 = r0 + rs;
    const float* __restrict r2 = r1 + rs;
    const float* __restrict r3 = r2 + rs;
    for (int i = 0; i < hs; i++) y[i] += p0 * r0[i] + p1 * r1[i] + p2 * r2[i] + p3 * r3[i];
  }
  for (; j < n; j++) {
    const float pj = p[j];
    if (pj == 0.f) continue;
    const float* __restrict r0 = base + j * rs;
    for (int i = 0; i < hs; i++) y[i] += pj * r0[i];
  }
}

// mT (hs, ld) = transpose of rows j < n of the head slice: row_j = base + j*rs, hs floats each.
// Blocks of 16 rows, so each store run fills a cache line instead of touching hs different lines.
inline __attribute__((always_inline)) void transpose_head(float* __restrict mT, int64_t ld, const float* __restrict base, int64_t rs, int hs,
                           int n) {
  constexpr int kB = 16;
  int j0 = 0;
  for (; j0 + kB <= n; j0 += kB) {
    const float* __restrict rows = base + j0 * rs;
    for (int i = 0; i < hs; i++) {
      float* __restrict dst = mT + i * ld + j0;
      for (int jj = 0; jj < kB; jj++) dst[jj] = rows[jj * rs + i];
    }
  }
  for (int j = j0; j < n; j++) {
    const float* __restrict row = base + j * rs;
    for (int i = 0; i < hs; i++) mT[i * ld + j] = row[i];
  }
}

// s[j] (n) = x · row_j, row_j = base + j*rs (hs floats): for a few queries, where transposing the
// keys would cost as much as the products. Eight independent lanes let -O3 vectorise the sum.
inline __attribute__((always_inline)) void dots_rows(float* __restrict s, const float* __restrict x, const float* __restrict base, int64_t rs,
                      int hs, int n) {
  for (int j = 0; j < n; j++) {
    const float* __restrict row = base + j * rs;
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= hs; i += 8)
      for (int l = 0; l < 8; l++) acc[l] += x[i + l] * row[i + l];
    float d = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < hs; i++) d += x[i] * row[i];
    s[j] = d;
  }
}

// In-place masked softmax of s (n) into p (n); allowed(j) says which keys take part. Returns false
// (and zeroes p) when no key is allowed.
template <typename Allowed>
inline __attribute__((always_inline)) bool masked_softmax(float* __restrict p, const float* __restrict s, int n, Allowed allowed) {
  float mx = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int j = 0; j < n; j++)
    if (allowed(j)) { any = true; mx = std::max(mx, s[j]); }
  if (!any) {
    std::memset(p, 0, sizeof(float) * (size_t)n);
    return false;
  }
  double sum = 0;
  for (int j = 0; j < n; j++) {
    float e = allowed(j) ? std::exp(s[j] - mx) : 0.f;
    p[j] = e;
    sum += e;
  }
  const float inv = (float)(1.0 / sum);
  for (int j = 0; j < n; j++) p[j] *= inv;
  return true;
}

}  // namespace

namespace {

// The arguments of attention_forward, for its per-task body.
struct AttnArgs {
  float* out;
  float* att;
  const float *q, *k, *v;
  int64_t q_bs, q_rs, k_bs, k_rs, v_bs, v_rs;
  const int32_t* mask;
  int Tq, Tk, C, NH, q_off, hs, nchunks, qchunk;
  float scale;
};

// One task: queries [t0, t1) of one (batch row, head). Compiled twice (attn_task_base, attn_task_avx2):
// see vec_math.h's AVX2 clones, bit-identical.
inline __attribute__((always_inline)) void attn_task_impl(const AttnArgs& A, int64_t task) {
  const int hs = A.hs, NH = A.NH, Tq = A.Tq, Tk = A.Tk, C = A.C, q_off = A.q_off;
  const int64_t bh = task / A.nchunks;
  const int b = (int)(bh / NH), h = (int)(bh % NH);
  const int t0 = (int)(task % A.nchunks) * A.qchunk, t1 = std::min(Tq, t0 + A.qchunk);
  if (t0 >= t1) return;
  // keys any of these queries can see: j < kmax
  const int kmax = (int)std::max<int64_t>(0, std::min<int64_t>(Tk, (int64_t)q_off + t1));
  // Transposing the keys pays off only when several queries share them.
  const bool transpose = t1 - t0 >= 8;
  const int64_t ld = std::max(kmax, 1);
  float* kT = transpose ? scratch(tl_a, (size_t)hs * ld) : nullptr;  // (hs, kmax)
  float* s = scratch(tl_b, (size_t)ld);                              // (kmax) scores
  float* pbuf = A.att ? nullptr : scratch(tl_c, (size_t)ld);          // (kmax) probabilities
  float* qsp = scratch(tl_d, (size_t)hs);                            // (hs) scaled query row
  const float* kh = A.k + b * A.k_bs + h * hs;                       // row j at kh + j*k_rs
  const float* vh = A.v + b * A.v_bs + h * hs;                       // row j at vh + j*v_rs
  const int32_t* mrow = A.mask ? A.mask + (int64_t)b * Tk : nullptr;  // (Tk)
  if (transpose) transpose_head(kT, ld, kh, A.k_rs, hs, kmax);

  for (int t = t0; t < t1; t++) {
    const int lim = (int)std::max<int64_t>(0, std::min<int64_t>(Tk, (int64_t)q_off + t + 1));
    const float* qrow = A.q + b * A.q_bs + (int64_t)t * A.q_rs + h * hs;  // (hs)
    float* o = A.out + ((int64_t)b * Tq + t) * C + h * hs;    // (hs)
    float* arow = A.att ? A.att + ((bh * Tq) + t) * (int64_t)Tk : nullptr;  // (Tk)
    float* p = A.att ? arow : pbuf;
    for (int i = 0; i < hs; i++) qsp[i] = qrow[i] * A.scale;
    if (transpose) {
      std::memset(s, 0, sizeof(float) * (size_t)lim);
      gemv_t(s, qsp, kT, ld, hs, lim);
    } else {
      dots_rows(s, qsp, kh, A.k_rs, hs, lim);
    }
    bool any = mrow ? masked_softmax(p, s, lim, [&](int j) { return mrow[j] != 0; })
                    : masked_softmax(p, s, lim, [](int) { return true; });
    if (arow && lim < Tk) std::memset(arow + lim, 0, sizeof(float) * (size_t)(Tk - lim));
    std::memset(o, 0, sizeof(float) * (size_t)hs);
    if (any) axpy_rows(o, p, vh, A.v_rs, hs, lim);
  }
}

void attn_task_base(const AttnArgs& A, int64_t task) { attn_task_impl(A, task); }
MEND_AVX2_NOFMA void attn_task_avx2(const AttnArgs& A, int64_t task) { attn_task_impl(A, task); }

}  // namespace

void attention_forward(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs,
                       const float* k, int64_t k_bs, int64_t k_rs, const float* v, int64_t v_bs,
                       int64_t v_rs, const int32_t* mask, int B, int Tq, int Tk, int C, int NH,
                       int q_off) {
  // out (B,Tq,C), att (B,NH,Tq,Tk) or null, q/k/v strided as in kernels.h, mask (B,Tk) or null
  const int hs = C / NH;
  const int64_t nbh = (int64_t)B * NH;
  // Split the queries of one (b,h) into chunks when there are few heads for the threads; each chunk
  // re-transposes the keys it needs, so chunks stay >= 32 rows.
  int64_t nchunks = 1;
  const int64_t want = 4 * (int64_t)num_threads();
  if (nbh < want && Tq >= 64) nchunks = std::min<int64_t>((want + nbh - 1) / nbh, Tq / 32);
  const int qchunk = (int)((Tq + nchunks - 1) / nchunks);
  const AttnArgs A{out, att, q, k, v, q_bs, q_rs, k_bs, k_rs, v_bs, v_rs, mask, Tq, Tk, C, NH, q_off, hs,
                   (int)nchunks, qchunk, 1.0f / std::sqrt((float)hs)};
  const auto task = avx2_clones() ? attn_task_avx2 : attn_task_base;
  parallel_tasks(nbh * nchunks, [&](int64_t t) { task(A, t); });
}

namespace {

struct AttnBackArgs {
  float* dqkv;
  const float *dout, *qkv, *att;
  int T, C, NH, hs;
  float scale;
  int64_t C3, ld;
};

// One (batch row, head) of attention_backward; compiled twice like attn_task_impl.
inline __attribute__((always_inline)) void attn_back_impl(const AttnBackArgs& A, int64_t bh) {
  float* dqkv = A.dqkv;
  const float *dout = A.dout, *qkv = A.qkv, *att = A.att;
  const int T = A.T, C = A.C, NH = A.NH, hs = A.hs;
  const float scale = A.scale;
  const int64_t C3 = A.C3, ld = A.ld;
  const int b = (int)(bh / NH), h = (int)(bh % NH);
  float* vT = scratch(tl_a, (size_t)hs * ld);            // (hs, T)
  float* acc = scratch(tl_b, (size_t)2 * T * hs);        // dK (T,hs) then dV (T,hs)
  float* row = scratch(tl_c, (size_t)2 * ld);            // datt (T), dpre (T)
  float* dK = acc;
  float* dV = acc + (int64_t)T * hs;
  float* datt = row;
  float* dpre = row + ld;
  std::memset(acc, 0, sizeof(float) * (size_t)2 * T * hs);
  const float* qh = qkv + (int64_t)b * T * C3 + h * hs;            // row t at qh + t*C3
  const float* kh = qh + C;
  const float* vh = qh + 2 * C;
  transpose_head(vT, ld, vh, C3, hs, T);

  for (int t = 0; t < T; t++) {
    const int lim = t + 1;
    const float* arow = att + (bh * T + t) * (int64_t)T;     // (T)
    const float* dy = dout + ((int64_t)b * T + t) * C + h * hs;  // (hs)
    const float* qrow = qh + t * C3;                         // (hs)
    float* dq = dqkv + ((int64_t)b * T + t) * C3 + h * hs;         // (hs)
    // datt (lim) = dy · V[j]
    std::memset(datt, 0, sizeof(float) * (size_t)lim);
    gemv_t(datt, dy, vT, ld, hs, lim);
    // dV[j] += att[t,j] * dy
    double dot = 0;
    for (int j = 0; j < lim; j++) {
      const float a = arow[j];
      dot += (double)a * datt[j];
      if (a == 0.f) continue;
      float* __restrict dv = dV + (int64_t)j * hs;
      for (int i = 0; i < hs; i++) dv[i] += a * dy[i];
    }
    // softmax backward, with the 1/sqrt(hs) of the scores folded in
    const float fdot = (float)dot;
    for (int j = 0; j < lim; j++) dpre[j] = arow[j] * (datt[j] - fdot) * scale;
    // dQ[t] = sum_j dpre[j] K[j];  dK[j] += dpre[j] Q[t]
    std::memset(dq, 0, sizeof(float) * (size_t)hs);
    axpy_rows(dq, dpre, kh, C3, hs, lim);
    for (int j = 0; j < lim; j++) {
      const float d = dpre[j];
      if (d == 0.f) continue;
      float* __restrict dk = dK + (int64_t)j * hs;
      for (int i = 0; i < hs; i++) dk[i] += d * qrow[i];
    }
  }
  for (int t = 0; t < T; t++) {
    float* drow = dqkv + ((int64_t)b * T + t) * C3 + h * hs;  // (3C) row, this head's slices
    std::memcpy(drow + C, dK + (int64_t)t * hs, sizeof(float) * (size_t)hs);
    std::memcpy(drow + 2 * C, dV + (int64_t)t * hs, sizeof(float) * (size_t)hs);
  }
}

void attn_back_base(const AttnBackArgs& A, int64_t bh) { attn_back_impl(A, bh); }
MEND_AVX2_NOFMA void attn_back_avx2(const AttnBackArgs& A, int64_t bh) { attn_back_impl(A, bh); }

}  // namespace

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        const int32_t* mask, int B, int T, int C, int NH) {
  // dqkv (B,T,3C), dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T), mask (B,T) or null
  // The mask is already folded into att (masked probabilities are 0), so it is not needed here.
  (void)mask;
  const int hs = C / NH;
  const AttnBackArgs A{dqkv, dout, qkv, att, T, C, NH, hs, 1.0f / std::sqrt((float)hs), 3 * (int64_t)C, std::max(T, 1)};
  const auto task = avx2_clones() ? attn_back_avx2 : attn_back_base;
  parallel_tasks((int64_t)B * NH, [&](int64_t bh) { task(A, bh); });
}

}  // namespace mend
