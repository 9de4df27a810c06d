// gelu.cc — GELU, tanh approximation (Hugging Face "gelu_new"):
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// gelu_forward:  out (N) =        (out may alias inp)
// gelu_backward: dinp (N) =       (dinp may alias dout; the exact derivative of the formula above)
// bias_gelu_rows: a GEMM epilogue block (c += bias, then g = gelu(c)), on the calling thread
// tanh is vec_math.h's tanh_fast (vectorised; absolute error ~1e-7, std::tanh is a scalar call).
// Each kernel has an AVX2 clone (vec_math.h), bit-identical to the baseline code.
#include <cstdint>

#include "kernels/kernels.h"
#include "kernels/cpu/vec_math.h"
#include "core/threadpool.h"

namespace mend {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;
constexpr int64_t kGrain = 1 << 14;

inline __attribute__((always_inline)) float gelu1(float x) {
  const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
  return 0.5f * x * (1.0f + tanh_fast(u));
}

inline __attribute__((always_inline)) void gelu_rows_impl(float* out, const float* inp, int64_t n) {
  for (int64_t i = 0; i < n; i++) out[i] = gelu1(inp[i]);
}
void gelu_rows_base(float* out, const float* inp, int64_t n) { gelu_rows_impl(out, inp, n); }
MEND_AVX2_NOFMA void gelu_rows_avx2(float* out, const float* inp, int64_t n) { gelu_rows_impl(out, inp, n); }

inline __attribute__((always_inline)) void bias_gelu_impl(float* c, int64_t ldc, const float* bias, float* g, int64_t ldg,
                                                           int m, int n) {
  for (int i = 0; i < m; i++) {
    float* __restrict cr = c + i * ldc;
    if (bias)
      for (int j = 0; j < n; j++) cr[j] += bias[j];
    if (g) gelu_rows_impl(g + i * ldg, cr, n);
  }
}
void bias_gelu_base(float* c, int64_t ldc, const float* bias, float* g, int64_t ldg, int m, int n) {
  bias_gelu_impl(c, ldc, bias, g, ldg, m, n);
}
MEND_AVX2_NOFMA void bias_gelu_avx2(float* c, int64_t ldc, const float* bias, float* g, int64_t ldg, int m, int n) {
  bias_gelu_impl(c, ldc, bias, g, ldg, m, n);
}
}  // namespace

void bias_gelu_rows(float* c, int64_t ldc, const float* bias, float* g, int64_t ldg, int m, int n) {
  if (avx2_clones()) bias_gelu_avx2(c, ldc, bias, g, ldg, m, n);
  else bias_gelu_base(c, ldc, bias, g, ldg, m, n);
}

void gelu_forward(float* out, const float* inp, int64_t N) {
  // out (N), inp (N); element-wise, so aliasing is harmless (each element is read before written)
  const auto rows = avx2_clones() ? gelu_rows_avx2 : gelu_rows_base;
  parallel_for(N, [&](int64_t i0, int64_t i1) { rows(out + i0, inp + i0, i1 - i0); }, kGrain);
}

namespace {
inline __attribute__((always_inline)) void gelu_backward_impl(float* dinp, const float* inp, const float* dout, int64_t i0,
                                                               int64_t i1) {
  for (int64_t i = i0; i < i1; i++) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
    const float th = tanh_fast(u);
    const float sech2 = 1.0f - th * th;
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * x * x);
    const float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * du;
    dinp[i] = dout[i] * g;
  }
}
void gelu_backward_base(float* dinp, const float* inp, const float* dout, int64_t i0, int64_t i1) {
  gelu_backward_impl(dinp, inp, dout, i0, i1);
}
MEND_AVX2_NOFMA void gelu_backward_avx2(float* dinp, const float* inp, const float* dout, int64_t i0, int64_t i1) {
  gelu_backward_impl(dinp, inp, dout, i0, i1);
}
}  // namespace

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) {
  // dinp (N), inp (N), dout (N)
  const auto body = avx2_clones() ? gelu_backward_avx2 : gelu_backward_base;
  parallel_for(N, [&](int64_t i0, int64_t i1) { body(dinp, inp, dout, i0, i1); }, kGrain);
}

}  // namespace mend
