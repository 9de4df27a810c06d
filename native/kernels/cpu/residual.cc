// residual.cc — the residual connections of a transformer block.
// residual_forward: out (N) = inp1 (N) + inp2 (N); out may alias either input.
// There is no residual_backward: the gradient of a sum is the identity on both inputs, so the model
// keeps the residual stream's gradient in one buffer that both branches read and add into.
#include <cstdint>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N) {
  // out (N), inp1 (N), inp2 (N); element-wise, so aliasing is harmless
  parallel_for(N, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) out[i] = inp1[i] + inp2[i];
  }, 4096);
}

}  // namespace mend
