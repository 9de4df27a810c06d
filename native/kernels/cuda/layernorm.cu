// layernorm.cu — CUDA twin of kernels/cpu/layernorm.cc (PyTorch semantics: biased variance, eps
// inside the square root). One block per row; the row statistics are two-pass, reduced in double.
// layernorm_forward:  out (N,C) =, mean (N) =, rstd (N) =  (mean/rstd may be null)
// layernorm_backward: dinp (N,C) +=, dweight (C) +=, dbias (C) +=  (each may be null)
#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, int C, float eps) {
  __shared__ double buf[32];
  const int64_t n = blockIdx.x;
  const float* x = inp + n * C;  // (C)
  float* o = out + n * C;        // (C)
  double s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) s += x[c];
  const float m = (float)(block_sum(s, buf) / C);
  double v = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) { const double d = (double)x[c] - m; v += d * d; }
  const double var = block_sum(v, buf) / C;
  const float r = (float)(1.0 / sqrt(var + (double)eps));
  for (int c = threadIdx.x; c < C; c += blockDim.x) o[c] = (x[c] - m) * r * weight[c] + bias[c];
  if (threadIdx.x == 0) {
    if (mean) mean[n] = m;
    if (rstd) rstd[n] = r;
  }
}

__global__ void layernorm_dinp_kernel(float* dinp, const float* dout, const float* inp, const float* weight,
                                      const float* mean, const float* rstd, int C) {
  __shared__ double buf[32];
  const int64_t n = blockIdx.x;
  const float* x = inp + n * C;
  const float* dy = dout + n * C;
  float* dx = dinp + n * C;
  const float m = mean[n], s = rstd[n];
  double s1 = 0, s2 = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const double dn = (double)weight[c] * dy[c];
    s1 += dn;
    s2 += dn * ((x[c] - m) * s);
  }
  const float mean_dn = (float)(block_sum(s1, buf) / C);
  const float mean_dnn = (float)(block_sum(s2, buf) / C);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float norm = (x[c] - m) * s;
    dx[c] += s * (weight[c] * dy[c] - mean_dn - norm * mean_dnn);
  }
}

// one thread per column, walking the rows (coalesced across the warp)
__global__ void layernorm_dparams_kernel(float* dweight, float* dbias, const float* dout, const float* inp,
                                         const float* mean, const float* rstd, int N, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float dw = 0.f, db = 0.f;
  for (int n = 0; n < N; n++) {
    const float dy = dout[(size_t)n * C + c];
    dw += (inp[(size_t)n * C + c] - mean[n]) * rstd[n] * dy;
    db += dy;
  }
  if (dweight) dweight[c] += dw;
  if (dbias) dbias[c] += db;
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps) {
  if (N <= 0) return;
  layernorm_forward_kernel<<<N, kThreads, 0, stream()>>>(out, mean, rstd, inp, weight, bias, C, eps);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
  if (N <= 0) return;
  if (dinp) layernorm_dinp_kernel<<<N, kThreads, 0, stream()>>>(dinp, dout, inp, weight, mean, rstd, C);
  if (dweight || dbias)
    layernorm_dparams_kernel<<<(C + 127) / 128, 128, 0, stream()>>>(dweight, dbias, dout, inp, mean, rstd, N, C);
}

}  // namespace cuda
}  // namespace mend
