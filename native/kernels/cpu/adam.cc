// adam.cc — one Adam/AdamW step (PyTorch torch.optim.AdamW, single-tensor path; weight_decay = 0 is
// plain Adam). param (n) =, m (n) =, v (n) = (updated in place); grad (n) is read.
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   param = param * (1 - lr*wd) - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^t
// which is param*(1-lr*wd) - lr*mhat/(sqrt(vhat)+eps) arranged as PyTorch evaluates it.
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t) {
  // param (n), grad (n), m (n), v (n)
  const double bc1 = 1.0 - std::pow((double)beta1, t);
  const double bc2 = 1.0 - std::pow((double)beta2, t);
  const float step_size = (float)(lr / bc1);
  const float inv_bc2_sqrt = (float)(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - lr * weight_decay;
  const float b1 = beta1, b2 = beta2, omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    float* __restrict p = param;
    const float* __restrict g = grad;
    float* __restrict mm = m;
    float* __restrict vv = v;
    for (int64_t i = i0; i < i1; i++) {
      const float gi = g[i];
      const float mi = b1 * mm[i] + omb1 * gi;
      const float vi = b2 * vv[i] + omb2 * gi * gi;
      mm[i] = mi;
      vv[i] = vi;
      const float denom = std::sqrt(vi) * inv_bc2_sqrt + eps;
      p[i] = p[i] * decay - step_size * mi / denom;
    }
  }, 1 << 14);
}

}  // namespace mend
