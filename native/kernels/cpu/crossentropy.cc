// crossentropy.cc — softmax cross-entropy over the vocabulary, ignore index -100 (PyTorch
// F.cross_entropy with reduction='none'; the caller applies the mean).
// crossentropy_forward:  losses (N) =, returns the number of rows whose target is not ignored
// crossentropy_backward: dlogits (N,V) = (softmax - onehot) * scale; 0 rows where ignored;
//                        dlogits may alias logits (in place)
// Rows are V = 50257 wide, so exp dominates: exp_neg below is a branch-free Cephes-style expf that
// -O3 vectorises (std::exp would be a scalar libm call per element). Sums are taken in float lanes
// per block of 1024 and combined in double.
// A target outside [0, V) other than -100 is the caller's error; it is treated as ignored here
// instead of being read out of bounds.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/kernels.h"
#include "kernels/cpu/vec_math.h"
#include "core/threadpool.h"

namespace mend {
namespace {

constexpr int kLanes = 16;
constexpr int kBlock = 1024;
constexpr int32_t kIgnore = -100;

// max of x (n); independent lanes for ILP (gcc does not vectorise float max reductions without
// -ffinite-math-only, and this pass is cheap next to the exp pass anyway)
inline float row_max(const float* __restrict x, int n) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; l++) acc[l] = -std::numeric_limits<float>::infinity();
  int i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; l++) { const float a = acc[l], b = x[i + l]; acc[l] = b > a ? b : a; }
  float m = acc[0];
  for (int l = 1; l < kLanes; l++) m = acc[l] > m ? acc[l] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

// sum of exp(x - mx) over x (n)
inline double row_sumexp(const float* __restrict x, float mx, int n) {
  double total = 0;
  for (int b0 = 0; b0 < n; b0 += kBlock) {
    const int b1 = std::min(n, b0 + kBlock);
    float acc[kLanes] = {0};
    int i = b0;
    for (; i + kLanes <= b1; i += kLanes)
      for (int l = 0; l < kLanes; l++) acc[l] += exp_neg(x[i + l] - mx);
    double s = 0;
    for (int l = 0; l < kLanes; l++) s += acc[l];
    for (; i < b1; i++) s += exp_neg(x[i] - mx);
    total += s;
  }
  return total;
}

// d (n) = exp(x - mx) * f, for d and x distinct
inline void row_scaled_exp(float* __restrict d, const float* __restrict x, float mx, float f, int n) {
  for (int i = 0; i < n; i++) d[i] = exp_neg(x[i] - mx) * f;
}
// d (n) = exp(d - mx) * f, in place
inline void row_scaled_exp_inplace(float* d, float mx, float f, int n) {
  for (int i = 0; i < n; i++) d[i] = exp_neg(d[i] - mx) * f;
}

inline bool valid_target(int32_t t, int V) { return t >= 0 && t < V; }

}  // namespace

int crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V) {
  // losses (N), logits (N,V), targets (N)
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max(V, 1));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      const int32_t tgt = targets[n];
      if (!valid_target(tgt, V)) { losses[n] = 0.f; continue; }
      const float* x = logits + n * V;  // (V)
      const float mx = row_max(x, V);
      const double lse = std::log(row_sumexp(x, mx, V)) + mx;
      losses[n] = (float)(lse - x[tgt]);
    }
  }, grain);
  int count = 0;
  for (int n = 0; n < N; n++) count += valid_target(targets[n], V) ? 1 : 0;
  return count;
}

void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets, float scale,
                           int N, int V) {
  // dlogits (N,V) (may be logits itself), logits (N,V), targets (N)
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max(V, 1));
  parallel_for(N, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; n++) {
      float* d = dlogits + n * V;       // (V)
      const float* x = logits + n * V;  // (V)
      const int32_t tgt = targets[n];
      if (!valid_target(tgt, V)) { std::memset(d, 0, sizeof(float) * (size_t)V); continue; }
      const float mx = row_max(x, V);
      const float f = (float)(scale / row_sumexp(x, mx, V));
      if (d == x) row_scaled_exp_inplace(d, mx, f, V);
      else row_scaled_exp(d, x, mx, f, V);
      d[tgt] -= scale;
    }
  }, grain);
}

}  // namespace mend
