// sampling.cc — the choice of the next token in generation (not differentiable: no backward).
// sample_forward: out (B) = one token per row that is not done, in row order:
//   temperature <= 0: the first maximum of the row (torch.argmax);
//   else a draw from softmax(logits / temperature) over the top_k largest logits (top_k <= 0 or
//   >= V: all), one rng->uniform() per drawn row, probabilities in double.
// Rows with done[r] != 0 are skipped: no draw, out[r] untouched.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/rng.h"

namespace mend {
namespace {

int32_t sample_row(const float* logits, int V, float temperature, int top_k, Rng* rng) {
  // logits (V)
  if (!(temperature > 0)) return (int32_t)(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(V);
  for (int i = 0; i < V; i++) idx[i] = i;
  const int k = (top_k > 0 && top_k < V) ? top_k : V;
  if (k < V)
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  float mx = -INFINITY;
  for (int i = 0; i < k; i++) mx = std::max(mx, logits[idx[i]]);
  std::vector<double> p(k);
  double sum = 0;
  for (int i = 0; i < k; i++) { p[i] = std::exp((double)(logits[idx[i]] - mx) / temperature); sum += p[i]; }
  double u = rng->uniform() * sum;
  for (int i = 0; i < k; i++) { u -= p[i]; if (u <= 0) return idx[i]; }
  return idx[k - 1];
}

}  // namespace

void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature,
                    int top_k, Rng* rng) {
  // out (B), logits (B,V), done (B) or null
  for (int r = 0; r < B; r++)
    if (!done || !done[r]) out[r] = sample_row(logits + (size_t)r * V, V, temperature, top_k, rng);
}

}  // namespace mend
