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
}  // namespace

void gelu_forward(float* out, const float* inp, int64_t N) {
  // out (N), inp (N); element-wise, so aliasing is harmless (each element is read before written)
  parallel_for(N, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float x = inp[i];
      const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
      out[i] = 0.5f * x * (1.0f + tanh_fast(u));
    }
  }, kGrain);
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) {
  // dinp (N), inp (N), dout (N)
  parallel_for(N, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float x = inp[i];
      const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
      const float th = tanh_fast(u);
      const float sech2 = 1.0f - th * th;
      const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * x * x);
      const float g = 0.5f * (1.0f + th) + 0.5f * x * sech2 * du;
      dinp[i] = dout[i] * g;
    }
  }, kGrain);
}

}  // namespace mend
