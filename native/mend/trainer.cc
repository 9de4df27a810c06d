// trainer.cc — see trainer.h.
#include "mend/trainer.h"

#include <cmath>

#include "mend/optimizer.h"

namespace mend {

Status EditorTrainer::create(std::shared_ptr<GPT2Model> model, MendEditor editor, const TrainerOptions& opt,
                             std::shared_ptr<EditorTrainer>* out) {
  MEND_RETURN_IF_ERROR(check_editor(*model, editor));
  if (opt.accumulate_bs < 1) return Status::Error(code::kInvalidArg, "accumulateBs must be >= 1");
  std::shared_ptr<EditorTrainer> t(new EditorTrainer());
  t->model_ = std::move(model);
  t->editor_ = std::move(editor);
  t->opt_ = opt;
  t->grads_ = MendGrads::zeros_like(t->editor_);
  pack_editor(&t->editor_);  // fixed until the first optimizer step
  *out = std::move(t);
  return Status::OK();
}

Status EditorTrainer::step(const TrainBatches& b, bool update_stats, bool train, TrainerStepResult* out) {
  if (!b.edit.labels || (b.edit_outer && !b.edit_outer->labels))
    return Status::Error(code::kInvalidArg, "the edit batches need labels");
  update_stats = update_stats && train;
  // Statistics are updated in place: keep a copy of them (not of the weights) to restore if the step fails.
  struct Stats { std::vector<float> u_mean, v_mean, u_std, v_std, u_s, v_s; double k; };
  std::vector<Stats> saved;
  if (update_stats)
    for (const GradientTransform& g : editor_.transforms) saved.push_back({g.u_mean, g.v_mean, g.u_std, g.v_std, g.u_s, g.v_s, g.k});
  Status s = opt_.malmen_prior
                 ? malmen_train_step(*model_, &editor_, *opt_.malmen_prior, b, opt_.cedit, opt_.cloc, update_stats,
                                     train ? &grads_ : nullptr, 1.0f / opt_.accumulate_bs, &out->losses)
                 : mend_train_step(*model_, &editor_, b, opt_.cedit, opt_.cloc, update_stats, train ? &grads_ : nullptr,
                                   1.0f / opt_.accumulate_bs, &out->losses);
  if (!s.ok()) {
    if (update_stats)
      for (size_t i = 0; i < saved.size(); i++) {
        GradientTransform& g = editor_.transforms[i];
        Stats& st = saved[i];
        g.u_mean.swap(st.u_mean); g.v_mean.swap(st.v_mean); g.u_std.swap(st.u_std); g.v_std.swap(st.v_std);
        g.u_s.swap(st.u_s); g.v_s.swap(st.v_s); g.k = st.k;
      }
    return s;
  }
  if (!train) return s;
  steps_++;
  if (steps_ % opt_.accumulate_bs == 0) apply_gradients(out);
  return s;
}

// Clip and Adam over every editor parameter array (α last, with lr_lr); a non-finite norm skips
// the step and drops the gradients, as EasyEdit's safe_backward does.
void EditorTrainer::apply_gradients(TrainerStepResult* out) {
  auto pairs = grads_.pairs(&editor_);
  std::vector<OptimParam> ps(pairs.size());
  for (size_t i = 0; i < pairs.size(); i++) {
    ps[i].grad = pairs[i].first->data();
    ps[i].param = pairs[i].second->data();
    ps[i].n = (int64_t)pairs[i].first->size();
    ps[i].lr = i + 1 == pairs.size() ? opt_.lr_lr : opt_.lr;
  }
  out->grad_norm = grad_global_norm(ps);
  out->stepped = true;
  if (std::isfinite(out->grad_norm)) {
    if (adam_.m.empty())
      for (auto& p : pairs) { adam_.m.emplace_back(p.first->size(), 0.0f); adam_.v.emplace_back(p.first->size(), 0.0f); }
    for (size_t i = 0; i < ps.size(); i++) { ps[i].m = adam_.m[i].data(); ps[i].v = adam_.v[i].data(); }
    adam_.t++;
    clip_and_adamw(ps, out->grad_norm, opt_.grad_clip, AdamWOptions{}, adam_.t);
    pack_editor(&editor_);  // u and v changed: pack them again for the next accumulate_bs steps
  }
  grads_.clear();
}

Status EditorTrainer::set_malmen_prior(std::shared_ptr<const RidgeState> prior) {
  if (!opt_.malmen_prior) return Status::Error(code::kInvalidArg, "this trainer trains a classic MEND editor (no lifelong prior)");
  if (!prior || prior->params.size() != editor_.inner.size())
    return Status::Error(code::kInvalidArg, "the lifelong state does not match the editor's inner params");
  for (size_t k = 0; k < editor_.inner.size(); k++)
    if (prior->params[k].param != editor_.inner[k])
      return Status::Error(code::kInvalidArg, "the lifelong state does not match the editor's inner params");
  opt_.malmen_prior = std::move(prior);
  return Status::OK();
}

MendEditor EditorTrainer::grads() const {
  MendEditor g = editor_;
  for (size_t s = 0; s < g.transforms.size(); s++)
    for (size_t j = 0; j < g.transforms[s].layers.size(); j++) {
      MendLayer& L = g.transforms[s].layers[j];
      const MendGrads::Layer& G = grads_.transforms[s][j];
      L.u = G.u; L.v = G.v; L.bias = G.bias; L.scale = G.scale; L.shift = G.shift;
    }
  g.edit_lrs = grads_.edit_lrs;
  return g;
}

Status EditorTrainer::set_grads(MendEditor g) {
  MendGrads gr = MendGrads::zeros_like(editor_);
  auto dst = gr.pairs(&editor_);
  MendGrads shape = MendGrads::zeros_like(g);
  auto src = shape.pairs(&g);  // second of each pair: g's arrays
  if (src.size() != dst.size()) return Status::Error(code::kInvalidArg, "gradients do not match the editor");
  for (size_t i = 0; i < dst.size(); i++) {
    if (src[i].second->size() != dst[i].first->size())
      return Status::Error(code::kInvalidArg, "gradients do not match the editor's shapes");
    MEND_RETURN_IF_ERROR(check_weights(src[i].second->data(), src[i].second->size(), "the accumulated gradient", kAnyFinite));
    *dst[i].first = *src[i].second;
  }
  grads_ = std::move(gr);
  return Status::OK();
}

Status EditorTrainer::set_optimizer_state(AdamState a, int64_t steps) {
  if (a.t < 0 || steps < 0)
    return Status::Error(code::kInvalidArg, "optimizer state: t " + std::to_string(a.t) + " and steps " + std::to_string(steps) + " must be >= 0");
  for (size_t i = 0; i < a.m.size(); i++) {
    MEND_RETURN_IF_ERROR(check_weights(a.m[i].data(), a.m[i].size(), "optimizer state m[" + std::to_string(i) + "]", kAnyFinite));
    MEND_RETURN_IF_ERROR(check_weights(a.v[i].data(), a.v[i].size(), "optimizer state v[" + std::to_string(i) + "]", kAnyFinite));
    for (float x : a.v[i])
      if (x < 0) return Status::Error(code::kInvalidArg, "optimizer state v[" + std::to_string(i) + "] holds a negative second moment");
  }
  auto pairs = grads_.pairs(&editor_);
  if (!a.m.empty()) {
    if (a.m.size() != pairs.size() || a.v.size() != pairs.size())
      return Status::Error(code::kInvalidArg, "optimizer state does not match the editor");
    for (size_t i = 0; i < pairs.size(); i++)
      if (a.m[i].size() != pairs[i].first->size() || a.v[i].size() != pairs[i].first->size())
        return Status::Error(code::kInvalidArg, "optimizer state does not match the editor's shapes");
  }
  adam_ = std::move(a);
  steps_ = steps;
  return Status::OK();
}

}  // namespace mend
