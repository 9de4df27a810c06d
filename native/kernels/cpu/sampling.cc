// sampling.cc — the choice of the next token in generation (not differentiable: no backward).
// sample_forward: out (B) = one token per row that is not done, in row order:
//   temperature <= 0: the first maximum of the row (torch.argmax);
//   else a draw from softmax(logits / temperature) over the top_k largest logits (top_k <= 0 or
//   >= V: all), then, with top_p < 1, over the smallest set of the most likely of those whose
//   probability reaches top_p (nucleus; the most likely token always stays), one rng->uniform() per
//   drawn row, probabilities in double.
// Rows with done[r] != 0 are skipped: no draw, out[r] untouched.
// repetition_penalty_forward: logits (B,V) +=-in-place, Hugging Face's RepetitionPenaltyLogitsProcessor:
//   every token that occurs in row r's ids[0, T) where mask != 0 has its logit divided by penalty
//   when positive, multiplied by it when negative.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/rng.h"

namespace mend {
namespace {

int32_t sample_row(const float* logits, int V, float temperature, int top_k, float top_p, Rng* rng) {
  // logits (V)
  if (!(temperature > 0)) return (int32_t)(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  for (int i = 0; i < V; i++) idx[i] = i;
  int k = (top_k > 0 && top_k < V) ? top_k : V;
  const bool nucleus = top_p < 1.0f;
  if (k < V)
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  else if (nucleus)  // ties by index, so the nucleus is deterministic
    std::sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  float mx = -INFINITY;
  for (int i = 0; i < k; i++) mx = std::max(mx, logits[idx[i]]);
  std::vector<double> p(k);
  double sum = 0;
  for (int i = 0; i < k; i++) { p[i] = std::exp((double)(logits[idx[i]] - mx) / temperature); sum += p[i]; }
  if (nucleus) {  // idx is sorted by probability: keep the head whose mass reaches top_p
    double cum = 0;
    int m = 0;
    while (m < k && (m == 0 || cum < top_p * sum)) cum += p[m++];
    k = m;
    sum = cum;
  }
  double u = rng->uniform() * sum;
  for (int i = 0; i < k; i++) { u -= p[i]; if (u <= 0) return idx[i]; }
  return idx[k - 1];
}

}  // namespace

void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature,
                    int top_k, float top_p, Rng* rng) {
  // out (B), logits (B,V), done (B) or null
  for (int r = 0; r < B; r++)
    if (!done || !done[r]) out[r] = sample_row(logits + (size_t)r * V, V, temperature, top_k, top_p, rng);
}

void repetition_penalty_forward(float* logits, const int32_t* ids, const int32_t* mask, int B, int T, int stride,
                                int V, float penalty) {
  // logits (B,V), ids and mask (B, stride) of which the first T columns count
  std::vector<uint8_t> seen(V);
  for (int r = 0; r < B; r++) {
    std::fill(seen.begin(), seen.end(), 0);
    float* l = logits + (size_t)r * V;
    for (int t = 0; t < T; t++) {
      const int32_t tok = ids[(size_t)r * stride + t];
      if ((mask && !mask[(size_t)r * stride + t]) || tok < 0 || tok >= V || seen[tok]) continue;
      seen[tok] = 1;
      l[tok] = l[tok] > 0 ? l[tok] / penalty : l[tok] * penalty;
    }
  }
}

}  // namespace mend
