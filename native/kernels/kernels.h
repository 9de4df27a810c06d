// kernels.h — the CPU kernel set: one op, two functions (<op>_forward / <op>_backward).
// Conventions (llm.c style): outputs first, gradients d-prefixed, then inputs, then sizes.
// "=" means the output is overwritten, "+=" means it accumulates. All tensors are row-major,
// contiguous float32 unless a stride is given. A null gradient pointer means "not wanted".
// Every function is multi-threaded internally through threadpool.h and is safe to call from
// several threads at once (no global mutable state besides the pool).
// The CUDA twin of each function lives in kernels/cuda/<op>.cu with the same signature.
#pragma once
#include <cstdint>

namespace mend {

// ---- gemm.cc -------------------------------------------------------------------------------
// C(M,N) = alpha * op(A)(M,K) · op(B)(K,N) + beta * C, row-major.
// op(A) = A (M,K; lda >= K) or, when transA, Aᵀ with A stored (K,M; lda >= M). Same for B.
// beta == 0 means C is not read (NaN-safe overwrite). Chooses the AVX2/FMA micro-kernel at run time
// when the CPU has it, else a portable path.
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);
// Which code path gemm uses on this CPU: "avx2-fma" or "portable".
const char* gemm_backend();
// Force the portable path (tests compare both); returns the previous setting.
bool gemm_force_portable(bool on);

// ---- encoder.cc (token + position embedding) -----------------------------------------------
// out (B,T,C) = wte[ids[b,t]] + wpe[p(b,t)], p(b,t) = pos[b*T+t] when pos (B,T) is given, else pos0 + t
void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe,
                     int B, int T, int C, int pos0);
// dwte (V,C) +=, dwpe (maxT,C) += ; either may be null; pos as in encoder_forward (pos0 = 0)
void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* ids, const int32_t* pos,
                      int B, int T, int C);

// ---- layernorm.cc ---------------------------------------------------------------------------
// out (N,C) = (inp - mean) * rstd * weight + bias; mean (N) =, rstd (N) = (may be null in inference)
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int N, int C, float eps);
// dinp (N,C) +=, dweight (C) +=, dbias (C) += ; dinp/dweight/dbias may each be null
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int N, int C);

// ---- gelu.cc (tanh approximation, HF "gelu_new") ---------------------------------------------
// out (N) = gelu(inp); out may alias inp
void gelu_forward(float* out, const float* inp, int64_t N);
// dinp (N) = dout * gelu'(inp); dinp may alias dout
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t N);

// ---- bias.cc --------------------------------------------------------------------------------
// out (N,C) += bias (C)
void bias_forward(float* out, const float* bias, int N, int C);
// dbias (C) += sum over rows of dout (N,C)
void bias_backward(float* dbias, const float* dout, int N, int C);

// ---- attention.cc (causal multi-head self-attention with key padding mask) --------------------
// Query rows t in [0,Tq) sit at absolute position q_off + t; key rows j in [0,Tk) at position j.
// Query t attends to keys j <= q_off + t with mask[b,j] != 0 (mask (B,Tk) int32, null = all ones),
// scaled by 1/sqrt(C/NH). A query with no allowed key gets output 0.
// Layouts: element (b, t, h*hs + i) of Q is q[b*q_bs + t*q_rs + h*hs + i]; same for K (k, k_bs, k_rs)
// and V (v, v_bs, v_rs). out (B,Tq,C) =. att (B,NH,Tq,Tk) = softmax probabilities (saved for
// backward; may be null in inference).
void attention_forward(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs,
                       const float* k, int64_t k_bs, int64_t k_rs, const float* v, int64_t v_bs,
                       int64_t v_rs, const int32_t* mask, int B, int Tq, int Tk, int C, int NH,
                       int q_off);
// Full-sequence backward (Tq = Tk = T, q_off = 0, q/k/v packed in qkv (B,T,3C) as c_attn gives them).
// dqkv (B,T,3C) =, from dout (B,T,C), qkv and the saved att (B,NH,T,T).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att,
                        const int32_t* mask, int B, int T, int C, int NH);

// ---- crossentropy.cc (softmax cross-entropy, ignore index -100) -------------------------------
// losses (N) = -log softmax(logits[i])[targets[i]], 0 where targets[i] == -100. Returns the number
// of non-ignored rows. logits (N,V); targets (N).
int crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int N, int V);
// dlogits (N,V) = (softmax(logits[i]) - onehot(targets[i])) * scale, 0 rows where ignored.
// dlogits may alias logits (in place).
void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets, float scale,
                           int N, int V);

// ---- adam.cc --------------------------------------------------------------------------------
// One Adam/AdamW step on n parameters (t = step number, starting at 1; bias-corrected).
// param = param * (1 - lr * weight_decay) - lr * mhat / (sqrt(vhat) + eps)   (PyTorch AdamW; 0 = Adam)
// m (n), v (n) are updated in place.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

}  // namespace mend
