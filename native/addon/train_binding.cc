// train_binding.cc — NativeTrainer: an editor being trained (mutable, owned here), its accumulated
// gradients and both Adam optimizers (editor: lr, α: lrLr). step() runs one training step on a
// worker thread; every accumulateBs steps it clips the global gradient norm and steps Adam.
#include <napi.h>

#include <cmath>
#include <memory>

#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "kernels/kernels.h"
#include "mend_train.h"

namespace mend {
namespace addon {
namespace {

struct OwnedBatch {
  std::vector<int32_t> ids, mask, labels;
  int B = 0, T = 0;
  Batch view() const {
    Batch b;
    b.ids = ids.data(); b.mask = mask.empty() ? nullptr : mask.data(); b.labels = labels.empty() ? nullptr : labels.data();
    b.B = B; b.T = T;
    return b;
  }
};

// {ids: Int32Array, B, T, mask: Int32Array|null, labels: Int32Array|null}
bool read_batch_obj(Napi::Env env, Napi::Value v, const char* what, OwnedBatch* out) {
  auto fail = [&](const std::string& m) { make_error(env, code::kInvalidArg, m).ThrowAsJavaScriptException(); return false; };
  if (!v.IsObject()) return fail(std::string("Expected a batch object for ") + what);
  Napi::Object o = v.As<Napi::Object>();
  if (!is_i32(o.Get("ids")) || !o.Get("B").IsNumber() || !o.Get("T").IsNumber()) return fail(std::string("Expected {ids, B, T} for ") + what);
  out->ids = copy_i32(o.Get("ids"));
  out->B = o.Get("B").As<Napi::Number>().Int32Value();
  out->T = o.Get("T").As<Napi::Number>().Int32Value();
  const size_t n = (size_t)out->B * out->T;
  if (out->B < 1 || out->T < 1 || out->ids.size() != n) return fail(std::string(what) + ": ids do not hold B*T values");
  if (is_i32(o.Get("mask"))) out->mask = copy_i32(o.Get("mask"));
  if (is_i32(o.Get("labels"))) out->labels = copy_i32(o.Get("labels"));
  if ((!out->mask.empty() && out->mask.size() != n) || (!out->labels.empty() && out->labels.size() != n))
    return fail(std::string(what) + ": mask/labels do not hold B*T values");
  return true;
}

struct AdamState {
  std::vector<std::vector<float>> m, v;
  int t = 0;
};

struct TrainerState {
  std::shared_ptr<GPT2Model> model;
  MendEditor editor;
  MendGrads grads;
  AdamState adam;
  float lr = 1e-6f, lr_lr = 1e-4f, cedit = 0.1f, cloc = 1.0f, grad_clip = 100.0f;
  int accumulate_bs = 10;
  int64_t steps = 0;  // training steps taken (gradient contributions)
  bool busy = false;
};

class TrainerHandle : public Napi::ObjectWrap<TrainerHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTrainer", {
        InstanceMethod("step", &TrainerHandle::Step),
        InstanceMethod("tensors", &TrainerHandle::Tensors),
        InstanceMethod("grads", &TrainerHandle::Grads),
        InstanceMethod("optimizerState", &TrainerHandle::OptimizerState),
        InstanceMethod("setOptimizerState", &TrainerHandle::SetOptimizerState),
        InstanceMethod("setGrads", &TrainerHandle::SetGrads),
        InstanceMethod("steps", &TrainerHandle::Steps),
    });
  }
  explicit TrainerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerHandle>(info) {}
  std::shared_ptr<TrainerState> st;

 private:
  bool idle(Napi::Env env) {
    if (!st->busy) return true;
    make_error(env, "ERR_BUSY", "the trainer is running a step; await it before the next call").ThrowAsJavaScriptException();
    return false;
  }

  // step(edit, editOuter|null, loc, {updateStats, train}) → Promise<{total, edit, loc, editAcc, preLoss, stepped, gradNorm?}>
  // train = false: losses only (no statistics update, no gradients) — validation and tests.
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    struct W : PromiseWorker {
      std::shared_ptr<TrainerState> st;
      OwnedBatch edit, outer, loc;
      bool has_outer = false, update_stats = true, train = true, stepped = false;
      double grad_norm = 0;
      TrainStepResult r;
      using PromiseWorker::PromiseWorker;
      Status run() override {
        TrainBatches tb;
        tb.edit = edit.view();
        Batch ob = outer.view();
        tb.edit_outer = has_outer ? &ob : nullptr;
        tb.loc = loc.view();
        if (!tb.edit.labels || (has_outer && !ob.labels))
          return Status::Error(code::kInvalidArg, "the edit batches need labels");
        // Statistics are updated in place: keep a copy to restore if the step fails.
        std::vector<GradientTransform> saved;
        if (update_stats) saved = st->editor.transforms;
        Status s = mend_train_step(*st->model, &st->editor, tb, st->cedit, st->cloc, train && update_stats,
                                   train ? &st->grads : nullptr, 1.0f / st->accumulate_bs, &r);
        if (!s.ok()) {
          if (update_stats) st->editor.transforms = std::move(saved);
          return s;
        }
        if (!train) return s;
        st->steps++;
        if (st->steps % st->accumulate_bs == 0) optimizer_step();
        return s;
      }
      void optimizer_step() {
        auto pairs = st->grads.pairs(&st->editor);
        double sq = 0;
        for (auto& p : pairs) for (float g : *p.first) sq += (double)g * g;
        grad_norm = std::sqrt(sq);
        stepped = true;
        if (!std::isfinite(grad_norm)) { st->grads.clear(); return; }  // skip, as safe_backward does
        const double coef = grad_norm > st->grad_clip ? st->grad_clip / (grad_norm + 1e-6) : 1.0;
        AdamState& a = st->adam;
        if (a.m.empty()) {
          for (auto& p : pairs) { a.m.emplace_back(p.first->size(), 0.0f); a.v.emplace_back(p.first->size(), 0.0f); }
        }
        a.t++;
        for (size_t i = 0; i < pairs.size(); i++) {
          std::vector<float>& g = *pairs[i].first;
          if (coef != 1.0) for (float& x : g) x = (float)(x * coef);
          const bool is_alpha = i + 1 == pairs.size();
          adamw_update(pairs[i].second->data(), g.data(), a.m[i].data(), a.v[i].data(), (int64_t)g.size(),
                       is_alpha ? st->lr_lr : st->lr, 0.9f, 0.999f, 1e-8f, 0.0f, a.t);
        }
        st->grads.clear();
      }
      Napi::Value result(Napi::Env env) override {
        st->busy = false;
        Napi::Object o = Napi::Object::New(env);
        o.Set("total", r.total); o.Set("edit", r.edit); o.Set("loc", r.loc); o.Set("editAcc", r.edit_acc);
        o.Set("preLoss", r.pre_loss); o.Set("stepped", stepped);
        if (stepped) o.Set("gradNorm", grad_norm);
        return o;
      }
      void OnError(const Napi::Error& e) override { st->busy = false; PromiseWorker::OnError(e); }
      void OnOK() override {
        if (!status_.ok()) st->busy = false;
        PromiseWorker::OnOK();
      }
    };
    auto* w = new W(env);
    w->st = st;
    if (!read_batch_obj(env, info[0], "edit", &w->edit) || !read_batch_obj(env, info[2], "loc", &w->loc)) { delete w; return env.Undefined(); }
    if (!info[1].IsNull() && !info[1].IsUndefined()) {
      if (!read_batch_obj(env, info[1], "editOuter", &w->outer)) { delete w; return env.Undefined(); }
      w->has_outer = true;
    }
    if (info[3].IsObject()) {
      Napi::Object o = info[3].As<Napi::Object>();
      if (o.Has("updateStats")) w->update_stats = o.Get("updateStats").ToBoolean().Value();
      if (o.Has("train")) w->train = o.Get("train").ToBoolean().Value();
    }
    if (!w->train) w->update_stats = false;
    st->busy = true;
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  Napi::Value Tensors(const Napi::CallbackInfo& info) {
    if (!idle(info.Env())) return info.Env().Undefined();
    return editor_to_js(info.Env(), st->editor);
  }

  // The accumulated gradients, laid out like tensors().
  Napi::Value Grads(const Napi::CallbackInfo& info) {
    if (!idle(info.Env())) return info.Env().Undefined();
    MendEditor g = st->editor;
    MendGrads& gr = st->grads;
    for (size_t s = 0; s < g.transforms.size(); s++)
      for (size_t j = 0; j < g.transforms[s].layers.size(); j++) {
        MendLayer& L = g.transforms[s].layers[j];
        const MendGrads::Layer& G = gr.transforms[s][j];
        L.u = G.u; L.v = G.v; L.bias = G.bias; L.scale = G.scale; L.shift = G.shift;
      }
    g.edit_lrs = gr.edit_lrs;
    return editor_to_js(info.Env(), g);
  }

  Napi::Value Steps(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)st->steps); }

  // setGrads(spec): restores accumulated gradients (a checkpoint taken mid-accumulation).
  Napi::Value SetGrads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsObject(), "Expected a gradient spec object");
    MendEditor g;
    if (!read_editor_spec(env, info[0].As<Napi::Object>(), &g)) return env.Undefined();
    MendGrads gr = MendGrads::zeros_like(st->editor);
    auto dst = gr.pairs(&st->editor);
    MendGrads shape = MendGrads::zeros_like(g);
    auto src = shape.pairs(&g);  // second of each pair: the arrays read into g
    MEND_CHECK_ARG(env, src.size() == dst.size(), "gradients do not match the editor");
    for (size_t i = 0; i < dst.size(); i++) {
      MEND_CHECK_ARG(env, src[i].second->size() == dst[i].first->size(), "gradients do not match the editor's shapes");
      *dst[i].first = *src[i].second;
    }
    st->grads = std::move(gr);
    return env.Undefined();
  }

  // {t, steps, m: Float32Array[], v: Float32Array[]} — for checkpoints.
  Napi::Value OptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("t", st->adam.t);
    o.Set("steps", (double)st->steps);
    Napi::Array m = Napi::Array::New(env), v = Napi::Array::New(env);
    for (size_t i = 0; i < st->adam.m.size(); i++) {
      std::vector<float> a = st->adam.m[i], b = st->adam.v[i];
      m.Set((uint32_t)i, vector_to_f32(env, std::move(a)));
      v.Set((uint32_t)i, vector_to_f32(env, std::move(b)));
    }
    o.Set("m", m); o.Set("v", v);
    return o;
  }

  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsObject(), "Expected an optimizer state object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto pairs = st->grads.pairs(&st->editor);
    Napi::Array m = o.Get("m").As<Napi::Array>(), v = o.Get("v").As<Napi::Array>();
    AdamState a;
    a.t = o.Get("t").ToNumber().Int32Value();
    if (m.Length() != 0) {
      MEND_CHECK_ARG(env, m.Length() == pairs.size() && v.Length() == pairs.size(), "optimizer state does not match the editor");
      for (uint32_t i = 0; i < m.Length(); i++) {
        MEND_CHECK_ARG(env, is_f32(m.Get(i)) && is_f32(v.Get(i)), "optimizer state: expected Float32Arrays");
        a.m.push_back(copy_f32(m.Get(i)));
        a.v.push_back(copy_f32(v.Get(i)));
        MEND_CHECK_ARG(env, a.m.back().size() == pairs[i].first->size() && a.v.back().size() == pairs[i].first->size(),
                       "optimizer state does not match the editor's shapes");
      }
    }
    st->adam = std::move(a);
    st->steps = (int64_t)o.Get("steps").ToNumber().Int64Value();
    return env.Undefined();
  }
};

// createTrainer(model, spec, {lr, lrLr, cedit, cloc, gradClip, accumulateBs}) → NativeTrainer
Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = unwrap_model(env, info[0], "createTrainer");
  if (!model) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsObject() && info[2].IsObject(), "Expected (model, spec, options) for createTrainer");
  auto st = std::make_shared<TrainerState>();
  st->model = model;
  if (!read_editor_spec(env, info[1].As<Napi::Object>(), &st->editor)) return env.Undefined();
  Status s = check_editor(*model, st->editor);
  if (!s.ok()) { make_error(env, s).ThrowAsJavaScriptException(); return env.Undefined(); }
  Napi::Object o = info[2].As<Napi::Object>();
  auto num = [&](const char* k, float d) { return o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().FloatValue() : d; };
  st->lr = num("lr", 1e-6f); st->lr_lr = num("lrLr", 1e-4f); st->cedit = num("cedit", 0.1f); st->cloc = num("cloc", 1.0f);
  st->grad_clip = num("gradClip", 100.0f);
  st->accumulate_bs = (int)num("accumulateBs", 10);
  MEND_CHECK_ARG(env, st->accumulate_bs >= 1, "accumulateBs must be >= 1");
  st->grads = MendGrads::zeros_like(st->editor);
  Napi::Object h = addon_data(env)->trainer_ctor.New({});
  TrainerHandle::Unwrap(h)->st = st;
  return h;
}

}  // namespace

void init_train(Napi::Env env, Napi::Object exports) {
  Napi::Function f = TrainerHandle::Define(env);
  addon_data(env)->trainer_ctor = Napi::Persistent(f);
  exports.Set("NativeTrainer", f);
  exports.Set("createTrainer", Napi::Function::New(env, CreateTrainer));
}

}  // namespace addon
}  // namespace mend
