// bias.cu — CUDA twin of kernels/cpu/bias.cc.
// bias_forward:  out (N,C) += bias (C)
// bias_backward: dbias (C) += sum over the N rows of dout (N,C)  (one thread per column)
#include "kernels/cuda/elementwise.cuh"

namespace mend {
namespace cuda {
namespace {

__global__ void bias_backward_kernel(float* dbias, const float* dout, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.f;
  for (int n = 0; n < N; n++) s += dout[(size_t)n * C + c];
  dbias[c] += s;
}

}  // namespace

void bias_forward(float* out, const float* bias, int N, int C) {
  for_each((int64_t)N * C, [=] __device__(int64_t i) { out[i] += bias[i % C]; });
}

void bias_backward(float* dbias, const float* dout, int N, int C) {
  if (C <= 0) return;
  bias_backward_kernel<<<(C + 127) / 128, 128, 0, stream()>>>(dbias, dout, N, C);
}

}  // namespace cuda
}  // namespace mend
