// gelu.cc — GELU, tanh approximation (Hugging Face "gelu_new"):
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// gelu_forward:  out (N) =        (out may alias inp)
// gelu_backward: dinp (N) =       (dinp may alias dout; the exact derivative of the formula above)
// tanh is vec_math.h's tanh_fast (vectorised; absolute error ~1e-7, std::tanh is a scalar call).
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
}  // namespace

void gelu_rows(float* out, const float* inp, int64_t n) {
  if (avx2_clones()) gelu_rows_avx2(out, inp, n);
  else gelu_rows_base(out, inp, n);
}

void gelu_forward(float* out, const float* inp, int64_t N) {
  // out (N), inp (N); element-wise, so aliasing is harmless (each element is read before written)
  parallel_for(N, [&](int64_t i0, int64_t i1) { gelu_rows(out + i0, inp + i0, i1 - i0); }, kGrain);
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
