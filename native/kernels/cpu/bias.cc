// bias.cc — adding a bias row vector to every row (Conv1D / Linear bias).
// bias_forward:  out (N,C) += bias (C)
// bias_backward: dbias (C) += sum over the N rows of dout (N,C)
#include <cstdint>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

void bias_forward(float* out, const float* bias, int N, int C) {
  // out (N,C), bias (C)
  const int64_t grain = C >= 8192 ? 1 : 8192 / (C > 0 ? C : 1);
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      float* __restrict o = out + n * C;  // (C)
      const float* __restrict b = bias;   // (C)
      for (int c = 0; c < C; c++) o[c] += b[c];
    }
  }, grain);
}

void bias_backward(float* dbias, const float* dout, int N, int C) {
  // dbias (C), dout (N,C); each thread owns a chunk of columns, so no two threads write one element
  auto body = [&](int64_t c0, int64_t c1) {
    float* __restrict db = dbias;
    for (int64_t n = 0; n < N; n++) {
      const float* __restrict d = dout + n * C;  // (C)
      for (int64_t c = c0; c < c1; c++) db[c] += d[c];
    }
  };
  if ((int64_t)N * C < (1 << 15)) body(0, C);
  else parallel_for(C, body, 64);
}

}  // namespace mend
