// gpt2_cuda.cc — see gpt2_cuda.h. Host code: it only calls the CUDA ops and the runtime wrappers of
// kernels_cuda.h, so the host compiler builds it. Inference needs no saved activations, so one set
// of block buffers is reused by every layer; everything of one call lives in one device allocation.
#include "model/gpt2_cuda.h"

#include <cmath>
#include <vector>

#include "kernels/cuda/kernels_cuda.h"

namespace mend {
namespace cuda {

// Frees a device allocation at the end of a scope.
struct DeviceBlock {
  void* p = nullptr;
  ~DeviceBlock() { device_free(p); }
};

Status CudaGPT2::upload(const GPT2Model& m, std::unique_ptr<CudaGPT2>* out) {
  std::unique_ptr<CudaGPT2> g(new CudaGPT2(m));
  const std::vector<ParamInfo>& info = m.params();
  size_t total = 0;
  for (const ParamInfo& p : info) total += (size_t)p.numel();
  g->bytes_ = total * sizeof(float);
  MEND_RETURN_IF_ERROR(device_alloc(reinterpret_cast<void**>(&g->storage_), g->bytes_));
  std::vector<const float*> ptrs(info.size());
  size_t at = 0;
  std::vector<float> host;  // row-major staging for the weights the CPU model keeps packed
  for (size_t i = 0; i < info.size(); i++) {
    ptrs[i] = g->storage_ + at;
    const float* src = m.param((int)i);
    if (!src) {
      host.resize((size_t)info[i].numel());
      m.copy_param((int)i, host.data());
      src = host.data();
    }
    MEND_RETURN_IF_ERROR(copy_to_device(g->storage_ + at, src, (size_t)info[i].numel() * sizeof(float)));
    at += (size_t)info[i].numel();
  }
  g->w_ = point_params(ptrs, m.config().n_layer);
  *out = std::move(g);
  return Status::OK();
}

CudaGPT2::~CudaGPT2() { device_free(storage_); }

Status CudaGPT2::forward(const Batch& b, ForwardResult* out) const {
  MEND_RETURN_IF_ERROR(model_.check_batch(b, false));
  const GPT2Config& cfg = model_.config();
  const int B = b.B, T = b.T, C = cfg.n_embd, I = cfg.inner(), NH = cfg.n_head, V = cfg.vocab_size;
  const int64_t N = (int64_t)B * T;
  const float eps = cfg.layer_norm_eps;
  // shifted targets, as model/gpt2.cc: target[b,t] = labels[b,t+1], -100 at t = T-1
  std::vector<int32_t> tg;
  if (b.labels) {
    tg.assign((size_t)N, -100);
    for (int r = 0; r < B; r++)
      for (int t = 0; t + 1 < T; t++) tg[(size_t)r * T + t] = b.labels[(size_t)r * T + t + 1];
  }
  // one allocation: ints (ids, mask, pos, targets), then the float buffers
  const size_t ints = (size_t)N * 4, floats = (size_t)N * (5 * C + 3 * C + 2 * I + V + 1);
  DeviceBlock blk;
  MEND_RETURN_IF_ERROR(device_alloc(&blk.p, ints * sizeof(int32_t) + floats * sizeof(float)));
  int32_t* ids = static_cast<int32_t*>(blk.p);
  int32_t* mask = ids + N;
  int32_t* pos = mask + N;
  int32_t* targets = pos + N;
  float* f = reinterpret_cast<float*>(targets + N);
  auto take = [&](int64_t n) { float* p = f; f += n; return p; };
  float* x = take(N * C);        // the residual stream (B,T,C)
  float* ln = take(N * C);       // ln_1 / ln_2 output
  float* qkv = take(N * 3 * C);  // (B,T,3C)
  float* atty = take(N * C);
  float* res2 = take(N * C);
  float* fch = take(N * I);
  float* fchg = take(N * I);
  float* lnf = take(N * C);
  float* logits = take(N * V);
  float* losses = take(N);

  MEND_RETURN_IF_ERROR(copy_to_device(ids, b.ids, (size_t)N * sizeof(int32_t)));
  if (b.mask) MEND_RETURN_IF_ERROR(copy_to_device(mask, b.mask, (size_t)N * sizeof(int32_t)));
  if (b.labels) MEND_RETURN_IF_ERROR(copy_to_device(targets, tg.data(), (size_t)N * sizeof(int32_t)));
  const int32_t* dmask = b.mask ? mask : nullptr;

  encoder_positions(pos, nullptr, dmask, B, T);
  encoder_forward(x, ids, pos, w_.wte, w_.wpe, B, T, C, 0);
  const int64_t qs = (int64_t)T * 3 * C;
  for (int l = 0; l < cfg.n_layer; l++) {
    const BlockParams<const float*>& p = w_.h[l];
    layernorm_forward(ln, nullptr, nullptr, x, p.ln1w, p.ln1b, (int)N, C, eps);
    linear_forward(qkv, ln, p.qkvw, p.qkvb, (int)N, C, 3 * C);
    attention_forward(atty, nullptr, qkv, qs, 3 * C, qkv + C, qs, 3 * C, qkv + 2 * C, qs, 3 * C, dmask, B, T, T, C, NH, 0);
    linear_forward(res2, atty, p.attprojw, p.attprojb, (int)N, C, C);
    residual_forward(res2, res2, x, N * C);
    layernorm_forward(ln, nullptr, nullptr, res2, p.ln2w, p.ln2b, (int)N, C, eps);
    linear_forward(fch, ln, p.fcw, p.fcb, (int)N, C, I);
    gelu_forward(fchg, fch, N * I);
    linear_forward(x, fchg, p.fcprojw, p.fcprojb, (int)N, I, C);  // x is free again: res2 holds the stream
    residual_forward(x, x, res2, N * C);
  }
  layernorm_forward(lnf, nullptr, nullptr, x, w_.lnfw, w_.lnfb, (int)N, C, eps);
  lm_head_forward(logits, lnf, w_.wte, (int)N, C, V);
  out->has_loss = false;
  if (b.labels) {
    const int n = crossentropy_forward(losses, logits, targets, (int)N, V);
    std::vector<float> h((size_t)N);
    MEND_RETURN_IF_ERROR(copy_to_host(h.data(), losses, (size_t)N * sizeof(float)));
    double s = 0;
    for (float v : h) s += v;
    out->has_loss = true;
    out->n_targets = n;
    out->loss = n > 0 ? (float)(s / n) : NAN;
  }
  out->logits.resize((size_t)N * V);
  MEND_RETURN_IF_ERROR(copy_to_host(out->logits.data(), logits, (size_t)N * V * sizeof(float)));
  return synchronize("CudaGPT2::forward");
}

}  // namespace cuda
}  // namespace mend
