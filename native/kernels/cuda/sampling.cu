// sampling.cu — CUDA twin of kernels/cpu/sampling.cc (the next token; not differentiable).
// sample_forward: out (B) = for rows with done == 0: the first maximum (temperature <= 0) by a block
//   argmax on the device; a draw (temperature > 0) copies logits and done to the host and runs the
//   CPU sampler there, so a seed gives the same tokens on both backends (B·V floats per step: for
//   GPT-2, 200 KB per row, small next to a forward).
// repetition_penalty_forward: logits (B,V) in place; one thread per row walks its ids in order, so a
//   repeated token is penalised once, as on the CPU (a token is "seen" once its logit was changed).
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/kernels.h"

namespace mend {
namespace cuda {
namespace {

__global__ void argmax_kernel(int32_t* out, const float* logits, const uint8_t* done, int V) {
  __shared__ float bv[256];
  __shared__ int bi[256];
  const int r = blockIdx.x;
  if (done && done[r]) return;
  const float* x = logits + (int64_t)r * V;
  float best = -INFINITY;
  int idx = V;  // none yet
  for (int i = threadIdx.x; i < V; i += blockDim.x)
    if (x[i] > best || idx == V) { best = x[i]; idx = i; }  // strided: the first maximum of this thread's
  bv[threadIdx.x] = best;
  bi[threadIdx.x] = idx;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = bv[threadIdx.x + s];
      const int oi = bi[threadIdx.x + s];
      if (ov > bv[threadIdx.x] || (ov == bv[threadIdx.x] && oi < bi[threadIdx.x])) { bv[threadIdx.x] = ov; bi[threadIdx.x] = oi; }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[r] = bi[0] < V ? bi[0] : 0;
}

__global__ void repetition_penalty_kernel(float* logits, const int32_t* ids, const int32_t* mask, int B, int T,
                                          int stride, int V, float penalty) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= B) return;
  float* l = logits + (int64_t)r * V;
  for (int t = 0; t < T; t++) {
    const int32_t tok = ids[(int64_t)r * stride + t];
    if ((mask && !mask[(int64_t)r * stride + t]) || tok < 0 || tok >= V) continue;
    bool seen = false;  // an earlier counted occurrence of tok in this row
    for (int u = 0; u < t && !seen; u++)
      seen = ids[(int64_t)r * stride + u] == tok && !(mask && !mask[(int64_t)r * stride + u]);
    if (seen) continue;
    l[tok] = l[tok] > 0 ? l[tok] / penalty : l[tok] * penalty;
  }
}

}  // namespace

void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature, int top_k,
                    float top_p, Rng* rng) {
  if (B <= 0) return;
  if (!(temperature > 0)) {
    argmax_kernel<<<B, 256, 0, stream()>>>(out, logits, done, V);
    return;
  }
  std::vector<float> hl((size_t)B * V);
  std::vector<uint8_t> hd(done ? B : 0);
  std::vector<int32_t> ho(B);
  if (!copy_to_host(hl.data(), logits, hl.size() * sizeof(float)).ok()) return;
  if (done && !copy_to_host(hd.data(), done, B).ok()) return;
  if (!copy_to_host(ho.data(), out, B * sizeof(int32_t)).ok()) return;  // rows that are done keep their value
  mend::sample_forward(ho.data(), hl.data(), done ? hd.data() : nullptr, B, V, temperature, top_k, top_p, rng);
  copy_to_device(out, ho.data(), B * sizeof(int32_t));
}

void repetition_penalty_forward(float* logits, const int32_t* ids, const int32_t* mask, int B, int T, int stride, int V,
                                float penalty) {
  if (B <= 0) return;
  repetition_penalty_kernel<<<(B + 63) / 64, 64, 0, stream()>>>(logits, ids, mask, B, T, stride, V, penalty);
}

}  // namespace cuda
}  // namespace mend
