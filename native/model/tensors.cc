// tensors.cc — the parameter table resolved for a config, and THE activation table (see tensors.h).
#include "model/tensors.h"

#include <algorithm>
#include <cmath>

namespace mend {

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
  // Sizes a user controls, bounded before anything is allocated: every tensor indexable with 32-bit
  // sizes (the kernels' ints), and at most 2^34 parameters (64 GiB of float32) in all.
  const int64_t C = n_embd, I = inner(), V = vocab_size, P = n_positions, L = n_layer;
  if (C > (1 << 20) || I > (1 << 22) || V > (1 << 26) || P > (1 << 20))
    return Status::Error(code::kConfig, "config: n_embd (at most 2^20), n_inner (2^22), vocab_size (2^26) or n_positions (2^20) is too large");
  const int64_t largest = std::max({V * C, P * C, C * 3 * C, C * I});  // no overflow after the bounds above
  if (largest > 2147483647)
    return Status::Error(code::kConfig, "config: a tensor of this model would have " + std::to_string(largest) +
                                            " elements (n_embd, n_inner, vocab_size, n_positions too large for 32-bit sizes)");
  const int64_t total = V * C + P * C + L * (4 * C * C + 2 * C * I + 9 * C + I) + 2 * C;
  if (total > ((int64_t)1 << 34))
    return Status::Error(code::kConfig, "config: the model would have " + std::to_string(total) + " parameters (more than 2^34)");
  return Status::OK();
}

int64_t dim_size(const GPT2Config& cfg, Dim d) {
  switch (d) {
    case Dim::None: return 1;
    case Dim::C: return cfg.n_embd;
    case Dim::C3: return 3 * (int64_t)cfg.n_embd;
    case Dim::I: return cfg.inner();
    case Dim::V: return cfg.vocab_size;
    case Dim::P: return cfg.n_positions;
  }
  return 0;
}

int64_t ParamInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<ParamInfo> param_table(const GPT2Config& cfg) {
  std::vector<ParamInfo> out;
  ParameterTensors<int> t;
  t.h.resize(cfg.n_layer);
  visit_params(t, [&](int& slot, const ParamSpec& s, int layer) {
    slot = (int)out.size();
    ParamInfo p;
    p.name = layer < 0 ? std::string("transformer.") + s.name
                       : "transformer.h." + std::to_string(layer) + "." + s.name;
    p.shape.push_back(dim_size(cfg, s.rows));
    if (s.cols != Dim::None) p.shape.push_back(dim_size(cfg, s.cols));
    p.layer = layer;
    p.op = layer >= 0 ? backward_op(layer, (BlockOp)s.op) : s.op == kOpEmbedding ? kOpEmbedding : final_op(cfg.n_layer);
    p.conv1d = s.conv1d;
    out.push_back(std::move(p));
  });
  return out;
}

namespace {

struct ActDims {
  size_t N, C, I, att;  // rows, n_embd, inner, elements of one block's saved attention (0: none)
};

// THE activation table: f(slot, elements) for every tensor of one block, in layout order.
template <class F>
void visit_block_acts(BlockActs& a, const ActDims& d, F&& f) {
  f(a.ln1, d.N * d.C);
  f(a.ln1_mean, d.N);
  f(a.ln1_rstd, d.N);
  f(a.qkv, d.N * 3 * d.C);
  f(a.att, d.att);
  f(a.atty, d.N * d.C);
  f(a.res2, d.N * d.C);
  f(a.ln2, d.N * d.C);
  f(a.ln2_mean, d.N);
  f(a.ln2_rstd, d.N);
  f(a.fch, d.N * d.I);
  f(a.fch_gelu, d.N * d.I);
  f(a.res3, d.N * d.C);
}

// ... and for the whole call: the embeddings, each block that owns its activations (the shared
// scratch first when save_from > 0), the final LayerNorm.
template <class F>
void visit_acts(ActivationTensors& t, const ActDims& d, int save_from, F&& f) {
  f(t.encoded, d.N * d.C);
  if (save_from > 0) visit_block_acts(t.h[0], d, f);
  for (size_t l = save_from; l < t.h.size(); l++) visit_block_acts(t.h[l], d, f);
  f(t.lnf, d.N * d.C);
  f(t.lnf_mean, d.N);
  f(t.lnf_rstd, d.N);
}

}  // namespace

void ActivationTensors::allocate(const GPT2Config& cfg, int B, int T, int save_from, bool save_att) {
  const ActDims d{(size_t)B * T, (size_t)cfg.n_embd, (size_t)cfg.inner(),
                  save_att ? (size_t)B * cfg.n_head * T * T : 0};
  h.assign(cfg.n_layer, BlockActs{});
  size_t total = 0;
  visit_acts(*this, d, save_from, [&](float*&, size_t n) { total += n; });
  buf.resize(total);  // uninitialised: every activation is written before it is read
  float* p = buf.data();
  visit_acts(*this, d, save_from, [&](float*& slot, size_t n) { slot = n ? p : nullptr; p += n; });
  for (int l = 1; l < save_from; l++) h[l] = h[0];  // the blocks below save_from share the scratch
}

}  // namespace mend
