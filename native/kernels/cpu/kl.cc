// kl.cc — the MEND locality loss: KL(softmax(target) ‖ softmax(logits)) per row, where target is the
// unedited model's logits, averaged over the rows with mask != 0 (every row without a mask).
// kl_forward:  lse (N,2) = the log-normalisers log Σ exp of logits and of target (saved for
//              backward); *loss = mean KL (accumulated in double; NaN when no row counts); returns
//              the number of rows that count
// kl_backward: dlogits (N,V) = (softmax(logits) - softmax(target)) / count, 0 on masked rows;
//              dlogits may alias logits (each element is read before it is written)
// Everything is evaluated in double from the float inputs, row by row.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

int kl_forward(float* loss, double* lse, const float* logits, const float* target, const int32_t* mask, int N, int V) {
  // loss (1), lse (N,2), logits (N,V), target (N,V), mask (N) or null
  int count = 0;
  for (int i = 0; i < N; i++) count += mask ? (mask[i] != 0) : 1;
  std::vector<double> kl(N, 0.0);
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      if (mask && !mask[i]) continue;
      const float* l = logits + (size_t)i * V;  // (V)
      const float* t = target + (size_t)i * V;  // (V)
      const float ml = *std::max_element(l, l + V), mt = *std::max_element(t, t + V);
      double sl = 0, st = 0;
      for (int j = 0; j < V; j++) { sl += std::exp((double)l[j] - ml); st += std::exp((double)t[j] - mt); }
      const double lsl = std::log(sl) + ml, lst = std::log(st) + mt;
      lse[2 * i] = lsl;
      lse[2 * i + 1] = lst;
      double acc = 0;
      for (int j = 0; j < V; j++) {
        const double lp = t[j] - lst, lq = l[j] - lsl;
        acc += std::exp(lp) * (lp - lq);
      }
      kl[i] = acc;
    }
  });
  double sum = 0;
  for (int i = 0; i < N; i++) sum += kl[i];
  *loss = count > 0 ? (float)(sum / count) : NAN;
  return count;
}

void kl_backward(float* dlogits, const float* logits, const float* target, const double* lse, const int32_t* mask,
                 int count, int N, int V) {
  // dlogits (N,V), logits (N,V), target (N,V), lse (N,2) from kl_forward, mask (N) or null
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      float* d = dlogits + (size_t)i * V;       // (V)
      if (mask && !mask[i]) { std::fill(d, d + V, 0.0f); continue; }
      const float* l = logits + (size_t)i * V;  // (V)
      const float* t = target + (size_t)i * V;  // (V)
      const double lsl = lse[2 * i], lst = lse[2 * i + 1];
      for (int j = 0; j < V; j++) {
        const double lp = t[j] - lst, lq = l[j] - lsl;
        d[j] = (float)((std::exp(lq) - std::exp(lp)) / count);
      }
    }
  });
}

}  // namespace mend
