// cuda_host_shim.cc — the mend::cuda API (kernels/cuda/kernels_cuda.h) implemented on the host with
// the CPU kernels and malloc, for mend_cuda_shim_test: the CUDA op test and the device-resident
// forward (model/gpt2_cuda.cc) then run on any machine, so their plumbing (buffer sizes, copies,
// argument order, the composition of the forward) is checked without a GPU. It checks nothing of
// the CUDA kernels themselves: those run only in mend_cuda_ops_test on a GPU.
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cuda/kernels_cuda.h"
#include "kernels/kernels.h"

namespace mend {
namespace cuda {

bool device_available(std::string*) { return true; }
std::string device_description() { return "the host shim (CPU kernels behind the CUDA API; no GPU code runs)"; }
Status synchronize(const char*) { return Status::OK(); }
Status device_alloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  return *p ? Status::OK() : Status::Error(code::kInternal, "malloc failed");
}
void device_free(void* p) { std::free(p); }
Status copy_to_device(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); return Status::OK(); }
Status copy_to_host(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); return Status::OK(); }
Status copy_device(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); return Status::OK(); }
Status device_memset(void* dst, int value, size_t bytes) { std::memset(dst, value, bytes); return Status::OK(); }

void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb, float beta,
          float* C, int ldc) {
  mend::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
const char* gemm_backend() { return "host-shim"; }
void gemm_tiled(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                float beta, float* C, int ldc) {
  mend::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
bool gemm_cublas(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
                 float beta, float* C, int ldc) {
  mend::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  return true;
}
bool cublas_available(std::string*) { return true; }
void note_error(const std::string&) {}
void encoder_positions(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T) {
  mend::encoder_positions(pos, n_real, mask, B, T);
}
void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe, int B, int T,
                     int C, int pos0) {
  mend::encoder_forward(out, ids, pos, wte, wpe, B, T, C, pos0);
}
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, const int32_t* pos, int B, int T,
                      int C) {
  mend::encoder_backward(dwte, dwpe, dout, ids, pos, B, T, C);
}
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       int N, int C, float eps) {
  mend::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C, eps);
}
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C) {
  mend::layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C);
}
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int M, int C, int OC) {
  mend::linear_forward(out, inp, weight, bias, M, C, OC);
}
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int M, int C, int OC) {
  mend::linear_backward(dinp, dweight, dbias, dout, inp, weight, M, C, OC);
}
void lm_head_forward(float* logits, const float* inp, const float* wte, int M, int C, int V) {
  mend::lm_head_forward(logits, inp, wte, M, C, V);
}
void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp, const float* wte, int M, int C,
                      int V) {
  mend::lm_head_backward(dinp, dwte, dlogits, inp, wte, M, C, V);
}
void lowrank_forward(float* out, const float* inp, const float* a, const float* b, int M, int C, int OC, int R) {
  mend::lowrank_forward(out, inp, a, b, M, C, OC, R);
}
void lowrank_backward(float* dinp, const float* dout, const float* a, const float* b, int M, int C, int OC, int R) {
  mend::lowrank_backward(dinp, dout, a, b, M, C, OC, R);
}
void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N) { mend::residual_forward(out, inp1, inp2, N); }
void gelu_forward(float* out, const float* inp, int64_t N) { mend::gelu_forward(out, inp, N); }
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N) { mend::gelu_backward(dinp, inp, dout, N); }
void bias_forward(float* out, const float* bias, int N, int C) { mend::bias_forward(out, bias, N, C); }
void bias_backward(float* dbias, const float* dout, int N, int C) { mend::bias_backward(dbias, dout, N, C); }
void attention_forward(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs, const float* k, int64_t k_bs,
                       int64_t k_rs, const float* v, int64_t v_bs, int64_t v_rs, const int32_t* mask, int B, int Tq,
                       int Tk, int C, int NH, int q_off) {
  mend::attention_forward(out, att, q, q_bs, q_rs, k, k_bs, k_rs, v, v_bs, v_rs, mask, B, Tq, Tk, C, NH, q_off);
}
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, const int32_t* mask, int B,
                        int T, int C, int NH) {
  mend::attention_backward(dqkv, dout, qkv, att, mask, B, T, C, NH);
}
int crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V) {
  return mend::crossentropy_forward(losses, logits, targets, N, V);
}
void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets, float scale, int N, int V) {
  mend::crossentropy_backward(dlogits, logits, targets, scale, N, V);
}
int kl_forward(float* loss, double* lse, const float* logits, const float* target, const int32_t* mask, int N, int V) {
  return mend::kl_forward(loss, lse, logits, target, mask, N, V);
}
void kl_backward(float* dlogits, const float* logits, const float* target, const double* lse, const int32_t* mask,
                 int count, int N, int V) {
  mend::kl_backward(dlogits, logits, target, lse, mask, count, N, V);
}
void mend_layer_forward(float* z, float* p, const float* bias, const float* scale, const float* shift,
                        const int32_t* mode, int Ns, int D, bool clamp) {
  mend::mend_layer_forward(z, p, bias, scale, shift, mode, Ns, D, clamp);
}
void mend_layer_backward(float* dp, float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                         const float* scale, const float* shift, const int32_t* mode, int Ns, int D, bool clamp) {
  mend::mend_layer_backward(dp, dbias, dscale, dshift, dz, p, scale, shift, mode, Ns, D, clamp);
}
void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature, int top_k,
                    float top_p, Rng* rng) {
  mend::sample_forward(out, logits, done, B, V, temperature, top_k, top_p, rng);
}
void repetition_penalty_forward(float* logits, const int32_t* ids, const int32_t* mask, int B, int T, int stride, int V,
                                float penalty) {
  mend::repetition_penalty_forward(logits, ids, mask, B, T, stride, V, penalty);
}
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int t) {
  mend::adamw_update(param, grad, m, v, n, lr, beta1, beta2, eps, weight_decay, t);
}

}  // namespace cuda
}  // namespace mend
