// vec_math.h — branch-free float math that g++ -O3 vectorises (libm calls stay scalar): exp of a
// non-positive argument and tanh built on it. Shared by crossentropy.cc and gelu.cc.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>

namespace mend {

// AVX2 clones of element-wise kernels. The build targets baseline x86-64 (SSE2); a function marked
// MEND_AVX2_NOFMA is compiled for AVX2 *without* FMA, so the compiler cannot contract a*b + c and
// every lane performs the same IEEE operations, in the same order, as the SSE2 build: the clones
// give bit-identical results, eight lanes wide instead of four. avx2_clones() says whether to use
// them (the CPU has AVX2 and the tests have not forced the baseline code; tests compare the two).
#if defined(__x86_64__) && defined(__GNUC__)
#define MEND_AVX2_NOFMA __attribute__((target("avx2")))
#define MEND_HAS_AVX2_CLONES 1
#else
#define MEND_AVX2_NOFMA
#define MEND_HAS_AVX2_CLONES 0
#endif
inline std::atomic<bool> g_force_baseline_clones{false};
inline bool avx2_clones() {
#if MEND_HAS_AVX2_CLONES
  static const bool has = __builtin_cpu_supports("avx2");
  return has && !g_force_baseline_clones.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// exp(x) for x <= 0 (softmax arguments after subtracting the row max): ~1 ulp, 0 below -87 (and for
// NaN). The clamp and the cut-off are bit masks, not selects: with the default -ftrapping-math, gcc
// will not if-convert float selects here and would leave the loop scalar.
inline __attribute__((always_inline)) float exp_neg(float x) {
  const int32_t keep = -(int32_t)(x >= -87.f);  // all ones where x >= -87, else 0
  const float lo = -87.f;
  int32_t xb, lb;
  std::memcpy(&xb, &x, sizeof xb);
  std::memcpy(&lb, &lo, sizeof lb);
  xb = (xb & keep) | (lb & ~keep);
  float xc;
  std::memcpy(&xc, &xb, sizeof xc);
  const float tt = xc * 1.44269504088896341f;
  const float n = (tt + 12582912.f) - 12582912.f;  // round to nearest (|tt| < 2^22)
  float r = xc - n * 0.693359375f;                 // Cody-Waite: ln2 in two parts
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;                      // Cephes expf polynomial on [-ln2/2, ln2/2]
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (((int32_t)n + 127) << 23) & keep;  // 2^n, n in [-126, 0]; 0 when cut off
  float pow2;
  std::memcpy(&pow2, &bits, sizeof pow2);
  return p * pow2;
}

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2|u|) in (0, 1]: absolute error ~1e-7.
inline __attribute__((always_inline)) float tanh_fast(float u) {
  uint32_t ub;
  std::memcpy(&ub, &u, sizeof ub);
  const uint32_t sign = ub & 0x80000000u;
  uint32_t ab = ub & 0x7fffffffu;
  float a;
  std::memcpy(&a, &ab, sizeof a);
  const float e = exp_neg(-2.0f * a);
  float t = (1.0f - e) / (1.0f + e);
  uint32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  tb |= sign;
  std::memcpy(&t, &tb, sizeof t);
  return t;
}

}  // namespace mend
