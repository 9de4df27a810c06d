// kernels_cuda.h — the CUDA backend: the twin of every op in kernels/kernels.h, with the same
// signature and the same "=" / "+=" conventions, in namespace mend::cuda, over DEVICE pointers
// (every tensor argument, the scalar outputs of crossentropy_forward / kl_forward included; host
// integers are returned as on the CPU). One <op>.cu per kernels/cpu/<op>.cc.
// Plain C++ (no CUDA headers), so the addon and the tests include it without nvcc. Built only where
// CMake finds nvcc (option NODE_MEND_CUDA); NODE_MEND_HAVE_CUDA is defined for code that links it.
// Work is queued on the calling thread's default stream (cudaStreamPerThread), so host threads do not
// serialise each other; launches are asynchronous: synchronize() returns the first error.
// fp32 everywhere (no TF32); GEMM is our own tiled kernel (gemm.cu), not cuBLAS.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/common.h"

namespace mend {
struct Rng;
namespace cuda {

// ---- device.cu (runtime, memory, errors) ---------------------------------------------------------
// True when a CUDA device can be used; else false and *why says why (no driver, no device, …).
bool device_available(std::string* why);
// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)" for device 0, or "" when none.
std::string device_description();
// Waits for the calling thread's stream; a failed launch or kernel becomes ERR_INTERNAL naming `what`.
Status synchronize(const char* what);
Status device_alloc(void** p, size_t bytes);
void device_free(void* p);
Status copy_to_device(void* dst, const void* src, size_t bytes);
Status copy_to_host(void* dst, const void* src, size_t bytes);
Status copy_device(void* dst, const void* src, size_t bytes);  // device to device, queued on the stream
Status device_memset(void* dst, int value, size_t bytes);
// An error found outside a launch (a requested library missing): synchronize() reports the first one.
void note_error(const std::string& message);

// ---- gemm.cu ----------------------------------------------------------------------------------
// The backend NODE_MEND_CUDA_GEMM selects: the tiled kernel (default) or cuBLAS ("cublas").
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);
const char* gemm_backend();  // "cuda-tiled-fp32" or "cublas-fp32 (pedantic math)"
// The two backends by name. gemm_cublas returns false when cuBLAS is absent or the call failed.
void gemm_tiled(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                const float* B, int ldb, float beta, float* C, int ldc);
bool gemm_cublas(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc);
bool cublas_available(std::string* why);  // libcublas loads (else why not)

// ---- encoder.cu -------------------------------------------------------------------------------
void encoder_positions(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T);
void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe,
                     int B, int T, int C, int pos0);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, const int32_t* pos,
                      int B, int T, int C);

// ---- layernorm.cu -----------------------------------------------------------------------------
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C);

// ---- linear.cu --------------------------------------------------------------------------------
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int M, int C, int OC);
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int M, int C, int OC);
void lm_head_forward(float* logits, const float* inp, const float* wte, int M, int C, int V);
void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp, const float* wte, int M,
                      int C, int V);
void lowrank_forward(float* out, const float* inp, const float* a, const float* b, int M, int C, int OC, int R);
void lowrank_backward(float* dinp, const float* dout, const float* a, const float* b, int M, int C, int OC, int R);

// ---- residual.cu, gelu.cu, bias.cu ------------------------------------------------------------
void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N);
void gelu_forward(float* out, const float* inp, int64_t N);
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N);
void bias_forward(float* out, const float* bias, int N, int C);
void bias_backward(float* dbias, const float* dout, int N, int C);

// ---- attention.cu -----------------------------------------------------------------------------
void attention_forward(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs,
                       const float* k, int64_t k_bs, int64_t k_rs, const float* v, int64_t v_bs,
                       int64_t v_rs, const int32_t* mask, int B, int Tq, int Tk, int C, int NH,
                       int q_off);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        const int32_t* mask, int B, int T, int C, int NH);

// ---- crossentropy.cu, kl.cu (the returned counts are host ints: these two synchronize) ----------
int crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V);
void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets, float scale,
                           int N, int V);
int kl_forward(float* loss, double* lse, const float* logits, const float* target, const int32_t* mask, int N, int V);
void kl_backward(float* dlogits, const float* logits, const float* target, const double* lse, const int32_t* mask,
                 int count, int N, int V);

// ---- mend_layer.cu ----------------------------------------------------------------------------
void mend_layer_forward(float* z, float* p, const float* bias, const float* scale, const float* shift,
                        const int32_t* mode, int Ns, int D, bool clamp);
void mend_layer_backward(float* dp, float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                         const float* scale, const float* shift, const int32_t* mode, int Ns, int D, bool clamp);

// ---- sampling.cu ------------------------------------------------------------------------------
// Greedy rows (temperature <= 0) are an argmax on the device; a draw (temperature > 0) copies the
// rows to the host and runs the CPU sampler, so the Rng sequence is the CPU's exactly.
void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature,
                    int top_k, float top_p, Rng* rng);
void repetition_penalty_forward(float* logits, const int32_t* ids, const int32_t* mask, int B, int T, int stride,
                                int V, float penalty);

// ---- adam.cu ----------------------------------------------------------------------------------
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

}  // namespace cuda
}  // namespace mend
