// overlay.cc — see overlay.h. The products are kernels (lowrank_forward/backward, gemm for a fold).
#include "model/overlay.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "kernels/kernels.h"

namespace mend {

Status Overlay::add_edit(const GPT2Model& base, const Edit& edit, std::map<int, Entry>* entries) {
  // Validate the whole edit before touching anything.
  for (const EditFactors& f : edit) {
    if (f.param < 0 || f.param >= (int)base.params().size() || base.params()[f.param].shape.size() != 2)
      return Status::Error(code::kInvalidArg, "edit factors name a parameter that is not a weight matrix");
    const auto& shape = base.params()[f.param].shape;
    const std::string& name = base.params()[f.param].name;
    if (f.rows < 0 || !f.a || !f.b || (int64_t)f.a->size() != (int64_t)f.rows * shape[0] ||
        (int64_t)f.b->size() != (int64_t)f.rows * shape[1])
      return Status::Error(code::kShape, "edit factors for \"" + name + "\" do not match its shape");
  }
  // Nothing non-finite enters an overlay: every factor is finite and within kMaxWeight (the
  // low-rank product (x·aᵀ)·b must not overflow in its middle, even when b is zero), and the change
  // to each weight, bounded per element by the sum over rows of max|a_r|·max|b_r| (summed over all
  // edits so far), stays within kMaxWeight. Refused before anything changes.
  std::map<int, double> bound;
  for (const EditFactors& f : edit) {
    const std::string& name = base.params()[f.param].name;
    MEND_RETURN_IF_ERROR(check_weights(f.a->data(), f.a->size(), "the edit factor α·Ũ of \"" + name + "\""));
    MEND_RETURN_IF_ERROR(check_weights(f.b->data(), f.b->size(), "the edit factor D̃ of \"" + name + "\""));
    const size_t d_in = (size_t)base.params()[f.param].shape[0], d_out = (size_t)base.params()[f.param].shape[1];
    auto it = entries->find(f.param);
    double& b = bound.emplace(f.param, it == entries->end() ? 0.0 : it->second.bound).first->second;
    for (int r = 0; r < f.rows; r++) {
      float ma = 0, mb = 0;
      for (size_t i = 0; i < d_in; i++) ma = std::max(ma, std::fabs((*f.a)[(size_t)r * d_in + i]));
      for (size_t i = 0; i < d_out; i++) mb = std::max(mb, std::fabs((*f.b)[(size_t)r * d_out + i]));
      b += (double)ma * mb;
    }
    if (!(b <= kMaxWeight)) {
      char v[32];
      std::snprintf(v, sizeof v, "%g", b);
      return Status::Error(code::kNonFinite, "the edit would change \"" + name + "\" by up to " + v +
                                                 " per weight (beyond 1e8, where the model's outputs become NaN); refused");
    }
  }
  for (const EditFactors& f : edit) {
    const auto& shape = base.params()[f.param].shape;
    Entry& e = (*entries)[f.param];
    e.d_in = (int)shape[0];
    e.d_out = (int)shape[1];
    e.a.insert(e.a.end(), f.a->begin(), f.a->end());
    e.b.insert(e.b.end(), f.b->begin(), f.b->end());
    e.R += f.rows;
    e.bound = bound.at(f.param);
    const double break_even = (double)e.d_in * e.d_out / (e.d_in + e.d_out);
    if (e.R > break_even) fold(base, f.param, &e);
  }
  return Status::OK();
}

// merged = (merged or base W) + aᵀ·b; the factors are cleared.
void Overlay::fold(const GPT2Model& base, int param, Entry* e) {
  auto m = e->merged ? std::make_shared<std::vector<float>>(*e->merged)
                     : std::make_shared<std::vector<float>>((size_t)e->d_in * e->d_out);
  if (!e->merged) base.copy_param(param, m->data());
  gemm(true, false, e->d_in, e->d_out, e->R, 1.0f, e->a.data(), e->d_in, e->b.data(), e->d_out, 1.0f, m->data(), e->d_out);
  e->merged = std::move(m);
  e->a.clear(); e->a.shrink_to_fit();
  e->b.clear(); e->b.shrink_to_fit();
  e->R = 0;
}

Status Overlay::build(const GPT2Model& base, const std::vector<const Edit*>& edits, std::shared_ptr<const Overlay>* out) {
  auto o = std::make_shared<Overlay>();
  for (const Edit* e : edits) {
    MEND_RETURN_IF_ERROR(add_edit(base, *e, &o->entries_));
    o->n_edits_++;
  }
  *out = std::move(o);
  return Status::OK();
}

Status Overlay::extend(const GPT2Model& base, const std::shared_ptr<const Overlay>& prev, const Edit& edit,
                       std::shared_ptr<const Overlay>* out) {
  auto o = std::make_shared<Overlay>();
  if (prev) {
    o->entries_ = prev->entries_;  // factors copied (bounded by break-even), merged weights shared
    o->n_edits_ = prev->n_edits_;
  }
  MEND_RETURN_IF_ERROR(add_edit(base, edit, &o->entries_));
  o->n_edits_++;
  *out = std::move(o);
  return Status::OK();
}

Status Overlay::from_merged(const GPT2Model& base, std::map<int, std::vector<float>> merged,
                            std::shared_ptr<const Overlay>* out) {
  for (const auto& kv : merged) {
    if (kv.first < 0 || kv.first >= (int)base.params().size() || base.params()[kv.first].shape.size() != 2)
      return Status::Error(code::kInvalidArg, "merged weights name a parameter that is not a weight matrix");
    const auto& shape = base.params()[kv.first].shape;
    if ((int64_t)kv.second.size() != shape[0] * shape[1])
      return Status::Error(code::kShape, "merged weights for \"" + base.params()[kv.first].name + "\" do not match its shape");
    MEND_RETURN_IF_ERROR(check_weights(kv.second.data(), kv.second.size(), "the edited weight \"" + base.params()[kv.first].name + "\""));
  }
  auto o = std::make_shared<Overlay>();
  for (auto& kv : merged) {
    const auto& shape = base.params()[kv.first].shape;
    Entry& e = o->entries_[kv.first];
    e.d_in = (int)shape[0];
    e.d_out = (int)shape[1];
    e.merged = std::make_shared<const std::vector<float>>(std::move(kv.second));
  }
  o->n_edits_ = 1;
  *out = std::move(o);
  return Status::OK();
}

std::map<int, std::vector<float>> Overlay::merged_weights(const GPT2Model& base) const {
  std::map<int, std::vector<float>> out;
  for (const auto& kv : entries_) {
    Entry e = kv.second;
    if (e.R > 0) fold(base, kv.first, &e);
    std::vector<float>& w = out[kv.first];
    if (e.merged) {
      w = *e.merged;
    } else {
      w.resize((size_t)e.d_in * e.d_out);
      base.copy_param(kv.first, w.data());
    }
  }
  return out;
}

const float* Overlay::weight(int param, const float* base) const {
  auto it = entries_.find(param);
  return it != entries_.end() && it->second.merged ? it->second.merged->data() : base;
}

bool Overlay::has_lowrank(int param) const {
  auto it = entries_.find(param);
  return it != entries_.end() && it->second.R > 0;
}

int Overlay::lowrank_rows(int param) const {
  auto it = entries_.find(param);
  return it == entries_.end() ? 0 : it->second.R;
}

bool Overlay::folded(int param) const {
  auto it = entries_.find(param);
  return it != entries_.end() && it->second.merged != nullptr;
}

void Overlay::forward(int param, const float* inp, int M, float* out) const {
  const Entry& e = entries_.at(param);
  lowrank_forward(out, inp, e.a.data(), e.b.data(), M, e.d_in, e.d_out, e.R);
}

void Overlay::backward_input(int param, const float* dout, int M, float* dinp) const {
  const Entry& e = entries_.at(param);
  lowrank_backward(dinp, dout, e.a.data(), e.b.data(), M, e.d_in, e.d_out, e.R);
}

size_t Overlay::bytes() const {
  size_t n = 0;
  for (const auto& kv : entries_) {
    n += (kv.second.a.size() + kv.second.b.size()) * sizeof(float);
    if (kv.second.merged) n += kv.second.merged->size() * sizeof(float);
  }
  return n;
}

}  // namespace mend
