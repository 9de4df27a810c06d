// linear.cc — the matrix products of GPT-2 as ops: the Conv1D layers (weight stored (in, out),
// y = x·W + b), the tied LM head (logits = h·wteᵀ) and the low-rank part of an edited weight
// (the overlay's factors, y += (x·aᵀ)·b). All of them are GEMMs (gemm.cc) plus a bias.
// linear_forward:    out (M,OC) =
// linear_backward:   dinp (M,C) =, dweight (C,OC) +=, dbias (OC) +=
// linear_forward_packed, linear_backward_input_packed: the same with the weight packed (kernels.h)
// lm_head_forward:   logits (M,V) =
// lm_head_backward:  dinp (M,C) =, dwte (V,C) +=
// lowrank_forward:   out (M,OC) +=
// lowrank_backward:  dinp (M,C) +=
#include <cstddef>
#include <vector>

#include "kernels/kernels.h"

namespace mend {

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int M, int C, int OC) {
  // out (M,OC), inp (M,C), weight (C,OC), bias (OC) or null
  gemm(false, false, M, OC, C, 1.0f, inp, C, weight, OC, 0.0f, out, OC);
  if (bias) bias_forward(out, bias, M, OC);
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int M, int C, int OC) {
  // dinp (M,C) or null, dweight (C,OC) or null, dbias (OC) or null, dout (M,OC), inp (M,C), weight (C,OC)
  if (dweight) gemm(true, false, C, OC, M, 1.0f, inp, C, dout, OC, 1.0f, dweight, OC);
  if (dbias) bias_backward(dbias, dout, M, OC);
  if (dinp) gemm(false, true, M, C, OC, 1.0f, dout, OC, weight, OC, 0.0f, dinp, C);
}

void linear_forward_packed(float* out, const float* inp, const PackedMatrix& w, const float* bias, int M,
                           float* gelu_out) {
  // out (M,OC), inp (M,C), w packed (C,OC), bias (OC) or null, gelu_out (M,OC) or null
  GemmEpilogue ep;
  ep.bias = bias;
  ep.gelu = gelu_out;
  ep.ldg = w.N;
  gemm_packed(false, false, M, 1.0f, inp, w.K, w, 0.0f, out, w.N, &ep);
}

void linear_backward_input_packed(float* dinp, const float* dout, const PackedMatrix& w, int M) {
  // dinp (M,C) = dout (M,OC) · wᵀ, w packed (C,OC)
  gemm_packed(false, true, M, 1.0f, dout, w.N, w, 0.0f, dinp, w.K);
}

void lm_head_forward(float* logits, const float* inp, const float* wte, int M, int C, int V) {
  // logits (M,V), inp (M,C), wte (V,C)
  gemm(false, true, M, V, C, 1.0f, inp, C, wte, C, 0.0f, logits, V);
}

void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp, const float* wte, int M,
                      int C, int V) {
  // dinp (M,C), dwte (V,C) or null, dlogits (M,V), inp (M,C), wte (V,C)
  gemm(false, false, M, C, V, 1.0f, dlogits, V, wte, C, 0.0f, dinp, C);
  if (dwte) gemm(true, false, V, C, M, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C);
}

void lm_head_forward_packed(float* logits, const float* inp, const PackedMatrix& wte_t, int M) {
  // logits (M,V), inp (M,C), wte_t = wteᵀ packed (C,V): bit for bit lm_head_forward on wte
  gemm_packed_nt(M, 1.0f, inp, wte_t.K, wte_t, 0.0f, logits, wte_t.N);
}

void lm_head_backward_packed(float* dinp, float* dwte, const float* dlogits, const float* inp,
                             const PackedMatrix& wte_t, int M) {
  // as lm_head_backward, wte given as wte_t = wteᵀ packed (C,V); dwte (V,C) row-major or null
  const int C = wte_t.K, V = wte_t.N;
  gemm_packed_nn(M, 1.0f, dlogits, V, wte_t, 0.0f, dinp, C);
  if (dwte) gemm(true, false, V, C, M, 1.0f, dlogits, V, inp, C, 1.0f, dwte, C);
}

void lowrank_forward(float* out, const float* inp, const float* a, const float* b, int M, int C, int OC, int R) {
  // out (M,OC), inp (M,C), a (R,C), b (R,OC)
  std::vector<float> tmp((size_t)M * R);  // (M,R) = inp · aᵀ
  gemm(false, true, M, R, C, 1.0f, inp, C, a, C, 0.0f, tmp.data(), R);
  gemm(false, false, M, OC, R, 1.0f, tmp.data(), R, b, OC, 1.0f, out, OC);
}

void lowrank_backward(float* dinp, const float* dout, const float* a, const float* b, int M, int C, int OC, int R) {
  // dinp (M,C), dout (M,OC), a (R,C), b (R,OC)
  std::vector<float> tmp((size_t)M * R);  // (M,R) = dout · bᵀ
  gemm(false, true, M, R, OC, 1.0f, dout, OC, b, OC, 0.0f, tmp.data(), R);
  gemm(false, false, M, C, R, 1.0f, tmp.data(), R, a, C, 1.0f, dinp, C);
}

}  // namespace mend
