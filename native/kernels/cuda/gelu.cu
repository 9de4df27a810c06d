// gelu.cu — CUDA twin of kernels/cpu/gelu.cc (tanh approximation, Hugging Face "gelu_new").
// gelu_forward:  out (N) =   (may alias inp)
// gelu_backward: dinp (N) =  (may alias dout)
// tanhf here, the CPU's tanh_fast there: they differ by ~1e-7 absolute.
#include "kernels/cuda/elementwise.cuh"

namespace mend {
namespace cuda {
namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoeff = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* inp, int64_t N) {
  for_each(N, [=] __device__(int64_t i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
    out[i] = 0.5f * x * (1.0f + tanhf(u));
  });
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) {
  for_each(N, [=] __device__(int64_t i) {
    const float x = inp[i];
    const float u = kSqrt2OverPi * (x + kCoeff * x * x * x);
    const float th = tanhf(u);
    const float sech2 = 1.0f - th * th;
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kCoeff * x * x);
    dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
  });
}

}  // namespace cuda
}  // namespace mend
