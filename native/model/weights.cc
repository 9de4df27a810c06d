// weights.cc — where a GPT2Model's parameters come from and go to: a safetensors file (read, or
// mapped on request; either name style), HF-style random initialisation, tensors handed over from JavaScript, a copy
// with some parameters replaced (materialize), and saving. The model computes in model/gpt2.cc.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/threadpool.h"
#include "io/safetensors.h"
#include "kernels/rng.h"
#include "model/gpt2.h"

namespace mend {

GPT2Model::GPT2Model(const GPT2Config& cfg)
    : cfg_(cfg), info_(param_table(cfg)), ptr_(info_.size(), nullptr), packed_(info_.size()) {
  std::vector<int> index(info_.size());
  std::iota(index.begin(), index.end(), 0);
  ids_ = point_params(index, cfg.n_layer);
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

Status GPT2Model::load(const std::string& path, const GPT2Config& cfg, std::shared_ptr<GPT2Model>* out, bool map_file) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::unique_ptr<SafetensorsFile> f;
  MEND_RETURN_IF_ERROR(SafetensorsFile::open(path, &f, map_file));
  std::shared_ptr<GPT2Model> m(new GPT2Model(cfg));
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
    // The same rule as from_tensors: no NaN, Inf or overflowing weight enters a model.
    MEND_RETURN_IF_ERROR(check_weights(data, (size_t)p.numel(), path + ": tensor \"" + t->name + "\""));
    m->ptr_[i] = data;
  }
  // Private memory (the file's copy or a conversion) is the model's own: packed in place.
  m->pack_weights(!m->file_->mapped());
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::random(const GPT2Config& cfg, uint64_t seed, std::shared_ptr<GPT2Model>* out) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::shared_ptr<GPT2Model> m(new GPT2Model(cfg));
  // One buffer for every parameter but wte, which gets its own (pack_wte releases it once packed).
  const int iwte = m->ids_.wte;
  size_t total = 0;
  for (size_t i = 0; i < m->info_.size(); i++)
    if ((int)i != iwte) total += (size_t)m->info_[i].numel();
  auto buf = std::make_shared<std::vector<float>>(total);
  auto wte = std::make_shared<std::vector<float>>((size_t)m->info_[iwte].numel());
  // Each parameter gets its own stream so initialisation can run in parallel and stay deterministic.
  std::vector<float*> base(m->info_.size());
  size_t off = 0;
  for (size_t i = 0; i < m->info_.size(); i++) {
    if ((int)i == iwte) { base[i] = wte->data(); continue; }
    base[i] = buf->data() + off;
    off += (size_t)m->info_[i].numel();
  }
  const double proj_std = 0.02 / std::sqrt(2.0 * cfg.n_layer);
  // Tasks of at most kChunk values, so that one large tensor (wte: 38.6M values for GPT-2 small,
  // 80M for XL) is spread over the threads too. Chunk 0 of parameter i draws from the stream it
  // always had (seed * 1000003 + i), chunk c > 0 from its own stream: the values depend on the seed
  // only, never on the thread count, and a model whose tensors all fit one chunk (the bundled
  // WorldFacts model) is what it was before chunking.
  constexpr int64_t kChunk = 1 << 20;
  std::vector<std::pair<int, int64_t>> tasks;  // (parameter, chunk)
  for (size_t i = 0; i < m->info_.size(); i++)
    for (int64_t c = 0; c * kChunk < std::max<int64_t>(1, m->info_[i].numel()); c++) tasks.push_back({(int)i, c});
  parallel_tasks((int64_t)tasks.size(), [&](int64_t t) {
    const int i = tasks[t].first;
    const int64_t c = tasks[t].second;
    const ParamInfo& p = m->info_[i];
    const int64_t b = c * kChunk, e = std::min<int64_t>(p.numel(), b + kChunk);
    float* d = base[i];
    const std::string& nm = p.name;
    bool is_ln = nm.find(".ln_") != std::string::npos;
    bool is_bias = nm.size() > 5 && nm.compare(nm.size() - 5, 5, ".bias") == 0;
    if (is_ln && !is_bias) { std::fill(d + b, d + e, 1.0f); return; }
    if (is_bias) { std::fill(d + b, d + e, 0.0f); return; }
    bool is_proj = nm.find("c_proj.weight") != std::string::npos;
    double sd = is_proj ? proj_std : 0.02;
    const uint64_t stream = seed * 1000003ull + (uint64_t)i;
    Rng r(c == 0 ? stream : Rng(stream ^ ((uint64_t)c * 0xD1B54A32D192ED03ull)).next());
    for (int64_t k = b; k < e; k++) d[k] = (float)(r.normal() * sd);
  });
  for (size_t i = 0; i < m->info_.size(); i++) m->ptr_[i] = base[i];
  m->owned_.push_back(buf);
  m->owned_.push_back(wte);
  m->pack_weights(true);
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::from_tensors(const GPT2Config& cfg, std::map<std::string, std::vector<float>>&& tensors,
                               std::shared_ptr<GPT2Model>* out) {
  MEND_RETURN_IF_ERROR(cfg.validate());
  std::shared_ptr<GPT2Model> m(new GPT2Model(cfg));
  for (size_t i = 0; i < m->info_.size(); i++) {
    const ParamInfo& p = m->info_[i];
    auto it = tensors.find(p.name);
    if (it == tensors.end()) it = tensors.find(p.name.substr(std::strlen("transformer.")));
    if (it == tensors.end()) return Status::Error(code::kMissingTensor, "missing tensor \"" + p.name + "\"");
    if ((int64_t)it->second.size() != p.numel())
      return Status::Error(code::kShape, "tensor \"" + p.name + "\" has " + std::to_string(it->second.size()) +
                                             " values, expected " + std::to_string(p.numel()));
    MEND_RETURN_IF_ERROR(check_weights(it->second.data(), it->second.size(), "tensor \"" + p.name + "\""));
    auto buf = std::make_shared<std::vector<float>>(std::move(it->second));
    m->ptr_[i] = buf->data();
    m->owned_.push_back(std::move(buf));
  }
  m->pack_weights(true);
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
    MEND_RETURN_IF_ERROR(check_weights(kv.second.data(), kv.second.size(), "the merged weight \"" + info_[kv.first].name + "\""));
    auto v = std::make_shared<std::vector<float>>(std::move(kv.second));
    m->ptr_[kv.first] = v->data();
    m->packed_[kv.first] = PackedMatrix{};
    m->owned_.push_back(v);
  }
  // The replaced weights are this model's own; the rest (shared with this model) are packed already.
  m->pack_weights(true);
  *out = std::move(m);
  return Status::OK();
}

Status GPT2Model::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
  std::vector<TensorToWrite> t;
  std::vector<std::vector<float>> unpacked;  // row-major copies of the weights kept only packed
  unpacked.reserve(info_.size());
  for (size_t i = 0; i < info_.size(); i++) {
    const float* p = ptr_[i];
    if (!p) {
      unpacked.emplace_back((size_t)info_[i].numel());
      copy_param((int)i, unpacked.back().data());
      p = unpacked.back().data();
    }
    // never write a weight that would not load again (nothing is written then)
    MEND_RETURN_IF_ERROR(check_weights(p, (size_t)info_[i].numel(), path + ": tensor \"" + info_[i].name + "\""));
    t.push_back({info_[i].name, info_[i].shape, p});
  }
  return safetensors_write(path, t, metadata);
}

void GPT2Model::copy_param(int i, float* dst) const {
  if (ptr_[i]) std::memcpy(dst, ptr_[i], (size_t)info_[i].numel() * sizeof(float));
  else if (i == ids_.wte) unpack_matrix_t(packed_[i], dst);
  else unpack_matrix(packed_[i], dst);
}

void GPT2Model::pack_weights(bool writable) {
  std::vector<float> tmp;
  for (size_t i = 0; i < info_.size(); i++) {
    const ParamInfo& p = info_[i];
    if (packed_[i].data) continue;  // packed already (a with_replaced copy shares it)
    if ((int)i == ids_.wte) {
      pack_wte(writable);
      continue;
    }
    if (!p.conv1d) continue;
    const int K = (int)p.shape[0], N = (int)p.shape[1];
    if (writable && packed_floats(K, N) == (size_t)p.numel()) {
      // Same size (N a multiple of 16): the packed form replaces the row-major one in its storage.
      tmp.resize((size_t)p.numel());
      pack_matrix(ptr_[i], K, N, tmp.data());
      float* w = const_cast<float*>(ptr_[i]);  // this model's own storage (writable)
      std::memcpy(w, tmp.data(), tmp.size() * sizeof(float));
      packed_[i] = PackedMatrix{w, K, N};
      ptr_[i] = nullptr;
    } else {
      auto buf = std::make_shared<std::vector<float>>(packed_floats(K, N));
      pack_matrix(ptr_[i], K, N, buf->data());
      packed_[i] = PackedMatrix{buf->data(), K, N};
      owned_.push_back(std::move(buf));
    }
  }
}

void GPT2Model::pack_wte(bool writable) {
  // The tied embedding / LM head, wte (V, C), kept as wteᵀ (C, V) packed: the LM head's GEMMs stream
  // it in place (kernels.h gemm_packed_nt / _nn; at B = 1 and 16 tokens, transposing wte into panels
  // on every forward cost about as much as the product). Its row-major storage is then given up where
  // it is this model's own, so one copy stays resident; a read-only file mapping is kept beside it.
  const int i = ids_.wte, V = cfg_.vocab_size, C = cfg_.n_embd;
  const float* src = ptr_[i];
  const size_t bytes = (size_t)V * C * sizeof(float);
  auto buf = std::make_shared<std::vector<float>>(packed_floats(C, V));
  pack_matrix_t(src, V, C, buf->data());
  packed_[i] = PackedMatrix{buf->data(), C, V};
  owned_.push_back(std::move(buf));
  if (!writable) return;
  ptr_[i] = nullptr;
  // Its own vector (generated, converted, handed over or replaced): released with the last holder.
  for (auto it = owned_.begin(); it != owned_.end(); ++it)
    if ((*it)->data() == src && (*it)->size() * sizeof(float) == bytes) {
      owned_.erase(it);
      return;
    }
  // Inside the file's private copy: its pages go back to the system (never read again).
  if (file_) file_->discard(src, bytes);
}

}  // namespace mend
