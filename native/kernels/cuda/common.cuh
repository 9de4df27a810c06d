// common.cuh — what every CUDA kernel file shares: the stream, launch sizes, warp/block reductions
// and stream-ordered scratch memory. Included by .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/kernels_cuda.h"

namespace mend {
namespace cuda {

// Every launch goes to the calling host thread's default stream (see kernels_cuda.h).
inline cudaStream_t stream() { return cudaStreamPerThread; }

// Blocks for a grid-stride loop over n elements: enough to fill the device, never more than needed.
inline int grid_for(int64_t n, int threads) {
  const int64_t b = (n + threads - 1) / threads;
  return (int)std::max<int64_t>(1, std::min<int64_t>(b, 4096));
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum (or max) of v over the block, returned to every thread. blockDim.x a multiple of 32,
// at most 1024; `buf` is 32 values of shared memory. Ends with a barrier, so buf is reusable at once.
template <typename T>
__device__ T block_sum(T v, T* buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  T r = lane < nw ? buf[lane] : T(0);
  r = warp_sum(r);
  __syncthreads();
  return r;
}
template <typename T>
__device__ T block_max(T v, T* buf, T lowest) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  T r = lane < nw ? buf[lane] : lowest;
  r = warp_max(r);
  __syncthreads();
  return r;
}

// Stream-ordered scratch, freed when it goes out of scope (after the kernels queued before it).
struct Scratch {
  void* p = nullptr;
  explicit Scratch(size_t bytes) {
    if (cudaMallocAsync(&p, bytes ? bytes : 1, stream()) != cudaSuccess) p = nullptr;
  }
  ~Scratch() {
    if (p) cudaFreeAsync(p, stream());
  }
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

}  // namespace cuda
}  // namespace mend
