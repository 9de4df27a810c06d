// elementwise.cuh — the grid-stride loop the element-wise ops (residual, gelu, adam, …) share.
#pragma once
#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {

template <typename F>
__global__ void for_each_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) f(i);
}

// f(i) for i in [0, n) on the device; f is a __device__ lambda (nvcc --extended-lambda)
template <typename F>
void for_each(int64_t n, F f) {
  if (n <= 0) return;
  for_each_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(n, f);
}

}  // namespace cuda
}  // namespace mend
