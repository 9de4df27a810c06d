// attention.cu — CUDA twin of kernels/cpu/attention.cc (causal multi-head self-attention with a key
// padding mask). Same layouts and semantics: query t at absolute position q_off + t sees keys
// j <= q_off + t with mask[b,j] != 0; a query that sees no key gets output 0 and a zero row of att.
// attention_forward:  out (B,Tq,C) =, att (B,NH,Tq,Tk) = (may be null)
// attention_backward: dqkv (B,T,3C) =  (full sequence; q/k/v packed as c_attn gives them)
// One block per (query, head, batch) row keeps the row's scores in shared memory (Tk floats: up to
// 12k keys in the default 48 KB, beyond that the dynamic limit is raised, up to the device's
// opt-in maximum, about 56k keys on Hopper). The backward stores dpre = ∂L/∂scores (B,NH,T,T) in
// scratch and takes dK, dV per key row in a second kernel, so nothing is added atomically.
// These are plain kernels for correctness and the short sequences of GPT-2 (T <= 1024), not a
// flash-attention: scores go through shared memory, not tensor cores.
#include <cmath>

#include "kernels/cuda/common.cuh"

namespace mend {
namespace cuda {
namespace {

constexpr int kThreads = 128;

__global__ void attention_forward_kernel(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs,
                                         const float* k, int64_t k_bs, int64_t k_rs, const float* v, int64_t v_bs,
                                         int64_t v_rs, const int32_t* mask, int Tq, int Tk, int C, int NH, int q_off,
                                         float scale) {
  extern __shared__ float sm[];  // s (Tk) | qs (hs)
  __shared__ float buf[32];
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hs = C / NH;
  float* s = sm;
  float* qs = sm + Tk;
  const int64_t lim64 = (int64_t)q_off + t + 1;
  const int lim = (int)(lim64 < 0 ? 0 : (lim64 > Tk ? Tk : lim64));
  const float* qrow = q + b * q_bs + (int64_t)t * q_rs + h * hs;
  const float* kh = k + b * k_bs + h * hs;
  const float* vh = v + b * v_bs + h * hs;
  const int32_t* mrow = mask ? mask + (int64_t)b * Tk : nullptr;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) qs[i] = qrow[i] * scale;
  __syncthreads();
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < lim; j += blockDim.x) {
    float d = -INFINITY;
    if (!mrow || mrow[j] != 0) {
      const float* kr = kh + (int64_t)j * k_rs;
      d = 0.f;
      for (int i = 0; i < hs; i++) d = fmaf(qs[i], kr[i], d);
      mx = fmaxf(mx, d);
    }
    s[j] = d;
  }
  mx = block_max(mx, buf, -INFINITY);
  const bool any = mx != -INFINITY;  // scores are finite, so -inf means no allowed key
  float sum = 0.f;
  for (int j = threadIdx.x; j < lim; j += blockDim.x) {
    const float e = (any && s[j] != -INFINITY) ? expf(s[j] - mx) : 0.f;
    s[j] = e;
    sum += e;
  }
  sum = block_sum(sum, buf);
  const float inv = any ? 1.0f / sum : 0.f;
  for (int j = threadIdx.x; j < lim; j += blockDim.x) s[j] *= inv;
  __syncthreads();
  if (att) {
    float* arow = att + (((int64_t)b * NH + h) * Tq + t) * (int64_t)Tk;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) arow[j] = j < lim ? s[j] : 0.f;
  }
  float* o = out + ((int64_t)b * Tq + t) * C + h * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < lim; j++) {
      const float p = s[j];
      if (p != 0.f) acc = fmaf(p, vh[(int64_t)j * v_rs + i], acc);
    }
    o[i] = acc;
  }
}

// per query row t: datt = dy·V, dpre = att ⊙ (datt − Σ att·datt) · scale (saved), dQ[t] = dpre·K
__global__ void attention_backward_q_kernel(float* dqkv, float* dpre_all, const float* dout, const float* qkv,
                                            const float* att, int T, int C, int NH, float scale) {
  extern __shared__ float sm[];  // dpre (T) | dy (hs)
  __shared__ float buf[32];
  const int t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hs = C / NH;
  const int64_t C3 = 3 * (int64_t)C;
  const int lim = t + 1;
  float* dpre = sm;
  float* dy = sm + T;
  const int64_t bh = (int64_t)b * NH + h;
  const float* arow = att + (bh * T + t) * (int64_t)T;
  const float* qh = qkv + (int64_t)b * T * C3 + h * hs;
  const float* kh = qh + C;
  const float* vh = qh + 2 * C;
  const float* dyg = dout + ((int64_t)b * T + t) * C + h * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) dy[i] = dyg[i];
  __syncthreads();
  float dot = 0.f;
  for (int j = threadIdx.x; j < lim; j += blockDim.x) {
    const float* vr = vh + (int64_t)j * C3;
    float d = 0.f;
    for (int i = 0; i < hs; i++) d = fmaf(dy[i], vr[i], d);
    dpre[j] = d;  // datt for now
    dot += arow[j] * d;
  }
  dot = block_sum(dot, buf);
  float* drow = dpre_all + (bh * T + t) * (int64_t)T;
  for (int j = threadIdx.x; j < lim; j += blockDim.x) {
    const float d = arow[j] * (dpre[j] - dot) * scale;
    dpre[j] = d;
    drow[j] = d;
  }
  __syncthreads();
  float* dq = dqkv + ((int64_t)b * T + t) * C3 + h * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < lim; j++) acc = fmaf(dpre[j], kh[(int64_t)j * C3 + i], acc);
    dq[i] = acc;
  }
}

// per key row j: dK[j] = Σ_{t>=j} dpre[t,j] Q[t], dV[j] = Σ_{t>=j} att[t,j] dy[t]
__global__ void attention_backward_kv_kernel(float* dqkv, const float* dpre_all, const float* dout, const float* qkv,
                                             const float* att, int T, int C, int NH) {
  const int j = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int hs = C / NH;
  const int64_t C3 = 3 * (int64_t)C;
  const int64_t bh = (int64_t)b * NH + h;
  const float* qh = qkv + (int64_t)b * T * C3 + h * hs;
  const float* dyh = dout + (int64_t)b * T * C + h * hs;
  float* drow = dqkv + ((int64_t)b * T + j) * C3 + h * hs;
  for (int i = threadIdx.x; i < hs; i += blockDim.x) {
    float dk = 0.f, dv = 0.f;
    for (int t = j; t < T; t++) {
      const int64_t at = (bh * T + t) * (int64_t)T + j;
      dk = fmaf(dpre_all[at], qh[(int64_t)t * C3 + i], dk);
      dv = fmaf(att[at], dyh[(int64_t)t * C + i], dv);
    }
    drow[C + i] = dk;
    drow[2 * C + i] = dv;
  }
}

// Dynamic shared memory of `bytes` for kernel f: above 48 KB the limit must be raised first.
template <typename F>
bool allow_smem(F f, size_t bytes) {
  if (bytes <= 48 * 1024) return true;
  return cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes) == cudaSuccess;
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, int64_t q_bs, int64_t q_rs, const float* k, int64_t k_bs,
                       int64_t k_rs, const float* v, int64_t v_bs, int64_t v_rs, const int32_t* mask, int B, int Tq,
                       int Tk, int C, int NH, int q_off) {
  if (B <= 0 || Tq <= 0 || NH <= 0) return;
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt((float)hs);
  const size_t smem = ((size_t)Tk + hs) * sizeof(float);
  if (!allow_smem(attention_forward_kernel, smem)) return;  // synchronize() reports it
  attention_forward_kernel<<<dim3(Tq, NH, B), kThreads, smem, stream()>>>(out, att, q, q_bs, q_rs, k, k_bs, k_rs, v,
                                                                          v_bs, v_rs, mask, Tq, Tk, C, NH, q_off, scale);
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, const int32_t* mask, int B,
                        int T, int C, int NH) {
  (void)mask;  // folded into att (masked probabilities are 0), as on the CPU
  if (B <= 0 || T <= 0 || NH <= 0) return;
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt((float)hs);
  Scratch dpre((size_t)B * NH * T * T * sizeof(float));
  if (!dpre.p) return;
  const size_t smem = ((size_t)T + hs) * sizeof(float);
  if (!allow_smem(attention_backward_q_kernel, smem)) return;
  const dim3 grid(T, NH, B);
  attention_backward_q_kernel<<<grid, kThreads, smem, stream()>>>(dqkv, dpre.as<float>(), dout, qkv, att, T, C, NH,
                                                                 scale);
  attention_backward_kv_kernel<<<grid, 64, 0, stream()>>>(dqkv, dpre.as<float>(), dout, qkv, att, T, C, NH);
}

}  // namespace cuda
}  // namespace mend
