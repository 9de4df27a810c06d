// layernorm.cc — LayerNorm over the last dimension (PyTorch semantics: biased variance, eps inside
// the square root).
// layernorm_forward:  out (N,C) =, mean (N) =, rstd (N) =  (mean/rstd may be null in inference)
// layernorm_backward: dinp (N,C) +=, dweight (C) +=, dbias (C) +=  (each may be null)
// Row statistics are two-pass in float with 16 independent lanes (so -O3 vectorises the sums without
// -ffast-math) and the lanes are combined in double.
#include <cmath>
#include <cstdint>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {
namespace {

constexpr int kLanes = 16;

// sum of x (n)
inline double lane_sum(const float* __restrict x, int n) {
  float acc[kLanes] = {0};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) acc[l] += x[i + l];
  double s = 0;
  for (int l = 0; l < kLanes; l++) s += acc[l];
  for (; i < n; i++) s += x[i];
  return s;
}

// sum of (x - m)^2 over x (n)
inline double lane_sqdev(const float* __restrict x, float m, int n) {
  float acc[kLanes] = {0};
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) { float d = x[i + l] - m; acc[l] += d * d; }
  double s = 0;
  for (int l = 0; l < kLanes; l++) s += acc[l];
  for (; i < n; i++) { double d = (double)x[i] - m; s += d * d; }
  return s;
}

inline int64_t row_grain(int C) { return C >= 8192 ? 1 : 8192 / (C > 0 ? C : 1); }

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps) {
  // out (N,C), mean (N) or null, rstd (N) or null, inp (N,C), weight (C), bias (C)
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const float* __restrict x = inp + n * C;  // (C)
      float* __restrict o = out + n * C;        // (C)
      const float m = (float)(lane_sum(x, C) / C);
      const double var = lane_sqdev(x, m, C) / C;  // biased, as PyTorch
      const float s = (float)(1.0 / std::sqrt(var + (double)eps));
      const float* __restrict w = weight;
      const float* __restrict b = bias;
      for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
      if (mean) mean[n] = m;
      if (rstd) rstd[n] = s;
    }
  }, row_grain(C));
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
  // dinp (N,C) or null, dweight (C) or null, dbias (C) or null, dout (N,C), inp (N,C), weight (C),
  // mean (N), rstd (N)
  if (dinp) {
    // dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = weight * dout
    parallel_for(N, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; n++) {
        const float* __restrict x = inp + n * C;    // (C)
        const float* __restrict dy = dout + n * C;  // (C)
        float* __restrict dx = dinp + n * C;        // (C)
        const float* __restrict w = weight;         // (C)
        const float m = mean[n], s = rstd[n];
        float acc1[kLanes] = {0}, acc2[kLanes] = {0};
        int c = 0;
        for (; c + kLanes <= C; c += kLanes)
          for (int l = 0; l < kLanes; l++) {
            float dn = w[c + l] * dy[c + l];
            acc1[l] += dn;
            acc2[l] += dn * (x[c + l] - m) * s;
          }
        double sum1 = 0, sum2 = 0;
        for (int l = 0; l < kLanes; l++) { sum1 += acc1[l]; sum2 += acc2[l]; }
        for (; c < C; c++) {
          double dn = (double)w[c] * dy[c];
          sum1 += dn;
          sum2 += dn * ((x[c] - m) * s);
        }
        const float mean_dn = (float)(sum1 / C), mean_dnn = (float)(sum2 / C);
        for (int k = 0; k < C; k++) {
          float norm = (x[k] - m) * s;
          dx[k] += s * (w[k] * dy[k] - mean_dn - norm * mean_dnn);
        }
      }
    }, row_grain(C));
  }
  if (dweight || dbias) {
    // Column chunks: each thread owns dweight[c0,c1) / dbias[c0,c1) and walks every row.
    auto body = [&](int64_t c0, int64_t c1) {
      for (int64_t n = 0; n < N; n++) {
        const float* __restrict x = inp + n * C;    // (C)
        const float* __restrict dy = dout + n * C;  // (C)
        const float m = mean[n], s = rstd[n];
        if (dweight) {
          float* __restrict dw = dweight;
          for (int64_t c = c0; c < c1; c++) dw[c] += (x[c] - m) * s * dy[c];
        }
        if (dbias) {
          float* __restrict db = dbias;
          for (int64_t c = c0; c < c1; c++) db[c] += dy[c];
        }
      }
    };
    if ((int64_t)N * C < (1 << 15)) body(0, C);
    else parallel_for(C, body, 64);
  }
}

}  // namespace mend
