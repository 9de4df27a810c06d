// gemm.cu — C(M,N) = alpha · op(A)(M,K) · op(B)(K,N) + beta · C, row-major, fp32 (kernels.h's gemm).
// Our own tiled kernel rather than cuBLAS: this build machine's CUDA has no cuBLAS headers, so cuBLAS
// would mean dlopen with hand-declared entry points and a run-time dependency; this kernel needs
// nothing but cudart and is exact fp32 FMA (no TF32). Each block computes a 64×64 tile of C with 256
// threads, 4×4 outputs per thread, stepping K by 16 through shared memory; the tile loads are
// coalesced along whichever dimension is contiguous for that transpose. Speed is well below
// cuBLAS's (no tensor cores, no double buffering): measure it on the device (bench/, the op test's
// timing line) before relying on it for GPT-2 XL.
// beta == 0: C is not read (NaN-safe overwrite), as on the CPU.
#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;

template <bool TA, bool TB>
__global__ void __launch_bounds__(kThreads) gemm_kernel(int M, int N, int K, float alpha, const float* __restrict__ A,
                                                        int lda, const float* __restrict__ B, int ldb, float beta,
                                                        float* __restrict__ C, int ldc) {
  __shared__ float As[kBK][kBM + 4];  // As[k][m] = op(A)(m0+m, k0+k)
  __shared__ float Bs[kBK][kBN + 4];  // Bs[k][n] = op(B)(k0+k, n0+n)
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int m0 = blockIdx.y * kBM, n0 = blockIdx.x * kBN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += kBK) {
#pragma unroll
    for (int l = 0; l < (kBM * kBK) / kThreads; l++) {
      const int e = tid + l * kThreads;
      // op(A)(m,k): A[m*lda+k], or A[k*lda+m] when transposed; consecutive threads walk the
      // contiguous index.
      const int mm = TA ? e % kBM : e / kBK, kk = TA ? e / kBM : e % kBK;
      const int m = m0 + mm, k = k0 + kk;
      float a = 0.f;
      if (m < M && k < K) a = TA ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
      As[kk][mm] = a;
    }
#pragma unroll
    for (int l = 0; l < (kBN * kBK) / kThreads; l++) {
      const int e = tid + l * kThreads;
      // op(B)(k,n): B[k*ldb+n], or B[n*ldb+k] when transposed
      const int nn = TB ? e / kBK : e % kBN, kk = TB ? e % kBK : e / kBN;
      const int n = n0 + nn, k = k0 + kk;
      float b = 0.f;
      if (n < N && k < K) b = TB ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
      Bs[kk][nn] = b;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int m = m0 + ty + 16 * i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int n = n0 + tx + 16 * j;
      if (n >= N) continue;
      float* c = C + (size_t)m * ldc + n;
      *c = beta == 0.f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *c;
    }
  }
}

// C (M,N) *= beta (beta == 0: = 0), for K == 0 where no product is taken
__global__ void scale_kernel(float* C, int M, int N, int ldc, float beta) {
  const int64_t n = (int64_t)M * N;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float* c = C + (i / N) * (size_t)ldc + i % N;
    *c = beta == 0.f ? 0.f : beta * *c;
  }
}

}  // namespace

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || alpha == 0.f) {
    if (beta != 1.f) scale_kernel<<<grid_for((int64_t)M * N, 256), 256, 0, stream()>>>(C, M, N, ldc, beta);
    return;
  }
  const dim3 grid((N + kBN - 1) / kBN, (M + kBM - 1) / kBM);
  if (!transA && !transB) gemm_kernel<false, false><<<grid, kThreads, 0, stream()>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (!transA && transB) gemm_kernel<false, true><<<grid, kThreads, 0, stream()>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else if (transA && !transB) gemm_kernel<true, false><<<grid, kThreads, 0, stream()>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else gemm_kernel<true, true><<<grid, kThreads, 0, stream()>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* gemm_backend() { return "cuda-tiled-fp32"; }

}  // namespace cuda
}  // namespace mend
