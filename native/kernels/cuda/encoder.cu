// encoder.cu — CUDA twin of kernels/cpu/encoder.cc (token + position embedding).
// encoder_positions: pos (B,T) =, n_real (B) =
// encoder_forward:   out (B,T,C) =
// encoder_backward:  dwte (V,C) +=, dwpe (maxT,C) +=  (atomic adds: ids repeat, so the order of the
//                    additions, and the last bits of the sums, vary from run to run)
#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

// one thread per row: a running count over T (T is at most n_positions)
__global__ void positions_kernel(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  int c = 0;
  for (int t = 0; t < T; t++) {
    c += (mask ? mask[(size_t)b * T + t] : 1) != 0;
    pos[(size_t)b * T + t] = c > 1 ? c - 1 : 0;
  }
  if (n_real) n_real[b] = c;
}

__global__ void encoder_forward_kernel(float* out, const int32_t* ids, const int32_t* pos, const float* wte,
                                       const float* wpe, int T, int C, int pos0, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C;
    const int c = (int)(i % C);
    const int p = pos ? pos[r] : pos0 + (int)(r % T);
    out[i] = wte[(int64_t)ids[r] * C + c] + wpe[(int64_t)p * C + c];
  }
}

__global__ void encoder_backward_kernel(float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                                        const int32_t* pos, int T, int C, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / C;
    const int c = (int)(i % C);
    const float d = dout[i];
    if (dwte) atomicAdd(dwte + (int64_t)ids[r] * C + c, d);
    if (dwpe) atomicAdd(dwpe + (int64_t)(pos ? pos[r] : (int)(r % T)) * C + c, d);
  }
}

}  // namespace

void encoder_positions(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T) {
  if (B <= 0) return;
  positions_kernel<<<(B + 127) / 128, 128, 0, stream()>>>(pos, n_real, mask, B, T);
}

void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe, int B,
                     int T, int C, int pos0) {
  const int64_t n = (int64_t)B * T * C;
  if (n <= 0) return;
  encoder_forward_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, ids, pos, wte, wpe, T, C, pos0, n);
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, const int32_t* pos, int B, int T,
                      int C) {
  const int64_t n = (int64_t)B * T * C;
  if (n <= 0 || (!dwte && !dwpe)) return;
  encoder_backward_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(dwte, dwpe, dout, ids, pos, T, C, n);
}

}  // namespace cuda
}  // namespace mend
