// gpt2.cc — GPT-2 forward, backward and generation over an immutable parameter set (see gpt2.h).
//
// One forward routine serves inference, training (saving activations for backward) and KV-cache
// decoding. Backward walks the network top-down through the ops of tensors.h (BlockOp) and stops
// at the lowest op that any requested gradient or capture needs. Every numeric op is a kernel
// (kernels/kernels.h); this file composes them and adds the overlay of an edited model.
#include "model/gpt2.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/rng.h"

namespace mend {

namespace {

// The weight of Conv1D parameter `param` as the GEMM takes it: the overlay's merged copy W' (row-major)
// where it has one, else the base weight, packed (model/gpt2.h) or row-major.
struct ConvWeight {
  const float* rowmajor = nullptr;
  const PackedMatrix* packed = nullptr;
};
ConvWeight conv_weight(const GPT2Model& m, int param, const WeightDeltas* deltas) {
  if (deltas)
    if (const float* w = deltas->weight(param, nullptr)) return {w, nullptr};
  if (const PackedMatrix* p = m.packed(param)) return {nullptr, p};
  return {m.param(param), nullptr};
}

// out (M,OC) = inp (M,C) · W' + bias + inp · Δ: a Conv1D layer of a possibly edited model, with W'
// and Δ of parameter `param` from the overlay (WeightDeltas); the base weight without one. With
// gelu_out (M,OC), also gelu_out = gelu(out) (the MLP's c_fc), fused into the GEMM's epilogue when
// the weight is packed and has no low-rank part (which must be added before the GELU).
void edited_linear_forward(const GPT2Model& m, float* out, const float* inp, const float* bias, int param,
                           const WeightDeltas* deltas, int M, int C, int OC, float* gelu_out = nullptr) {
  const ConvWeight w = conv_weight(m, param, deltas);
  const bool lowrank = deltas && deltas->has_lowrank(param);
  if (w.packed) linear_forward_packed(out, inp, *w.packed, bias, M, lowrank ? nullptr : gelu_out);
  else linear_forward(out, inp, w.rowmajor, bias, M, C, OC);
  if (lowrank) deltas->forward(param, inp, M, out);
  if (gelu_out && (lowrank || !w.packed)) gelu_forward(gelu_out, out, (int64_t)M * OC);
}

// Its backward: dweight +=, dbias += (of the base parameters), dinp = through W' and Δ; any may be null.
void edited_linear_backward(const GPT2Model& m, float* dinp, float* dweight, float* dbias, const float* dout,
                            const float* inp, int param, const WeightDeltas* deltas, int M, int C, int OC) {
  const ConvWeight w = dinp ? conv_weight(m, param, deltas) : ConvWeight{};
  if (w.packed) {
    linear_backward(nullptr, dweight, dbias, dout, inp, nullptr, M, C, OC);
    linear_backward_input_packed(dinp, dout, *w.packed, M);
  } else {
    linear_backward(dinp, dweight, dbias, dout, inp, w.rowmajor, M, C, OC);
  }
  if (dinp && deltas && deltas->has_lowrank(param)) deltas->backward_input(param, dout, M, dinp);
}

// Shifted targets: target[b,t] = labels[b,t+1], -100 at t = T-1.
std::vector<int32_t> shifted_targets(const int32_t* labels, int B, int T) {
  std::vector<int32_t> tg((size_t)B * T, -100);
  for (int b = 0; b < B; b++)
    for (int t = 0; t + 1 < T; t++) tg[(size_t)b * T + t] = labels[b * T + t + 1];
  return tg;
}

}  // namespace

Status GPT2Model::check_batch(const Batch& b, bool need_labels) const {
  if (b.B < 1 || b.T < 1) return Status::Error(code::kInvalidArg, "inputIds must have at least one row and one column");
  if (b.T > cfg_.n_positions)
    return Status::Error(code::kSeqLen, "inputIds has sequence length " + std::to_string(b.T) +
                                            " > n_positions " + std::to_string(cfg_.n_positions));
  const int64_t n = (int64_t)b.B * b.T;
  for (int64_t i = 0; i < n; i++) {
    int32_t id = b.ids[i];
    if (id < 0 || id >= cfg_.vocab_size)
      return Status::Error(code::kTokenRange, "inputIds[" + std::to_string(i / b.T) + "][" + std::to_string(i % b.T) +
                                                  "] = " + std::to_string(id) + " is outside [0, " +
                                                  std::to_string(cfg_.vocab_size) + ")");
  }
  if (b.mask)
    for (int64_t i = 0; i < n; i++)
      if (b.mask[i] != 0 && b.mask[i] != 1)
        return Status::Error(code::kInvalidArg, "attentionMask must hold only 0 and 1, found " + std::to_string(b.mask[i]));
  if (need_labels && !b.labels) return Status::Error(code::kInvalidArg, "labels are required");
  if (b.labels) {
    int targets = 0;
    for (int64_t i = 0; i < n; i++) {
      int32_t l = b.labels[i];
      if (l != -100 && (l < 0 || l >= cfg_.vocab_size))
        return Status::Error(code::kTokenRange, "labels[" + std::to_string(i / b.T) + "][" + std::to_string(i % b.T) +
                                                    "] = " + std::to_string(l) + " is neither -100 nor a token id");
      if (l != -100 && (i % b.T) != 0) targets++;
    }
    if (targets == 0)
      return Status::Error(code::kNoTarget, "labels have no target token (every label after the first position is -100)");
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// The forward routine.

namespace {

// KV cache: per block K and V of shape (B, Tmax, C).
struct KVCache {
  int Tmax = 0;
  std::vector<std::vector<float>> k, v;
};

struct RunSpec {
  const int32_t* ids;   // (B,T) new tokens
  const int32_t* pos;   // (B,T) position ids
  const int32_t* mask;  // (B,Tk) key mask or null
  int B, T;             // T new tokens
  int past;             // tokens already in the cache (q_off); Tk = past + T
  KVCache* cache;       // null: keys/values come from this call's qkv
};

// Runs the blocks and the final LayerNorm; acts->lnf holds the final hidden states.
void run_blocks(const GPT2Model& m, const RunSpec& s, ActivationTensors* acts, const WeightDeltas* deltas) {
  const GPT2Config& cfg = m.config();
  const ParameterTensors<const float*> w = m.weights();
  const ParameterTensors<int>& id = m.ids();
  const int B = s.B, T = s.T, C = cfg.n_embd, I = cfg.inner(), NH = cfg.n_head, N = B * T;
  const int Tk = s.past + T;
  const float eps = cfg.layer_norm_eps;
  if (const PackedMatrix* wte_t = m.packed(id.wte))
    encoder_forward_packed(acts->encoded, s.ids, s.pos, *wte_t, w.wpe, B, T, C, 0);
  else
    encoder_forward(acts->encoded, s.ids, s.pos, w.wte, w.wpe, B, T, C, 0);
  const float* x = acts->encoded;
  for (int l = 0; l < cfg.n_layer; l++) {
    BlockActs& a = acts->h[l];
    const BlockParams<const float*>& p = w.h[l];
    const BlockParams<int>& pi = id.h[l];
    layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1w, p.ln1b, N, C, eps);
    edited_linear_forward(m, a.qkv, a.ln1, p.qkvb, pi.qkvw, deltas, N, C, 3 * C);
    if (s.cache) {
      float* kc = s.cache->k[l].data();
      float* vc = s.cache->v[l].data();
      const int Tm = s.cache->Tmax;
      for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
          const float* row = a.qkv + ((size_t)b * T + t) * 3 * C;
          std::memcpy(kc + ((size_t)b * Tm + s.past + t) * C, row + C, C * sizeof(float));
          std::memcpy(vc + ((size_t)b * Tm + s.past + t) * C, row + 2 * C, C * sizeof(float));
        }
      attention_forward(a.atty, a.att, a.qkv, (int64_t)T * 3 * C, 3 * C, kc, (int64_t)Tm * C, C, vc,
                        (int64_t)Tm * C, C, s.mask, B, T, Tk, C, NH, s.past);
    } else {
      attention_forward(a.atty, a.att, a.qkv, (int64_t)T * 3 * C, 3 * C, a.qkv + C, (int64_t)T * 3 * C, 3 * C,
                        a.qkv + 2 * C, (int64_t)T * 3 * C, 3 * C, s.mask, B, T, T, C, NH, 0);
    }
    edited_linear_forward(m, a.res2, a.atty, p.attprojb, pi.attprojw, deltas, N, C, C);
    residual_forward(a.res2, a.res2, x, (int64_t)N * C);
    layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, p.ln2w, p.ln2b, N, C, eps);
    edited_linear_forward(m, a.fch, a.ln2, p.fcb, pi.fcw, deltas, N, C, I, a.fch_gelu);
    edited_linear_forward(m, a.res3, a.fch_gelu, p.fcprojb, pi.fcprojw, deltas, N, I, C);
    residual_forward(a.res3, a.res3, a.res2, (int64_t)N * C);
    x = a.res3;
  }
  layernorm_forward(acts->lnf, acts->lnf_mean, acts->lnf_rstd, x, w.lnfw, w.lnfb, N, C, eps);
}

// logits (rows, V) = h (rows, C) · wteᵀ
void lm_head(const GPT2Model& m, const float* h, int rows, float* logits) {
  if (const PackedMatrix* wte_t = m.packed(m.ids().wte)) return lm_head_forward_packed(logits, h, *wte_t, rows);
  lm_head_forward(logits, h, m.weights().wte, rows, m.config().n_embd, m.config().vocab_size);
}

// Mean cross-entropy over targets; returns the count.
int mean_loss(const float* logits, const int32_t* targets, int N, int V, float* loss) {
  std::vector<float> losses(N);
  int n = crossentropy_forward(losses.data(), logits, targets, N, V);
  double s = 0;
  for (int i = 0; i < N; i++) s += losses[i];
  *loss = n > 0 ? (float)(s / n) : NAN;
  return n;
}

std::vector<int32_t> positions(const Batch& b) {
  std::vector<int32_t> pos((size_t)b.B * b.T);
  encoder_positions(pos.data(), nullptr, b.mask, b.B, b.T);
  return pos;
}

}  // namespace

Status GPT2Model::forward(const Batch& b, const ForwardOptions& opt, const WeightDeltas* deltas, ForwardResult* out) const {
  MEND_RETURN_IF_ERROR(check_batch(b, false));
  const int B = b.B, T = b.T, C = cfg_.n_embd, V = cfg_.vocab_size, N = B * T;
  std::vector<int32_t> pos = positions(b);
  ActivationTensors acts;
  acts.allocate(cfg_, B, T, cfg_.n_layer, false);
  RunSpec s{b.ids, pos.data(), b.mask, B, T, 0, nullptr};
  run_blocks(*this, s, &acts, deltas);
  const bool need_full = b.labels || !opt.last_only;
  FloatBuf logits;
  if (need_full) {
    logits.resize((size_t)N * V);
    lm_head(*this, acts.lnf, N, logits.data());
    if (b.labels) {
      std::vector<int32_t> tg = shifted_targets(b.labels, B, T);
      out->n_targets = mean_loss(logits.data(), tg.data(), N, V, &out->loss);
      out->has_loss = true;
    }
    if (opt.last_only) {
      FloatBuf last((size_t)B * V);
      for (int r = 0; r < B; r++)
        std::memcpy(last.data() + (size_t)r * V, logits.data() + ((size_t)r * T + T - 1) * V, V * sizeof(float));
      logits.swap(last);
    }
  } else {
    std::vector<float> h((size_t)B * C);
    for (int r = 0; r < B; r++)
      std::memcpy(h.data() + (size_t)r * C, acts.lnf + ((size_t)r * T + T - 1) * C, C * sizeof(float));
    logits.resize((size_t)B * V);
    lm_head(*this, h.data(), B, logits.data());
  }
  if (opt.want_logits) out->logits.swap(logits);
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Backward, top-down through the ops of tensors.h (BlockOp), stopping at the lowest one needed.

Status GPT2Model::loss_and_grad(const Batch& b, const GradOptions& opt, const WeightDeltas* deltas, GradResult* out) const {
  const bool kl = opt.kl_target != nullptr;
  MEND_RETURN_IF_ERROR(check_batch(b, !kl));
  const int np = (int)info_.size();
  for (int p : opt.params)
    if (p < 0 || p >= np) return Status::Error(code::kInvalidArg, "params: index out of range");
  for (int p : opt.capture) {
    if (p < 0 || p >= np || info_[p].layer < 0) return Status::Error(code::kInvalidArg, "capture: not a Conv1D weight");
    if (!info_[p].conv1d)
      return Status::Error(code::kInvalidArg, "capture: \"" + info_[p].name + "\" is not a Conv1D weight");
  }
  const int B = b.B, T = b.T, C = cfg_.n_embd, V = cfg_.vocab_size, I = cfg_.inner(), NH = cfg_.n_head;
  const int N = B * T, L = cfg_.n_layer;

  // The lowest op anything needs decides where backward stops and which blocks save activations.
  int min_op = final_op(L) + 1;
  for (int p : opt.params) min_op = std::min(min_op, info_[p].op);
  for (int p : opt.capture) min_op = std::min(min_op, info_[p].op);
  const int save_from = min_op < 0 ? 0 : std::min(L, backward_op_layer(min_op));

  std::vector<int32_t> pos = positions(b);
  ActivationTensors acts;
  acts.allocate(cfg_, B, T, save_from, true);
  RunSpec s{b.ids, pos.data(), b.mask, B, T, 0, nullptr};
  run_blocks(*this, s, &acts, deltas);

  // The LM head runs on the rows the loss reads: with cross-entropy (and no logits returned) only the
  // positions that predict a label, as `rows` (R of them, in order); every other row's logits
  // gradient is zero, so the result is the same as over all N rows (EasyEdit computes them all).
  // An edit request of 16 tokens with a 4-token target: R = 4.
  std::vector<int32_t> tg;
  std::vector<int> rows;  // the rows the LM head runs on, in order
  if (!kl) tg = shifted_targets(b.labels, B, T);
  for (int i = 0; i < N; i++)
    if (kl || opt.want_logits || tg[i] >= 0) rows.push_back(i);
  const int R = (int)rows.size();
  const bool compact = R < N;
  FloatBuf hrows;  // (R, C) the final hidden states of those rows
  if (compact) {
    hrows.resize((size_t)R * C);
    std::vector<int32_t> tr(R);
    for (int r = 0; r < R; r++) {
      std::memcpy(hrows.data() + (size_t)r * C, acts.lnf + (size_t)rows[r] * C, C * sizeof(float));
      tr[r] = tg[rows[r]];
    }
    tg.swap(tr);
  }
  const float* hlnf = compact ? hrows.data() : acts.lnf;
  FloatBuf logits((size_t)R * V);
  lm_head(*this, hlnf, R, logits.data());
  std::vector<double> lse;
  if (opt.want_logits) out->logits = logits;
  if (kl) {
    lse.resize((size_t)2 * N);
    out->n_targets = kl_forward(&out->loss, lse.data(), logits.data(), opt.kl_target, b.mask, N, V);
    if (out->n_targets == 0) return Status::Error(code::kNoTarget, "the locality batch has no token with attentionMask = 1");
  } else {
    out->n_targets = mean_loss(logits.data(), tg.data(), R, V, &out->loss);
    if (opt.want_accuracy)
      for (int r = 0; r < R; r++) {
        if (tg[r] < 0) continue;
        const float* l = logits.data() + (size_t)r * V;
        out->n_correct += (int)(std::max_element(l, l + V) - l) == tg[r];
      }
  }
  if (!std::isfinite(out->loss)) return Status::Error(code::kNonFinite, "loss is not finite");

  // Gradient buffers for the requested parameters and the capture slots, as named views.
  std::vector<float*> gflat(np, nullptr);
  for (int p : opt.params) {
    auto& v = out->grads[p];
    v = ZeroBuf((size_t)info_[p].numel());  // zero without a memset (see ZeroAllocator)
    gflat[p] = v.data();
  }
  std::vector<Capture*> cflat(np, nullptr);
  for (int p : opt.capture) cflat[p] = &out->captures[p];
  const ParameterTensors<float*> g = point_params(gflat, L);
  const ParameterTensors<Capture*> cap = point_params(cflat, L);
  const ParameterTensors<const float*> w = weights();
  // X rows (N, din) and D = dL/dy rows (N, dout) of a captured layer.
  auto capture = [&](Capture* c, const float* x, const float* d, int din, int dout) {
    if (!c) return;
    c->x.assign(x, x + (size_t)N * din);
    c->d.assign(d, d + (size_t)N * dout);
  };
  if (min_op > final_op(L)) return Status::OK();  // nothing requested: loss only

  // dlogits in place, then into the final hidden state and the tied embedding.
  float* dlogits = logits.data();
  if (kl) kl_backward(dlogits, dlogits, opt.kl_target, lse.data(), b.mask, out->n_targets, N, V);
  else if (!opt.per_row_mean) crossentropy_backward(dlogits, dlogits, tg.data(), 1.0f / out->n_targets, R, V);
  else {
    crossentropy_backward(dlogits, dlogits, tg.data(), 1.0f, R, V);
    // Each batch row's logits rows scaled by 1 / (its target count).
    std::vector<int> count(B, 0);
    for (int r = 0; r < R; r++)
      if (tg[r] >= 0) count[rows[r] / T]++;
    for (int r = 0; r < R; r++) {
      const int n = count[rows[r] / T];
      if (n == 0) continue;
      const float inv = 1.0f / n;
      float* row = dlogits + (size_t)r * V;
      for (int v = 0; v < V; v++) row[v] *= inv;
    }
  }
  FloatBuf dlnf((size_t)N * C);
  const PackedMatrix* wte_t = packed(ids_.wte);
  auto head_backward = [&](float* dinp, const float* inp, int rows_) {
    if (wte_t) lm_head_backward_packed(dinp, g.wte, dlogits, inp, *wte_t, rows_);
    else lm_head_backward(dinp, g.wte, dlogits, inp, w.wte, rows_, C, V);
  };
  if (!compact) {
    head_backward(dlnf.data(), acts.lnf, N);
  } else {
    FloatBuf drows((size_t)R * C);
    head_backward(drows.data(), hlnf, R);
    std::memset(dlnf.data(), 0, (size_t)N * C * sizeof(float));
    for (int r = 0; r < R; r++) std::memcpy(dlnf.data() + (size_t)rows[r] * C, drows.data() + (size_t)r * C, C * sizeof(float));
  }
  logits.clear();
  logits.shrink_to_fit();

  std::vector<float> dres((size_t)N * C, 0.0f);  // gradient of the residual stream
  const float* top = L > 0 ? acts.h[L - 1].res3 : acts.encoded;
  layernorm_backward(dres.data(), g.lnfw, g.lnfb, dlnf.data(), top, w.lnfw, acts.lnf_mean, acts.lnf_rstd, N, C);

  FloatBuf dbig((size_t)N * std::max(I, 3 * C));  // d of fch / qkv
  FloatBuf dmid((size_t)N * C);                   // d of atty / ln outputs
  for (int l = L - 1; l >= 0 && backward_op(l, kOpFcProj) >= min_op; l--) {
    BlockActs& a = acts.h[l];
    const BlockParams<const float*>& p = w.h[l];
    const BlockParams<int>& pi = ids_.h[l];
    const BlockParams<float*>& pg = g.h[l];
    const BlockParams<Capture*>& pc = cap.h[l];
    const float* xin = l > 0 ? acts.h[l - 1].res3 : acts.encoded;
    // Whether anything requested lies below op of this block (then backward continues past it).
    auto below = [&](BlockOp op) { return min_op < backward_op(l, op); };

    // mlp.c_proj — dy = dres
    capture(pc.fcprojw, a.fch_gelu, dres.data(), I, C);
    edited_linear_backward(*this, below(kOpFcProj) ? dbig.data() : nullptr, pg.fcprojw, pg.fcprojb, dres.data(),
                           a.fch_gelu, pi.fcprojw, deltas, N, I, C);
    if (!below(kOpFcProj)) break;
    // gelu + mlp.c_fc
    gelu_backward(dbig.data(), a.fch, dbig.data(), (int64_t)N * I);
    capture(pc.fcw, a.ln2, dbig.data(), C, I);
    edited_linear_backward(*this, below(kOpFc) ? dmid.data() : nullptr, pg.fcw, pg.fcb, dbig.data(), a.ln2, pi.fcw,
                           deltas, N, C, I);
    if (!below(kOpFc)) break;
    // ln_2 — dres += LN backward (the residual path already carries dres)
    layernorm_backward(dres.data(), pg.ln2w, pg.ln2b, dmid.data(), a.res2, p.ln2w, a.ln2_mean, a.ln2_rstd, N, C);
    if (!below(kOpLn2)) break;
    // attn.c_proj — dy = dres
    capture(pc.attprojw, a.atty, dres.data(), C, C);
    edited_linear_backward(*this, below(kOpAttnProj) ? dmid.data() : nullptr, pg.attprojw, pg.attprojb, dres.data(),
                           a.atty, pi.attprojw, deltas, N, C, C);
    if (!below(kOpAttnProj)) break;
    // attention + attn.c_attn
    attention_backward(dbig.data(), dmid.data(), a.qkv, a.att, b.mask, B, T, C, NH);
    capture(pc.qkvw, a.ln1, dbig.data(), C, 3 * C);
    edited_linear_backward(*this, below(kOpAttn) ? dmid.data() : nullptr, pg.qkvw, pg.qkvb, dbig.data(), a.ln1,
                           pi.qkvw, deltas, N, C, 3 * C);
    if (!below(kOpAttn)) break;
    // ln_1
    layernorm_backward(dres.data(), pg.ln1w, pg.ln1b, dmid.data(), xin, p.ln1w, a.ln1_mean, a.ln1_rstd, N, C);
  }
  if (min_op < 0) encoder_backward(g.wte, g.wpe, dres.data(), b.ids, pos.data(), B, T, C);
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Generation.

Status GPT2Model::generate(const Batch& b, const GenerateOptions& opt, const WeightDeltas* deltas,
                           std::vector<int32_t>* out, int* n_generated) const {
  MEND_RETURN_IF_ERROR(check_batch(b, false));
  if (opt.max_new_tokens < 0) return Status::Error(code::kInvalidArg, "maxNewTokens must be >= 0");
  if (opt.eos_token_id >= cfg_.vocab_size) return Status::Error(code::kTokenRange, "eosTokenId is outside the vocabulary");
  if (!(opt.top_p > 0 && opt.top_p <= 1)) return Status::Error(code::kInvalidArg, "topP must be in (0, 1]");
  if (!(opt.repetition_penalty > 0) || !std::isfinite(opt.repetition_penalty))
    return Status::Error(code::kInvalidArg, "repetitionPenalty must be a finite number > 0");
  const int B = b.B, T0 = b.T, C = cfg_.n_embd, V = cfg_.vocab_size;
  const int Tmax = T0 + opt.max_new_tokens;
  if (Tmax > cfg_.n_positions)
    return Status::Error(code::kSeqLen, "prompt length " + std::to_string(T0) + " + maxNewTokens " +
                                            std::to_string(opt.max_new_tokens) + " > n_positions " +
                                            std::to_string(cfg_.n_positions));
  Rng rng(opt.seed);
  // Full-length buffers: ids, mask and positions of prompt + generated tokens.
  std::vector<int32_t> ids((size_t)B * Tmax, 0), mask((size_t)B * Tmax, 1), pos((size_t)B * Tmax, 0);
  std::vector<int32_t> prompt_pos((size_t)B * T0), last_pos(B);
  encoder_positions(prompt_pos.data(), last_pos.data(), b.mask, B, T0);
  for (int r = 0; r < B; r++) {
    for (int t = 0; t < T0; t++) {
      ids[(size_t)r * Tmax + t] = b.ids[r * T0 + t];
      mask[(size_t)r * Tmax + t] = b.mask ? b.mask[r * T0 + t] : 1;
      pos[(size_t)r * Tmax + t] = prompt_pos[(size_t)r * T0 + t];
    }
    last_pos[r] -= 1;  // the position of the last real token (-1 for none)
  }
  out->assign((size_t)B * opt.max_new_tokens, opt.eos_token_id >= 0 ? opt.eos_token_id : 0);
  std::vector<uint8_t> done(B, 0);
  std::vector<int32_t> sampled(B);
  int n = 0;

  KVCache cache;
  if (opt.use_cache) {
    cache.Tmax = Tmax;
    cache.k.assign(cfg_.n_layer, std::vector<float>((size_t)B * Tmax * C));
    cache.v.assign(cfg_.n_layer, std::vector<float>((size_t)B * Tmax * C));
  }
  FloatBuf logits((size_t)B * V), h((size_t)B * C);
  for (int step = 0; step < opt.max_new_tokens; step++) {
    const int Tcur = T0 + step;
    // Inputs of this step: the whole prompt first (or always, without a cache), else the last token.
    const bool prefill = !opt.use_cache || step == 0;
    const int Tin = prefill ? Tcur : 1, past = prefill ? 0 : Tcur - 1;
    std::vector<int32_t> sid((size_t)B * Tin), spos((size_t)B * Tin), smask((size_t)B * Tcur);
    for (int r = 0; r < B; r++) {
      for (int t = 0; t < Tin; t++) {
        sid[(size_t)r * Tin + t] = ids[(size_t)r * Tmax + past + t];
        spos[(size_t)r * Tin + t] = pos[(size_t)r * Tmax + past + t];
      }
      for (int t = 0; t < Tcur; t++) smask[(size_t)r * Tcur + t] = mask[(size_t)r * Tmax + t];
    }
    ActivationTensors acts;
    acts.allocate(cfg_, B, Tin, cfg_.n_layer, false);
    RunSpec s{sid.data(), spos.data(), smask.data(), B, Tin, past, opt.use_cache ? &cache : nullptr};
    run_blocks(*this, s, &acts, deltas);
    for (int r = 0; r < B; r++)
      std::memcpy(h.data() + (size_t)r * C, acts.lnf + ((size_t)r * Tin + Tin - 1) * C, C * sizeof(float));
    lm_head(*this, h.data(), B, logits.data());
    if (opt.repetition_penalty != 1.0f)
      repetition_penalty_forward(logits.data(), ids.data(), mask.data(), B, Tcur, Tmax, V, opt.repetition_penalty);
    sample_forward(sampled.data(), logits.data(), done.data(), B, V, opt.temperature, opt.top_k, opt.top_p, &rng);
    for (int r = 0; r < B; r++) {
      const int32_t tok = done[r] ? opt.eos_token_id : sampled[r];
      (*out)[(size_t)r * opt.max_new_tokens + step] = tok;
      ids[(size_t)r * Tmax + Tcur] = tok;
      pos[(size_t)r * Tmax + Tcur] = ++last_pos[r];
      if (opt.eos_token_id >= 0 && tok == opt.eos_token_id) done[r] = 1;
    }
    n = step + 1;
    if (opt.eos_token_id >= 0 && std::all_of(done.begin(), done.end(), [](uint8_t d) { return d != 0; })) break;
  }
  // Compact to (B, n).
  if (n < opt.max_new_tokens) {
    std::vector<int32_t> c((size_t)B * n);
    for (int r = 0; r < B; r++)
      for (int t = 0; t < n; t++) c[(size_t)r * n + t] = (*out)[(size_t)r * opt.max_new_tokens + t];
    out->swap(c);
  }
  *n_generated = n;
  return Status::OK();
}

}  // namespace mend
