// mend_layer.cu — CUDA twin of kernels/cpu/mend_layer.cc (the element-wise part of one MEND editor
// layer; its two low-rank products are gemm calls, as in mend/editor.cc).
// mend_layer_forward:  p (Ns,D) = p + bias, z (Ns,D) += act((p + bias) ⊙ scale[mode] + shift[mode])
// mend_layer_backward: dp (Ns,D) =, dbias (D) +=, dscale (n_modes,D) +=, dshift (n_modes,D) +=
// The backward's parameter sums run one thread per column over the rows in row order (a row's mode
// picks which dscale/dshift row it adds to), so they are deterministic like the CPU's.
#include "kernels/cuda/elementwise.cuh"

namespace mend {
namespace cuda {
namespace {

__global__ void mend_layer_dp_kernel(float* dp, const float* dz, const float* p, const float* scale, const float* shift,
                                     const int32_t* mode, int D, int64_t n, bool clamp) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / D;
    const int k = (int)(e % D);
    const size_t mk = (size_t)mode[i] * D + k;
    const float pre = p[e] * scale[mk] + shift[mk];
    const float da = (!clamp || pre >= 0) ? dz[e] : 0.0f;
    dp[e] = da * scale[mk];
  }
}

__global__ void mend_layer_dparams_kernel(float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                                          const float* scale, const float* shift, const int32_t* mode, int Ns, int D,
                                          bool clamp) {
  const int k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= D) return;
  float db = 0.f;
  for (int i = 0; i < Ns; i++) {
    const size_t mk = (size_t)mode[i] * D + k;
    const size_t e = (size_t)i * D + k;
    const float pre = p[e] * scale[mk] + shift[mk];
    const float da = (!clamp || pre >= 0) ? dz[e] : 0.0f;
    dshift[mk] += da;
    dscale[mk] += da * p[e];
    db += da * scale[mk];
  }
  dbias[k] += db;
}

}  // namespace

void mend_layer_forward(float* z, float* p, const float* bias, const float* scale, const float* shift,
                        const int32_t* mode, int Ns, int D, bool clamp) {
  for_each((int64_t)Ns * D, [=] __device__(int64_t e) {
    const int64_t i = e / D;
    const int k = (int)(e % D);
    const size_t mk = (size_t)mode[i] * D + k;
    const float pe = p[e] + bias[k];
    p[e] = pe;
    const float a = pe * scale[mk] + shift[mk];
    z[e] += clamp ? (a > 0 ? a : 0.0f) : a;
  });
}

void mend_layer_backward(float* dp, float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                         const float* scale, const float* shift, const int32_t* mode, int Ns, int D, bool clamp) {
  const int64_t n = (int64_t)Ns * D;
  if (n <= 0) return;
  // the parameter sums read dz before dp is written, so dp may alias dz as on the CPU
  mend_layer_dparams_kernel<<<(D + 127) / 128, 128, 0, stream()>>>(dbias, dscale, dshift, dz, p, scale, shift, mode, Ns,
                                                                  D, clamp);
  mend_layer_dp_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(dp, dz, p, scale, shift, mode, D, n, clamp);
}

}  // namespace cuda
}  // namespace mend
