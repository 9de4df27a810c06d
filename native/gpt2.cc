// gpt2.cc — GPT-2 forward, backward and generation over an immutable parameter set (see gpt2.h).
//
// One forward routine serves inference, training (saving activations for backward) and KV-cache
// decoding. Backward walks the network top-down through "ops" (six per block, see op_of) and stops
// at the lowest op that any requested gradient or capture needs.
#include "gpt2.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "kernels/kernels.h"
#include "safetensors.h"
#include "threadpool.h"

namespace mend {

namespace {

std::string block_suffix(int p) {
  static const char* names[kPerBlock] = {
      "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
      "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
      "mlp.c_proj.weight", "mlp.c_proj.bias"};
  return names[p];
}

// y (M,dout) = x (M,din) · W (din,dout) + b, plus the overlay delta when there is one.
void linear_forward(float* y, const float* x, const float* W, const float* b, int M, int din, int dout,
                    const WeightDeltas* deltas, int param) {
  if (deltas) W = deltas->weight(param, W);
  gemm(false, false, M, dout, din, 1.0f, x, din, W, dout, 0.0f, y, dout);
  if (b) bias_forward(y, b, M, dout);
  if (deltas && deltas->has_lowrank(param)) deltas->forward(param, x, M, y);
}

// dW (din,dout) += xᵀ·dy, db (dout) += Σ dy, dx (M,din) = dy·Wᵀ (+ overlay); any may be null.
void linear_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W,
                     int M, int din, int dout, const WeightDeltas* deltas, int param) {
  if (dW) gemm(true, false, din, dout, M, 1.0f, x, din, dy, dout, 1.0f, dW, dout);
  if (db) bias_backward(db, dy, M, dout);
  if (dx) {
    if (deltas) W = deltas->weight(param, W);
    gemm(false, true, M, din, dout, 1.0f, dy, dout, W, dout, 0.0f, dx, din);
    if (deltas && deltas->has_lowrank(param)) deltas->backward_input(param, dy, M, dx);
  }
}

// splitmix64-based normal generator: reproducible on every platform (std::normal_distribution is not).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return ((next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0,1)
  double normal() {
    double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// Per-row position ids: the count of real tokens before t (HF generate's cumsum(mask) - 1), so left
// padding does not shift the positions of real tokens. Without a mask: pos0 + t.
std::vector<int32_t> position_ids(const int32_t* mask, int B, int T) {
  std::vector<int32_t> pos((size_t)B * T);
  for (int b = 0; b < B; b++) {
    int c = 0;
    for (int t = 0; t < T; t++) {
      int m = mask ? mask[b * T + t] : 1;
      c += m != 0;
      pos[(size_t)b * T + t] = std::max(0, c - 1);
    }
  }
  return pos;
}

// Shifted targets: target[b,t] = labels[b,t+1], -100 at t = T-1.
std::vector<int32_t> shifted_targets(const int32_t* labels, int B, int T) {
  std::vector<int32_t> tg((size_t)B * T, -100);
  for (int b = 0; b < B; b++)
    for (int t = 0; t + 1 < T; t++) tg[(size_t)b * T + t] = labels[b * T + t + 1];
  return tg;
}

}  // namespace

Status GPT2Config::validate() const {
  auto bad = [](const std::string& k, const std::string& why) {
    return Status::Error(code::kConfig, "config." + k + " " + why);
  };
  if (n_layer < 1 || n_layer > 1000) return bad("n_layer", "must be in [1, 1000]");
  if (n_head < 1) return bad("n_head", "must be >= 1");
  if (n_embd < 1 || n_embd % n_head != 0) return bad("n_embd", "must be a positive multiple of n_head");
  if (vocab_size < 1) return bad("vocab_size", "must be >= 1");
  if (n_positions < 1) return bad("n_positions", "must be >= 1");
  if (n_inner < 0) return bad("n_inner", "must be >= 0");
  if (!(layer_norm_eps > 0) || !std::isfinite(layer_norm_eps)) return bad("layer_norm_epsilon", "must be > 0");
  return Status::OK();
}

int64_t ParamInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

void GPT2Model::build_info() {
  const int64_t C = cfg_.n_embd, V = cfg_.vocab_size, P = cfg_.n_positions, I = cfg_.inner();
  info_.clear();
  info_.push_back({"transformer.wte.weight", {V, C}});
  info_.push_back({"transformer.wpe.weight", {P, C}});
  for (int l = 0; l < cfg_.n_layer; l++) {
    std::string pre = "transformer.h." + std::to_string(l) + ".";
    const std::vector<int64_t> shapes[kPerBlock] = {{C}, {C}, {C, 3 * C}, {3 * C}, {C, C}, {C},
                                                     {C}, {C}, {C, I},     {I},     {I, C}, {C}};
    for (int p = 0; p < kPerBlock; p++) info_.push_back({pre + block_suffix(p), shapes[p]});
  }
  info_.push_back({"transformer.ln_f.weight", {C}});
  info_.push_back({"transformer.ln_f.bias", {C}});
  ptr_.assign(info_.size(), nullptr);
}

int GPT2Model::param_index(const std::string& name) const {
  std::string n = name;
  if (n == "lm_head.weight") n = "transformer.wte.weight";  // tied
  if (n.rfind("transformer.", 0) != 0) n = "transformer." + n;
  for (size_t i = 0; i < info_.size(); i++)
    if (info_[i].name == n) return (int)i;
  return -1;
}

size_t GPT2Model::param_bytes() const {
  size_t n = 0;
  for (auto& p : info_) n += (size_t)p.numel() * sizeof(float);
  return n;
}

size_t GPT2Model::owned_bytes() const {
  size_t n = 0;
  for (auto& v : owned_) n += v->size() * sizeof(float);
  return n;
}

Status GPT2Model::load(const std::string& path, const GPT2Config& cfg, std::shared_ptr<GPT2Model>* out) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::unique_ptr<SafetensorsFile> f;
  MEND_RETURN_IF_ERROR(SafetensorsFile::open(path, &f));
  std::shared_ptr<GPT2Model> m(new GPT2Model());
  m->cfg_ = cfg;
  m->build_info();
  m->file_ = std::move(f);
  for (size_t i = 0; i < m->info_.size(); i++) {
    const ParamInfo& p = m->info_[i];
    const SafeTensor* t = m->file_->find(p.name);
    if (!t) t = m->file_->find(p.name.substr(std::strlen("transformer.")));
    if (!t) return Status::Error(code::kMissingTensor, path + ": missing tensor \"" + p.name + "\"");
    if (t->shape != p.shape) {
      auto fmt = [](const std::vector<int64_t>& s) {
        std::string r = "[";
        for (size_t k = 0; k < s.size(); k++) r += (k ? "," : "") + std::to_string(s[k]);
        return r + "]";
      };
      return Status::Error(code::kShape, path + ": tensor \"" + t->name + "\" has shape " + fmt(t->shape) +
                                             ", expected " + fmt(p.shape) + " from config.json");
    }
    auto owned = std::make_shared<std::vector<float>>();
    const float* data = nullptr;
    MEND_RETURN_IF_ERROR(m->file_->as_f32(*t, &data, owned.get()));
    if (!owned->empty()) {
      m->owned_.push_back(owned);
      data = owned->data();
    }
    m->ptr_[i] = data;
  }
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::random(const GPT2Config& cfg, uint64_t seed, std::shared_ptr<GPT2Model>* out) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::shared_ptr<GPT2Model> m(new GPT2Model());
  m->cfg_ = cfg;
  m->build_info();
  size_t total = 0;
  for (auto& p : m->info_) total += (size_t)p.numel();
  auto buf = std::make_shared<std::vector<float>>(total);
  float* w = buf->data();
  // Each parameter gets its own stream so initialisation can run in parallel and stay deterministic.
  std::vector<size_t> offs(m->info_.size());
  size_t off = 0;
  for (size_t i = 0; i < m->info_.size(); i++) { offs[i] = off; off += (size_t)m->info_[i].numel(); }
  const double proj_std = 0.02 / std::sqrt(2.0 * cfg.n_layer);
  parallel_tasks((int64_t)m->info_.size(), [&](int64_t i) {
    const ParamInfo& p = m->info_[i];
    float* d = w + offs[i];
    int64_t n = p.numel();
    const std::string& nm = p.name;
    bool is_ln = nm.find(".ln_") != std::string::npos;
    bool is_bias = nm.size() > 5 && nm.compare(nm.size() - 5, 5, ".bias") == 0;
    if (is_ln && !is_bias) { std::fill(d, d + n, 1.0f); return; }
    if (is_bias) { std::fill(d, d + n, 0.0f); return; }
    bool is_proj = nm.find("c_proj.weight") != std::string::npos;
    double sd = is_proj ? proj_std : 0.02;
    Rng r(seed * 1000003ull + (uint64_t)i);
    for (int64_t k = 0; k < n; k++) d[k] = (float)(r.normal() * sd);
  });
  for (size_t i = 0; i < m->info_.size(); i++) m->ptr_[i] = w + offs[i];
  m->owned_.push_back(buf);
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::from_tensors(const GPT2Config& cfg, std::map<std::string, std::vector<float>>&& tensors,
                               std::shared_ptr<GPT2Model>* out) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::shared_ptr<GPT2Model> m(new GPT2Model());
  m->cfg_ = cfg;
  m->build_info();
  for (size_t i = 0; i < m->info_.size(); i++) {
    const ParamInfo& p = m->info_[i];
    auto it = tensors.find(p.name);
    if (it == tensors.end()) it = tensors.find(p.name.substr(std::strlen("transformer.")));
    if (it == tensors.end()) return Status::Error(code::kMissingTensor, "missing tensor \"" + p.name + "\"");
    if ((int64_t)it->second.size() != p.numel())
      return Status::Error(code::kShape, "tensor \"" + p.name + "\" has " + std::to_string(it->second.size()) +
                                             " values, expected " + std::to_string(p.numel()));
    for (float v : it->second)
      if (!std::isfinite(v)) return Status::Error(code::kNonFinite, "tensor \"" + p.name + "\" holds NaN or Inf");
    auto buf = std::make_shared<std::vector<float>>(std::move(it->second));
    m->ptr_[i] = buf->data();
    m->owned_.push_back(std::move(buf));
  }
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::with_replaced(std::map<int, std::vector<float>>&& replaced, std::shared_ptr<GPT2Model>* out) const {
  std::shared_ptr<GPT2Model> m(new GPT2Model(*this));
  for (auto& kv : replaced) {
    if (kv.first < 0 || kv.first >= (int)info_.size())
      return Status::Error(code::kInvalidArg, "replaced parameter index out of range");
    if ((int64_t)kv.second.size() != info_[kv.first].numel())
      return Status::Error(code::kShape, "replacement for \"" + info_[kv.first].name + "\" has the wrong size");
    auto v = std::make_shared<std::vector<float>>(std::move(kv.second));
    m->ptr_[kv.first] = v->data();
    m->owned_.push_back(v);
  }
  *out = std::move(m);
  return Status::OK();
}

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

// Activations of one block, saved for backward (or scratch shared between blocks in inference).
struct BlockActs {
  float* ln1;       // (N,C)
  float* ln1_mean;  // (N)
  float* ln1_rstd;  // (N)
  float* qkv;       // (N,3C)
  float* att;       // (B,NH,T,T) or null
  float* atty;      // (N,C)
  float* res2;      // (N,C) residual after attention
  float* ln2;       // (N,C)
  float* ln2_mean;  // (N)
  float* ln2_rstd;  // (N)
  float* fch;       // (N,I) pre-GELU
  float* fch_gelu;  // (N,I)
  float* res3;      // (N,C) block output
};

// One allocation for every activation; sizes computed here only.
struct Acts {
  FloatBuf buf;
  float* encoded;            // (N,C)
  std::vector<BlockActs> h;  // per block
  float* lnf;                // (N,C)
  float* lnf_mean;           // (N)
  float* lnf_rstd;           // (N)

  // Blocks >= save_from keep their own activations; blocks below share one scratch set.
  void allocate(const GPT2Config& cfg, int B, int T, int save_from, bool save_att) {
    const size_t N = (size_t)B * T, C = cfg.n_embd, I = cfg.inner(), NH = cfg.n_head;
    const size_t block = N * C * 6 + N * 3 * C + N * I * 2 + N * 4 + (save_att ? (size_t)B * NH * T * T : 0);
    const int L = cfg.n_layer;
    const int saved = L - save_from;
    const size_t total = N * C + (size_t)(saved + (save_from > 0 ? 1 : 0)) * block + N * C + 2 * N;
    buf.resize(total);  // uninitialised: every activation is written before it is read
    float* p = buf.data();
    auto take = [&](size_t n) { float* r = p; p += n; return r; };
    encoded = take(N * C);
    auto make = [&]() {
      BlockActs a;
      a.ln1 = take(N * C); a.ln1_mean = take(N); a.ln1_rstd = take(N);
      a.qkv = take(N * 3 * C);
      a.att = save_att ? take((size_t)B * NH * T * T) : nullptr;
      a.atty = take(N * C); a.res2 = take(N * C);
      a.ln2 = take(N * C); a.ln2_mean = take(N); a.ln2_rstd = take(N);
      a.fch = take(N * I); a.fch_gelu = take(N * I);
      a.res3 = take(N * C);
      return a;
    };
    h.resize(L);
    if (save_from > 0) {
      BlockActs scratch = make();
      for (int l = 0; l < save_from; l++) h[l] = scratch;
    }
    for (int l = save_from; l < L; l++) h[l] = make();
    lnf = take(N * C); lnf_mean = take(N); lnf_rstd = take(N);
  }
};

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
void run_blocks(const GPT2Model& m, const RunSpec& s, Acts* acts, const WeightDeltas* deltas) {
  const GPT2Config& cfg = m.config();
  const int B = s.B, T = s.T, C = cfg.n_embd, I = cfg.inner(), NH = cfg.n_head, N = B * T;
  const int Tk = s.past + T;
  encoder_forward(acts->encoded, s.ids, s.pos, m.param(0), m.param(1), B, T, C, 0);
  const float* x = acts->encoded;
  for (int l = 0; l < cfg.n_layer; l++) {
    BlockActs& a = acts->h[l];
    auto P = [&](BlockParam p) { return m.param(GPT2Model::block_param(l, p)); };
    auto idx = [&](BlockParam p) { return GPT2Model::block_param(l, p); };
    layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, P(kLn1W), P(kLn1B), N, C, cfg.layer_norm_eps);
    linear_forward(a.qkv, a.ln1, P(kAttnW), P(kAttnB), N, C, 3 * C, deltas, idx(kAttnW));
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
    linear_forward(a.res2, a.atty, P(kAttnProjW), P(kAttnProjB), N, C, C, deltas, idx(kAttnProjW));
    {
      float* r = a.res2;
      parallel_for((int64_t)N * C, [&](int64_t b0, int64_t e0) { for (int64_t i = b0; i < e0; i++) r[i] += x[i]; }, 4096);
    }
    layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res2, P(kLn2W), P(kLn2B), N, C, cfg.layer_norm_eps);
    linear_forward(a.fch, a.ln2, P(kFcW), P(kFcB), N, C, I, deltas, idx(kFcW));
    gelu_forward(a.fch_gelu, a.fch, (int64_t)N * I);
    linear_forward(a.res3, a.fch_gelu, P(kFcProjW), P(kFcProjB), N, I, C, deltas, idx(kFcProjW));
    {
      float* r = a.res3;
      const float* r2 = a.res2;
      parallel_for((int64_t)N * C, [&](int64_t b0, int64_t e0) { for (int64_t i = b0; i < e0; i++) r[i] += r2[i]; }, 4096);
    }
    x = a.res3;
  }
  layernorm_forward(acts->lnf, acts->lnf_mean, acts->lnf_rstd, x, m.param(m.lnf_w()), m.param(m.lnf_b()), N, C,
                    cfg.layer_norm_eps);
}

// logits (rows, V) = h (rows, C) · wteᵀ
void lm_head(const GPT2Model& m, const float* h, int rows, float* logits) {
  const int C = m.config().n_embd, V = m.config().vocab_size;
  gemm(false, true, rows, V, C, 1.0f, h, C, m.param(0), C, 0.0f, logits, V);
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

}  // namespace

Status GPT2Model::forward(const Batch& b, const ForwardOptions& opt, const WeightDeltas* deltas, ForwardResult* out) const {
  MEND_RETURN_IF_ERROR(check_batch(b, false));
  const int B = b.B, T = b.T, C = cfg_.n_embd, V = cfg_.vocab_size, N = B * T;
  std::vector<int32_t> pos = position_ids(b.mask, B, T);
  Acts acts;
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
// Backward. Ops within block l, top-down: 5 mlp.c_proj, 4 gelu+mlp.c_fc, 3 ln_2, 2 attn.c_proj,
// 1 attention+attn.c_attn, 0 ln_1; global op = 6*l + k. ln_f = 6*L. Embeddings (wte, wpe) = -1.

namespace {
int op_of(const GPT2Config& cfg, int param) {
  if (param <= 1) return -1;
  int q = param - 2;
  int l = q / kPerBlock;
  if (l >= cfg.n_layer) return 6 * cfg.n_layer;
  static const int k_of[kPerBlock] = {0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5};
  return 6 * l + k_of[q % kPerBlock];
}
}  // namespace

// Mean KL(softmax(target) ‖ softmax(logits)) over rows with mask = 1 (all rows without a mask); with
// dlogits, also its gradient (softmax(logits) - softmax(target)) / count, 0 on masked rows.
// Returns the count.
static int kl_loss(const float* logits, const float* target, const int32_t* mask, int N, int V, float* loss, float* dlogits) {
  int count = 0;
  for (int i = 0; i < N; i++) count += mask ? (mask[i] != 0) : 1;
  std::vector<double> kl(N, 0.0);
  parallel_for(N, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; i++) {
      const float* l = logits + (size_t)i * V;
      const float* t = target + (size_t)i * V;
      float* d = dlogits ? dlogits + (size_t)i * V : nullptr;
      if (mask && !mask[i]) { if (d) std::fill(d, d + V, 0.0f); continue; }
      float ml = *std::max_element(l, l + V), mt = *std::max_element(t, t + V);
      double sl = 0, st = 0;
      for (int j = 0; j < V; j++) { sl += std::exp((double)l[j] - ml); st += std::exp((double)t[j] - mt); }
      const double lsl = std::log(sl) + ml, lst = std::log(st) + mt;
      double acc = 0;
      for (int j = 0; j < V; j++) {
        const double lp = t[j] - lst, lq = l[j] - lsl, p = std::exp(lp);
        acc += p * (lp - lq);
        if (d) d[j] = (float)((std::exp(lq) - p) / count);
      }
      kl[i] = acc;
    }
  });
  double sum = 0;
  for (int i = 0; i < N; i++) sum += kl[i];
  *loss = count > 0 ? (float)(sum / count) : NAN;
  return count;
}

Status GPT2Model::loss_and_grad(const Batch& b, const GradOptions& opt, const WeightDeltas* deltas, GradResult* out) const {
  const bool kl = opt.kl_target != nullptr;
  MEND_RETURN_IF_ERROR(check_batch(b, !kl));
  const int np = (int)info_.size();
  for (int p : opt.params)
    if (p < 0 || p >= np) return Status::Error(code::kInvalidArg, "params: index out of range");
  for (int p : opt.capture) {
    if (p < 2 || p >= lnf_w()) return Status::Error(code::kInvalidArg, "capture: not a Conv1D weight");
    int k = (p - 2) % kPerBlock;
    if (k != kAttnW && k != kAttnProjW && k != kFcW && k != kFcProjW)
      return Status::Error(code::kInvalidArg, "capture: \"" + info_[p].name + "\" is not a Conv1D weight");
  }
  const int B = b.B, T = b.T, C = cfg_.n_embd, V = cfg_.vocab_size, I = cfg_.inner(), NH = cfg_.n_head;
  const int N = B * T, L = cfg_.n_layer;

  // The lowest op anything needs decides where backward stops and which blocks save activations.
  int min_op = 6 * L + 1;
  for (int p : opt.params) min_op = std::min(min_op, op_of(cfg_, p));
  for (int p : opt.capture) min_op = std::min(min_op, op_of(cfg_, p));
  const int save_from = min_op < 0 ? 0 : std::min(L, min_op / 6);

  std::vector<int32_t> pos = position_ids(b.mask, B, T);
  Acts acts;
  acts.allocate(cfg_, B, T, save_from, true);
  RunSpec s{b.ids, pos.data(), b.mask, B, T, 0, nullptr};
  run_blocks(*this, s, &acts, deltas);

  FloatBuf logits((size_t)N * V);
  lm_head(*this, acts.lnf, N, logits.data());
  std::vector<int32_t> tg;
  if (kl) {
    if (opt.want_logits) out->logits = logits;
    out->n_targets = kl_loss(logits.data(), opt.kl_target, b.mask, N, V, &out->loss, logits.data());
    if (out->n_targets == 0) return Status::Error(code::kNoTarget, "the locality batch has no token with attentionMask = 1");
  } else {
    tg = shifted_targets(b.labels, B, T);
    out->n_targets = mean_loss(logits.data(), tg.data(), N, V, &out->loss);
    if (opt.want_logits) out->logits = logits;
  }
  if (!std::isfinite(out->loss)) return Status::Error(code::kNonFinite, "loss is not finite");

  // Gradient buffers for the requested parameters.
  std::vector<float*> g(np, nullptr);
  for (int p : opt.params) {
    auto& v = out->grads[p];
    v = ZeroBuf((size_t)info_[p].numel());  // zero without a memset (see ZeroAllocator)
    g[p] = v.data();
  }
  auto want_capture = [&](int p) { return std::find(opt.capture.begin(), opt.capture.end(), p) != opt.capture.end(); };
  auto capture = [&](int p, const float* x, const float* d, int din, int dout) {
    Capture& c = out->captures[p];
    c.x.assign(x, x + (size_t)N * din);
    c.d.assign(d, d + (size_t)N * dout);
  };
  if (min_op > 6 * L) return Status::OK();  // nothing requested: loss only

  // dlogits in place, then into the final hidden state and the tied embedding.
  float* dlogits = logits.data();  // in KL mode kl_loss has already written the gradient here
  if (!kl) crossentropy_backward(dlogits, dlogits, tg.data(), 1.0f / out->n_targets, N, V);
  FloatBuf dlnf((size_t)N * C);
  gemm(false, false, N, C, V, 1.0f, dlogits, V, param(0), C, 0.0f, dlnf.data(), C);
  if (g[0]) gemm(true, false, V, C, N, 1.0f, dlogits, V, acts.lnf, C, 1.0f, g[0], C);
  logits.clear();
  logits.shrink_to_fit();

  std::vector<float> dres((size_t)N * C, 0.0f);  // gradient of the residual stream
  const float* top = L > 0 ? acts.h[L - 1].res3 : acts.encoded;
  layernorm_backward(dres.data(), g[lnf_w()], g[lnf_b()], dlnf.data(), top, param(lnf_w()), acts.lnf_mean,
                     acts.lnf_rstd, N, C);

  FloatBuf dbig((size_t)N * std::max(I, 3 * C));  // d of fch / qkv
  FloatBuf dmid((size_t)N * C);                             // d of atty / ln outputs
  for (int l = L - 1; l >= 0 && 6 * l + 5 >= min_op; l--) {
    BlockActs& a = acts.h[l];
    auto idx = [&](BlockParam p) { return GPT2Model::block_param(l, p); };
    auto P = [&](BlockParam p) { return param(idx(p)); };
    auto G = [&](BlockParam p) { return g[idx(p)]; };
    const int op0 = 6 * l;
    const float* xin = l > 0 ? acts.h[l - 1].res3 : acts.encoded;

    // op 5: mlp.c_proj — dy = dres
    if (want_capture(idx(kFcProjW))) capture(idx(kFcProjW), a.fch_gelu, dres.data(), I, C);
    linear_backward(min_op < op0 + 5 ? dbig.data() : nullptr, G(kFcProjW), G(kFcProjB), dres.data(), a.fch_gelu,
                    P(kFcProjW), N, I, C, deltas, idx(kFcProjW));
    if (min_op >= op0 + 5) break;
    // op 4: gelu + mlp.c_fc
    gelu_backward(dbig.data(), a.fch, dbig.data(), (int64_t)N * I);
    if (want_capture(idx(kFcW))) capture(idx(kFcW), a.ln2, dbig.data(), C, I);
    linear_backward(min_op < op0 + 4 ? dmid.data() : nullptr, G(kFcW), G(kFcB), dbig.data(), a.ln2, P(kFcW), N, C, I,
                    deltas, idx(kFcW));
    if (min_op >= op0 + 4) break;
    // op 3: ln_2 — dres += LN backward (the residual path already carries dres)
    layernorm_backward(dres.data(), G(kLn2W), G(kLn2B), dmid.data(), a.res2, P(kLn2W), a.ln2_mean, a.ln2_rstd, N, C);
    if (min_op >= op0 + 3) break;
    // op 2: attn.c_proj — dy = dres
    if (want_capture(idx(kAttnProjW))) capture(idx(kAttnProjW), a.atty, dres.data(), C, C);
    linear_backward(min_op < op0 + 2 ? dmid.data() : nullptr, G(kAttnProjW), G(kAttnProjB), dres.data(), a.atty,
                    P(kAttnProjW), N, C, C, deltas, idx(kAttnProjW));
    if (min_op >= op0 + 2) break;
    // op 1: attention + attn.c_attn
    attention_backward(dbig.data(), dmid.data(), a.qkv, a.att, b.mask, B, T, C, NH);
    if (want_capture(idx(kAttnW))) capture(idx(kAttnW), a.ln1, dbig.data(), C, 3 * C);
    linear_backward(min_op < op0 + 1 ? dmid.data() : nullptr, G(kAttnW), G(kAttnB), dbig.data(), a.ln1, P(kAttnW), N,
                    C, 3 * C, deltas, idx(kAttnW));
    if (min_op >= op0 + 1) break;
    // op 0: ln_1
    layernorm_backward(dres.data(), G(kLn1W), G(kLn1B), dmid.data(), xin, P(kLn1W), a.ln1_mean, a.ln1_rstd, N, C);
  }
  if (min_op < 0) encoder_backward(g[0], g[1], dres.data(), b.ids, pos.data(), B, T, C);
  return Status::OK();
}

// ---------------------------------------------------------------------------------------------
// Generation.

namespace {
int32_t pick_token(const float* logits, int V, const GenerateOptions& opt, Rng* rng) {
  if (!(opt.temperature > 0)) {
    return (int32_t)(std::max_element(logits, logits + V) - logits);  // first maximum, like torch.argmax
  }
  std::vector<int32_t> idx(V);
  for (int i = 0; i < V; i++) idx[i] = i;
  int k = (opt.top_k > 0 && opt.top_k < V) ? opt.top_k : V;
  if (k < V)
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  float mx = -INFINITY;
  for (int i = 0; i < k; i++) mx = std::max(mx, logits[idx[i]]);
  std::vector<double> p(k);
  double sum = 0;
  for (int i = 0; i < k; i++) { p[i] = std::exp((double)(logits[idx[i]] - mx) / opt.temperature); sum += p[i]; }
  double u = rng->uniform() * sum;
  for (int i = 0; i < k; i++) { u -= p[i]; if (u <= 0) return idx[i]; }
  return idx[k - 1];
}
}  // namespace

Status GPT2Model::generate(const Batch& b, const GenerateOptions& opt, const WeightDeltas* deltas,
                           std::vector<int32_t>* out, int* n_generated) const {
  MEND_RETURN_IF_ERROR(check_batch(b, false));
  if (opt.max_new_tokens < 0) return Status::Error(code::kInvalidArg, "maxNewTokens must be >= 0");
  if (opt.eos_token_id >= cfg_.vocab_size) return Status::Error(code::kTokenRange, "eosTokenId is outside the vocabulary");
  const int B = b.B, T0 = b.T, C = cfg_.n_embd, V = cfg_.vocab_size;
  const int Tmax = T0 + opt.max_new_tokens;
  if (Tmax > cfg_.n_positions)
    return Status::Error(code::kSeqLen, "prompt length " + std::to_string(T0) + " + maxNewTokens " +
                                            std::to_string(opt.max_new_tokens) + " > n_positions " +
                                            std::to_string(cfg_.n_positions));
  Rng rng(opt.seed);
  // Full-length buffers: ids, mask and positions of prompt + generated tokens.
  std::vector<int32_t> ids((size_t)B * Tmax, 0), mask((size_t)B * Tmax, 1), pos((size_t)B * Tmax, 0);
  for (int r = 0; r < B; r++)
    for (int t = 0; t < T0; t++) {
      ids[(size_t)r * Tmax + t] = b.ids[r * T0 + t];
      mask[(size_t)r * Tmax + t] = b.mask ? b.mask[r * T0 + t] : 1;
    }
  std::vector<int32_t> last_pos(B, -1);
  for (int r = 0; r < B; r++) {
    int c = 0;
    for (int t = 0; t < T0; t++) { c += mask[(size_t)r * Tmax + t] != 0; pos[(size_t)r * Tmax + t] = std::max(0, c - 1); }
    last_pos[r] = c - 1;
  }
  out->assign((size_t)B * opt.max_new_tokens, opt.eos_token_id >= 0 ? opt.eos_token_id : 0);
  std::vector<char> done(B, 0);
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
    Acts acts;
    acts.allocate(cfg_, B, Tin, cfg_.n_layer, false);
    RunSpec s{sid.data(), spos.data(), smask.data(), B, Tin, past, opt.use_cache ? &cache : nullptr};
    run_blocks(*this, s, &acts, deltas);
    for (int r = 0; r < B; r++)
      std::memcpy(h.data() + (size_t)r * C, acts.lnf + ((size_t)r * Tin + Tin - 1) * C, C * sizeof(float));
    lm_head(*this, h.data(), B, logits.data());
    for (int r = 0; r < B; r++) {
      int32_t tok = done[r] ? opt.eos_token_id : pick_token(logits.data() + (size_t)r * V, V, opt, &rng);
      (*out)[(size_t)r * opt.max_new_tokens + step] = tok;
      ids[(size_t)r * Tmax + Tcur] = tok;
      pos[(size_t)r * Tmax + Tcur] = ++last_pos[r];
      if (opt.eos_token_id >= 0 && tok == opt.eos_token_id) done[r] = 1;
    }
    n = step + 1;
    if (opt.eos_token_id >= 0 && std::all_of(done.begin(), done.end(), [](char d) { return d != 0; })) break;
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

Status GPT2Model::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  std::vector<TensorToWrite> t;
  for (size_t i = 0; i < info_.size(); i++) t.push_back({info_[i].name, info_[i].shape, ptr_[i]});
  return safetensors_write(path, t, metadata);
}

}  // namespace mend
