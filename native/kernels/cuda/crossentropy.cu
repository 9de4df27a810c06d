// crossentropy.cu — CUDA twin of kernels/cpu/crossentropy.cc (softmax cross-entropy, ignore index
// -100; a target outside [0, V) counts as ignored). One block per row; sums in double.
// crossentropy_forward:  losses (N) =, returns the number of counted rows (a host int: this waits
//                        for the stream)
// crossentropy_backward: dlogits (N,V) = (softmax − onehot) · scale, 0 rows where ignored; may alias
//                        logits (every element is read by the reductions before any is written)
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// (max, log Σ exp(x − max)) of row x (V), to every thread
__device__ void row_lse(const float* x, int V, float* mx_out, double* lse_out) {
  __shared__ float fbuf[32];
  __shared__ double dbuf[32];
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, x[i]);
  mx = block_max(mx, fbuf, -INFINITY);
  double s = 0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(x[i] - mx);
  s = block_sum(s, dbuf);
  *mx_out = mx;
  *lse_out = log(s) + mx;
}

__global__ void crossentropy_forward_kernel(float* losses, int* count, const float* logits, const int32_t* targets,
                                            int V) {
  const int64_t n = blockIdx.x;
  const int32_t tgt = targets[n];
  if (tgt < 0 || tgt >= V) {
    if (threadIdx.x == 0) losses[n] = 0.f;
    return;
  }
  const float* x = logits + n * V;
  float mx;
  double lse;
  row_lse(x, V, &mx, &lse);
  if (threadIdx.x == 0) {
    losses[n] = (float)(lse - x[tgt]);
    atomicAdd(count, 1);
  }
}

__global__ void crossentropy_backward_kernel(float* dlogits, const float* logits, const int32_t* targets, float scale,
                                             int V) {
  const int64_t n = blockIdx.x;
  float* d = dlogits + n * V;
  const float* x = logits + n * V;
  const int32_t tgt = targets[n];
  if (tgt < 0 || tgt >= V) {
    for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.f;
    return;
  }
  float mx;
  double lse;
  row_lse(x, V, &mx, &lse);
  const float f = (float)(scale / exp(lse - mx));  // scale / Σ exp(x − max)
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float g = expf(x[i] - mx) * f;
    d[i] = i == tgt ? g - scale : g;
  }
}

}  // namespace

int crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V) {
  if (N <= 0) return 0;
  Scratch count(sizeof(int));
  if (!count.p) return 0;
  cudaMemsetAsync(count.p, 0, sizeof(int), stream());
  crossentropy_forward_kernel<<<N, kThreads, 0, stream()>>>(losses, count.as<int>(), logits, targets, V);
  int c = 0;
  cudaMemcpyAsync(&c, count.p, sizeof(int), cudaMemcpyDeviceToHost, stream());
  cudaStreamSynchronize(stream());
  return c;
}

void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets, float scale, int N, int V) {
  if (N <= 0) return;
  crossentropy_backward_kernel<<<N, kThreads, 0, stream()>>>(dlogits, logits, targets, scale, V);
}

}  // namespace cuda
}  // namespace mend
