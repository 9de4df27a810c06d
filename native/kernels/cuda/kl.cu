// kl.cu — CUDA twin of kernels/cpu/kl.cc: KL(softmax(target) ‖ softmax(logits)) per row, averaged
// over the rows with mask != 0 (all rows without a mask), evaluated in double as on the CPU.
// kl_forward:  lse (N,2) =, *loss (a device float) = the mean (NaN when no row counts); returns the
//              count (a host int: this waits for the stream)
// kl_backward: dlogits (N,V) = (softmax(logits) − softmax(target)) / count, 0 on masked rows; may
//              alias logits
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void kl_rows_kernel(double* kl, double* lse, const float* logits, const float* target, const int32_t* mask,
                               int V) {
  __shared__ float fbuf[32];
  __shared__ double dbuf[32];
  const int64_t i = blockIdx.x;
  if (mask && !mask[i]) {
    if (threadIdx.x == 0) kl[i] = 0;
    return;
  }
  const float* l = logits + i * V;
  const float* t = target + i * V;
  float ml = -INFINITY, mt = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) { ml = fmaxf(ml, l[j]); mt = fmaxf(mt, t[j]); }
  ml = block_max(ml, fbuf, -INFINITY);
  mt = block_max(mt, fbuf, -INFINITY);
  double sl = 0, st = 0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) { sl += exp((double)l[j] - ml); st += exp((double)t[j] - mt); }
  sl = block_sum(sl, dbuf);
  st = block_sum(st, dbuf);
  const double lsl = log(sl) + ml, lst = log(st) + mt;
  double acc = 0;
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const double lp = t[j] - lst, lq = l[j] - lsl;
    acc += exp(lp) * (lp - lq);
  }
  acc = block_sum(acc, dbuf);
  if (threadIdx.x == 0) {
    kl[i] = acc;
    lse[2 * i] = lsl;
    lse[2 * i + 1] = lst;
  }
}

// one block: *loss = Σ kl / count, *count_out = count
__global__ void kl_mean_kernel(float* loss, int* count_out, const double* kl, const int32_t* mask, int N) {
  __shared__ double dbuf[32];
  double s = 0, c = 0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    s += kl[i];
    c += mask ? (mask[i] != 0) : 1;
  }
  s = block_sum(s, dbuf);
  c = block_sum(c, dbuf);
  if (threadIdx.x == 0) {
    *loss = c > 0 ? (float)(s / c) : NAN;
    *count_out = (int)c;
  }
}

__global__ void kl_backward_kernel(float* dlogits, const float* logits, const float* target, const double* lse,
                                   const int32_t* mask, int count, int V) {
  const int64_t i = blockIdx.x;
  float* d = dlogits + i * V;
  if (mask && !mask[i]) {
    for (int j = threadIdx.x; j < V; j += blockDim.x) d[j] = 0.f;
    return;
  }
  const float* l = logits + i * V;
  const float* t = target + i * V;
  const double lsl = lse[2 * i], lst = lse[2 * i + 1];
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    const double lp = t[j] - lst, lq = l[j] - lsl;
    d[j] = (float)((exp(lq) - exp(lp)) / count);
  }
}

}  // namespace

int kl_forward(float* loss, double* lse, const float* logits, const float* target, const int32_t* mask, int N, int V) {
  Scratch kl((size_t)(N > 0 ? N : 1) * sizeof(double) + sizeof(int));
  if (!kl.p) return 0;
  double* rows = kl.as<double>();
  int* count = reinterpret_cast<int*>(rows + (N > 0 ? N : 1));
  if (N > 0) kl_rows_kernel<<<N, kThreads, 0, stream()>>>(rows, lse, logits, target, mask, V);
  kl_mean_kernel<<<1, 256, 0, stream()>>>(loss, count, rows, mask, N);
  int c = 0;
  cudaMemcpyAsync(&c, count, sizeof(int), cudaMemcpyDeviceToHost, stream());
  cudaStreamSynchronize(stream());
  return c;
}

void kl_backward(float* dlogits, const float* logits, const float* target, const double* lse, const int32_t* mask,
                 int count, int N, int V) {
  if (N <= 0) return;
  kl_backward_kernel<<<N, kThreads, 0, stream()>>>(dlogits, logits, target, lse, mask, count, V);
}

}  // namespace cuda
}  // namespace mend
