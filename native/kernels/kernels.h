// kernels.h — the CPU kernel set: one op, two functions (<op>_forward / <op>_backward).
// Conventions (llm.c style): outputs first, gradients d-prefixed, then inputs, then sizes.
// "=" means the output is overwritten, "+=" means it accumulates. All tensors are row-major,
// contiguous float32 unless a stride is given. A null gradient pointer means "not wanted".
// Every function is multi-threaded internally through core/threadpool.h and is safe to call from
// several threads at once (no global mutable state besides the pool and gemm_force_portable, which
// only the testing addon exports).
// Every numeric op of the GPT-2 model is here; the model (model/gpt2.cc) only composes them.
// The CUDA twin of each function is in kernels/cuda/<op>.cu with the same signature, in namespace
// mend::cuda, over device pointers (kernels/cuda/kernels_cuda.h; built only where nvcc is found).
#pragma once
#include <cstddef>
#include <cstdint>

namespace mend {

struct Rng;  // kernels/rng.h

// ---- gemm.cc -------------------------------------------------------------------------------
// C(M,N) = alpha * op(A)(M,K) · op(B)(K,N) + beta * C, row-major.
// op(A) = A (M,K; lda >= K) or, when transA, Aᵀ with A stored (K,M; lda >= M). Same for B.
// beta == 0 means C is not read (NaN-safe overwrite). Chooses the micro-kernel at run time: AVX-512F
// (32-column tiles) when the CPU has it, else AVX2/FMA, else a portable path. The AVX-512 and AVX2
// kernels give bit-identical results (the same operations per element, in the same order).
void gemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc);
// Which code path gemm uses on this CPU: "avx512f", "avx2-fma" or "portable".
const char* gemm_backend();
// Force the portable path (tests compare both); returns the previous setting.
bool gemm_force_portable(bool on);
// A (K, N) matrix in the GEMM's B panel layout: 16-column strips, strip s = rows 0..K-1 of columns
// 16s..16s+15 (zeros past N), K*16 floats each, one after the other (packed_floats(K, N) floats).
// The base model's Conv1D weights are kept this way (model/gpt2.h): at B = 1 and a few dozen tokens
// the micro-kernel then streams them in place instead of copying every weight on every call.
struct PackedMatrix {
  const float* data = nullptr;
  int K = 0, N = 0;
};
size_t packed_floats(int K, int N);
void pack_matrix(const float* W, int K, int N, float* out);   // row-major (K,N) -> packed (parallel)
void pack_matrix_t(const float* B, int N, int K, float* out); // row-major B (N,K) -> Bᵀ (K,N) packed (parallel)
void unpack_matrix(const PackedMatrix& W, float* out);       // packed -> row-major (K,N)
// C = alpha * op(A) · op(W) + beta * C with op(W) = W (C is M x N, op(A) M x K) or, when transW, Wᵀ
// (C is M x K, op(A) M x N). Float32 accuracy as gemm (blocked sums of FMAs over k).
// What gemm_packed does to C once the product is complete (a Conv1D forward's bias and GELU, fused
// into the GEMM so that C is not read again from memory): C[i,j] += bias[j], then, when gelu is
// given, gelu[i*ldg + j] = gelu(C[i,j]) (bias_gelu_rows). Per element the same operations as gemm_packed,
// then bias_forward, then gelu_forward, so the results are bit-identical to those three calls.
struct GemmEpilogue {
  const float* bias = nullptr;  // (N) or null
  float* gelu = nullptr;        // (M, N), row stride ldg, or null
  int64_t ldg = 0;
};
void gemm_packed(bool transA, bool transW, int M, float alpha, const float* A, int lda, const PackedMatrix& W,
                 float beta, float* C, int ldc, const GemmEpilogue* ep = nullptr);
// C = alpha · A · Bᵀ + beta · C for B (N, K) given as Bt = Bᵀ (K, N) in the packed layout
// (pack_matrix of Bᵀ): bit for bit what gemm(false, true, M, N, K, alpha, A, lda, B, K, beta, C, ldc)
// computes (the same k blocks and micro-kernel), without transposing B into panels on every call.
// Returns false, having written nothing, where gemm would take its dot driver (M <= 4): call gemm on
// B then (its rows are read in place; gemm_packed_nt would transpose them out of the strips).
bool gemm_nt_prepacked(int M, float alpha, const float* A, int lda, const PackedMatrix& Bt, float beta, float* C,
                       int ldc);
// A weight kept only as its packed transpose X = Bᵀ (the tied LM head: X = wteᵀ, X.K = C, X.N = V),
// used where gemm would use the row-major B (X.N, X.K):
// gemm_packed_nt: C (M, X.N) = alpha · A · Bᵀ + beta · C. For M > 4 bit for bit what
//   gemm(false, true, M, X.N, X.K, ., A, lda, B, X.K, ...) gives (the same drivers, k blocks and
//   micro-kernel); for M <= 4, where gemm's dot kernel reads B's rows, the micro-kernel streams X's
//   strips in place (float32 sums of FMAs over k as everywhere, in k order: not gemm's 8-lane order).
// gemm_packed_nn: C (M, X.K) = alpha · A · B + beta · C. For M > 4 bit for bit what gemm(false, false,
//   M, X.K, X.N, ., A, lda, B, X.K, ...) gives (B's panels transposed out of X's strips); for M <= 4,
//   where gemm streams B's rows, X's strips are streamed in place into per-lane sums (16 lanes of
//   FMAs per output, then summed: float32 accuracy, another order of sums).
void gemm_packed_nt(int M, float alpha, const float* A, int lda, const PackedMatrix& X, float beta, float* C, int ldc);
void gemm_packed_nn(int M, float alpha, const float* A, int lda, const PackedMatrix& X, float beta, float* C, int ldc);
void unpack_matrix_t(const PackedMatrix& X, float* out);      // packed X (K,N) -> row-major Xᵀ (N,K)
void packed_column(const PackedMatrix& X, int n, float* out);  // out (K) = column n of X (row n of Xᵀ)
// Force the AVX2 kernels on a CPU with AVX-512 (tests check both); returns the previous setting.
bool gemm_force_avx2(bool on);

// ---- encoder.cc (token + position embedding) -----------------------------------------------
// pos (B,T) = max(0, cumsum(mask != 0) - 1) per row (HF generate's position ids: left padding does
// not shift the real tokens), t without a mask; n_real (B) = real tokens per row (may be null)
void encoder_positions(int32_t* pos, int32_t* n_real, const int32_t* mask, int B, int T);
// out (B,T,C) = wte[ids[b,t]] + wpe[p(b,t)], p(b,t) = pos[b*T+t] when pos (B,T) is given, else pos0 + t
void encoder_forward(float* out, const int32_t* ids, const int32_t* pos, const float* wte, const float* wpe,
                     int B, int T, int C, int pos0);
// The same with wte given as its packed transpose (C, V) (bit for bit).
void encoder_forward_packed(float* out, const int32_t* ids, const int32_t* pos, const PackedMatrix& wte_t,
                            const float* wpe, int B, int T, int C, int pos0);
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

// ---- linear.cc (Conv1D layers, the tied LM head, the overlay's low-rank part) ----------------
// out (M,OC) = inp (M,C) · weight (C,OC) + bias (OC); bias may be null. (GPT-2 Conv1D: weight (in, out))
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int M, int C, int OC);
// gelu_out (M,OC) = gelu(out) when given (the MLP's c_fc), fused into the GEMM where it can be
void linear_forward_packed(float* out, const float* inp, const PackedMatrix& w, const float* bias, int M,
                           float* gelu_out = nullptr);
void linear_backward_input_packed(float* dinp, const float* dout, const PackedMatrix& w, int M);
// dinp (M,C) = dout · weightᵀ, dweight (C,OC) += inpᵀ · dout, dbias (OC) += Σ rows of dout; each may be null
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int M, int C, int OC);
// logits (M,V) = inp (M,C) · wteᵀ, wte (V,C)
void lm_head_forward(float* logits, const float* inp, const float* wte, int M, int C, int V);
// dinp (M,C) = dlogits (M,V) · wte, dwte (V,C) += dlogitsᵀ · inp; dwte may be null
void lm_head_backward(float* dinp, float* dwte, const float* dlogits, const float* inp, const float* wte, int M,
                      int C, int V);
// The same, with wte kept only as its packed transpose wte_t (C, V) (GPT2Model packs it once): bit for bit.
void lm_head_forward_packed(float* logits, const float* inp, const PackedMatrix& wte_t, int M);
void lm_head_backward_packed(float* dinp, float* dwte, const float* dlogits, const float* inp,
                             const PackedMatrix& wte_t, int M);
// out (M,OC) += (inp (M,C) · aᵀ) · b with a (R,C), b (R,OC): the low-rank part of an edited weight
void lowrank_forward(float* out, const float* inp, const float* a, const float* b, int M, int C, int OC, int R);
// dinp (M,C) += (dout (M,OC) · bᵀ) · a
void lowrank_backward(float* dinp, const float* dout, const float* a, const float* b, int M, int C, int OC, int R);

// ---- residual.cc ----------------------------------------------------------------------------
// out (N) = inp1 (N) + inp2 (N); out may alias either input (backward: the identity, see residual.cc)
void residual_forward(float* out, const float* inp1, const float* inp2, int64_t N);

// ---- gelu.cc (tanh approximation, HF "gelu_new") ---------------------------------------------
// out (N) = gelu(inp); out may alias inp
void gelu_forward(float* out, const float* inp, int64_t N);
// A GEMM epilogue's block on this thread: c (m,n; row stride ldc) += bias (n) when bias is given, then
// g (m,n; row stride ldg) = gelu(c) when g is given; bit-identical to bias_forward then gelu_forward.
void bias_gelu_rows(float* c, int64_t ldc, const float* bias, float* g, int64_t ldg, int m, int n);
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

// ---- kl.cc (MEND locality loss: KL(softmax(target) ‖ softmax(logits)), masked row mean) --------
// lse (N,2) = log-normalisers of logits and target (for backward); *loss = mean over rows with
// mask != 0 (all rows without a mask; NaN when none). Returns that count. logits, target (N,V).
int kl_forward(float* loss, double* lse, const float* logits, const float* target, const int32_t* mask, int N, int V);
// dlogits (N,V) = (softmax(logits) - softmax(target)) / count, 0 on masked rows; may alias logits
void kl_backward(float* dlogits, const float* logits, const float* target, const double* lse, const int32_t* mask,
                 int count, int N, int V);

// ---- mend_layer.cc (the element-wise part of one MEND editor layer, DESIGN §5) -----------------
// pre = (p + bias) ⊙ scale[mode[i]] + shift[mode[i]]; p (Ns,D) = p + bias (in place, saved for
// backward); z (Ns,D) += act(pre), act = max(·, 0) when clamp, else the identity.
// scale, shift (n_modes,D); mode (Ns).
void mend_layer_forward(float* z, float* p, const float* bias, const float* scale, const float* shift,
                        const int32_t* mode, int Ns, int D, bool clamp);
// dp (Ns,D) = da ⊙ scale[mode], da = dz where pre >= 0 (clamp; everywhere without), dbias (D) +=,
// dscale (n_modes,D) += da ⊙ p, dshift (n_modes,D) += da; p as saved by the forward.
void mend_layer_backward(float* dp, float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                         const float* scale, const float* shift, const int32_t* mode, int Ns, int D, bool clamp);

// ---- sampling.cc (next token; not differentiable) --------------------------------------------
// out (B) = per row with done[r] == 0 (done may be null), in row order: argmax (first maximum) when
// temperature <= 0, else a draw from softmax(logits/temperature) over the top_k largest (<= 0: all),
// narrowed to the top_p nucleus when top_p < 1.
void sample_forward(int32_t* out, const float* logits, const uint8_t* done, int B, int V, float temperature,
                    int top_k, float top_p, Rng* rng);
// logits (B,V) in place: Hugging Face's repetition penalty over the tokens of ids (B, stride)[:, :T]
// where mask (B, stride) != 0 (mask may be null): logit / penalty if > 0, else logit * penalty.
void repetition_penalty_forward(float* logits, const int32_t* ids, const int32_t* mask, int B, int T, int stride,
                                int V, float penalty);

// ---- adam.cc --------------------------------------------------------------------------------
// One Adam/AdamW step on n parameters (t = step number, starting at 1; bias-corrected).
// param = param * (1 - lr * weight_decay) - lr * mhat / (sqrt(vhat) + eps)   (PyTorch AdamW; 0 = Adam)
// m (n), v (n) are updated in place.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int t);

}  // namespace mend
