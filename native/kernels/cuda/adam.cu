// adam.cu — CUDA twin of kernels/cpu/adam.cc: one Adam/AdamW step (PyTorch AdamW, single-tensor
// path), param (n) =, m (n) =, v (n) = in place; the bias corrections are computed on the host in
// double exactly as on the CPU.
#include <cmath>

#include "kernels/cuda/elementwise.cuh"

namespace mend {
namespace cuda {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int t) {
  const double bc1 = 1.0 - std::pow((double)beta1, t);
  const double bc2 = 1.0 - std::pow((double)beta2, t);
  const float step_size = (float)(lr / bc1);
  const float inv_bc2_sqrt = (float)(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  const float b1 = beta1, b2 = beta2, omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
  for_each(n, [=] __device__(int64_t i) {
    const float gi = grad[i];
    const float mi = b1 * m[i] + omb1 * gi;
    const float vi = b2 * v[i] + omb2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) * inv_bc2_sqrt + eps;
    param[i] = param[i] * decay - step_size * mi / denom;
  });
}

}  // namespace cuda
}  // namespace mend
