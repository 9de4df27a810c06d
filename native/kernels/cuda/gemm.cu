// gemm.cu — C(M,N) = alpha · op(A)(M,K) · op(B)(K,N) + beta · C, row-major, fp32 (kernels.h's gemm).
// Two backends. The default is our own tiled kernel: it needs nothing but cudart and is plain fp32 FMA
// (no TF32). NODE_MEND_CUDA_GEMM=cublas uses cuBLAS instead, loaded at run time (dlopen of
// libcublas.so.N: this build machine's CUDA has no cuBLAS headers, so its entry points are declared
// here), with pedantic math (fp32, no TF32); absent, synchronize() says so. The op test checks and
// times both, to choose by measurement. Each block computes a 64×64 tile of C with 256
// threads, 4×4 outputs per thread, stepping K by 16 through shared memory; the tile loads are
// coalesced along whichever dimension is contiguous for that transpose. Speed is well below
// cuBLAS's (no tensor cores, no double buffering): measure it on the device (bench/, the op test's
// timing line) before relying on it for GPT-2 XL.
// beta == 0: C is not read (NaN-safe overwrite), as on the CPU.
#include <dlfcn.h>

#include <cstdlib>
#include <string>
#include <vector>

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

void gemm_tiled(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc) {
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

// ---- cuBLAS, loaded at run time ------------------------------------------------------------------
// The build machine has no cuBLAS headers, so the five entry points used are declared here with
// their C ABI (cublas_api.h: handles are pointers, enums are int, status 0 = success).
namespace {

using cublasCreate_t = int (*)(void**);
using cublasSetStream_t = int (*)(void*, cudaStream_t);
using cublasSetMathMode_t = int (*)(void*, int);
using cublasSgemm_t = int (*)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                              const float*, float*, int);
constexpr int kOpN = 0, kOpT = 1;        // CUBLAS_OP_N, CUBLAS_OP_T
constexpr int kPedanticMath = 2;         // CUBLAS_PEDANTIC_MATH: plain fp32, never TF32

struct Cublas {
  bool ok = false;
  std::string why;
  cublasCreate_t create = nullptr;
  cublasSetStream_t set_stream = nullptr;
  cublasSetMathMode_t set_math = nullptr;
  cublasSgemm_t sgemm = nullptr;
};

const Cublas& cublas() {
  static const Cublas lib = [] {
    Cublas c;
    std::vector<std::string> names;
    if (const char* p = std::getenv("NODE_MEND_CUBLAS")) names.push_back(p);
    for (const char* n : {"libcublas.so.13", "libcublas.so.12", "libcublas.so", "/usr/local/cuda/lib64/libcublas.so"})
      names.push_back(n);
    void* h = nullptr;
    std::string tried;
    for (const std::string& n : names) {
      h = dlopen(n.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (h) break;
      tried += (tried.empty() ? "" : ", ") + n;
    }
    if (!h) {
      c.why = "libcublas could not be loaded (tried " + tried + "; NODE_MEND_CUBLAS=/path/libcublas.so.N names one)";
      return c;
    }
    c.create = reinterpret_cast<cublasCreate_t>(dlsym(h, "cublasCreate_v2"));
    c.set_stream = reinterpret_cast<cublasSetStream_t>(dlsym(h, "cublasSetStream_v2"));
    c.set_math = reinterpret_cast<cublasSetMathMode_t>(dlsym(h, "cublasSetMathMode"));
    c.sgemm = reinterpret_cast<cublasSgemm_t>(dlsym(h, "cublasSgemm_v2"));
    c.ok = c.create && c.set_stream && c.set_math && c.sgemm;
    if (!c.ok) c.why = "libcublas lacks cublasCreate_v2 / cublasSetStream_v2 / cublasSetMathMode / cublasSgemm_v2";
    return c;
  }();
  return lib;
}

// One handle per host thread (a handle must not be used by two threads at once); never destroyed:
// it lives as long as the thread, like the thread's default stream it is bound to.
void* thread_handle() {
  thread_local void* h = nullptr;
  thread_local bool tried = false;
  if (!tried) {
    tried = true;
    const Cublas& c = cublas();
    if (c.ok && c.create(&h) == 0) {
      c.set_stream(h, stream());
      c.set_math(h, kPedanticMath);
    } else {
      h = nullptr;
    }
  }
  return h;
}

// NODE_MEND_CUDA_GEMM=cublas selects cuBLAS; anything else (or unset) the tiled kernel.
bool want_cublas() {
  static const bool w = [] {
    const char* e = std::getenv("NODE_MEND_CUDA_GEMM");
    return e && std::string(e) == "cublas";
  }();
  return w;
}

}  // namespace

bool cublas_available(std::string* why) {
  const Cublas& c = cublas();
  if (!c.ok && why) *why = c.why;
  return c.ok;
}

bool gemm_cublas(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                 int ldb, float beta, float* C, int ldc) {
  if (M <= 0 || N <= 0) return true;
  void* h = thread_handle();
  if (!h) return false;
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands, keep the flags.
  return cublas().sgemm(h, transB ? kOpT : kOpN, transA ? kOpT : kOpN, N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc) == 0;
}

void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
          float beta, float* C, int ldc) {
  if (want_cublas()) {
    // requested and absent (or failing): recorded for synchronize(), never a silent switch
    if (!gemm_cublas(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) note_error("NODE_MEND_CUDA_GEMM=cublas: " +
      (cublas().ok ? std::string("cublasSgemm failed") : cublas().why));
    return;
  }
  gemm_tiled(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* gemm_backend() { return want_cublas() ? "cublas-fp32 (pedantic math)" : "cuda-tiled-fp32"; }

}  // namespace cuda
}  // namespace mend
