// linear.cu — CUDA twin of kernels/cpu/linear.cc: the Conv1D layers, the tied LM head and the
// overlay's low-rank part y += (x·aᵀ)·b, all GEMMs (gemm.cu) plus a bias.
// linear_forward:    out (M,OC) =
// linear_backward:   dinp (M,C) =, dweight (C,OC) +=, dbias (OC) +=
// lm_head_forward:   logits (M,V) =
// lm_head_backward:  dinp (M,C) =, dwte (V,C) +=
// lowrank_forward:   out (M,OC) +=     (scratch (M,R) from the stream-ordered pool)
// lowrank_backward:  dinp (M,C) +=
#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int M, int C, int OC) {
  gemm(false, false, M, OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
  if (bias) bias_forward(out, bias, M, OC);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int M, int C, int OC) {
  if (dweight) gemm(true, false, C, OC, M, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias) bias_backward(dbias, dout, M, OC);
  if (dinp) gemm(false, true, M, C, OC, 1.0f, dout, OC, weight, OC, 0.0f, dinp, C);
}

void lm_head_forward(float* logits, const float* inp, const float* wte, int M, int C, int V) {
  gemm(false, true, M, V, C, 1.0f, inp, C, wte, C, 0.0f, logits, V);
}

void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp, const float* wte, int M, int C,
                      int V) {
  gemm(false, false, M, C, V, 1.0f, dlogits, V, wte, C, 0.0f, dinp, C);
  if (dwte) gemm(true, false, V, C, M, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C);
}

void lowrank_forward(float* out, const float* inp, const float* a, const float* b, int M, int C, int OC, int R) {
  if (M <= 0 || R <= 0) return;
  Scratch tmp((size_t)M * R * sizeof(float));  // (M,R) = inp · aᵀ
  if (!tmp.p) return;                           // the failed allocation is reported by synchronize()
  gemm(false, true, M, R, C, 1.0f, inp, C, a, C, 0.0f, tmp.as<float>(), R);
  gemm(false, false, M, OC, R, 1.0f, tmp.as<float>(), R, b, OC, 1.0f, out, OC);
}

void lowrank_backward(float* dinp, const float* dout, const float* a, const float* b, int M, int C, int OC, int R) {
  if (M <= 0 || R <= 0) return;
  Scratch tmp((size_t)M * R * sizeof(float));  // (M,R) = dout · bᵀ
  if (!tmp.p) return;
  gemm(false, true, M, R, OC, 1.0f, dout, OC, b, OC, 0.0f, tmp.as<float>(), R);
  gemm(false, false, M, C, R, 1.0f, tmp.as<float>(), R, a, C, 1.0f, dinp, C);
}

}  // namespace cuda
}  // namespace mend
