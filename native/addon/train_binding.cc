// train_binding.cc — NativeTrainer: the JavaScript handle of an EditorTrainer (mend/trainer.h).
// step() runs one training step on a worker thread; while it runs, every other method refuses
// (ERR_BUSY), since the trainer is mutated off the main thread.
#include <napi.h>

#include <cmath>

#include <memory>

#include "addon/batch.h"
#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "mend/trainer.h"

namespace mend {
namespace addon {
namespace {

// Shared by the handle and an in-flight step.
struct TrainerRef {
  std::shared_ptr<EditorTrainer> trainer;
  bool busy = false;  // main thread only
};

class TrainerHandle : public GuardedWrap<TrainerHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeTrainer", {
        InstanceMethod("step", &TrainerHandle::template guard<&TrainerHandle::Step>),
        InstanceMethod("tensors", &TrainerHandle::template guard<&TrainerHandle::Tensors>),
        InstanceMethod("grads", &TrainerHandle::template guard<&TrainerHandle::Grads>),
        InstanceMethod("optimizerState", &TrainerHandle::template guard<&TrainerHandle::OptimizerState>),
        InstanceMethod("setOptimizerState", &TrainerHandle::template guard<&TrainerHandle::SetOptimizerState>),
        InstanceMethod("setGrads", &TrainerHandle::template guard<&TrainerHandle::SetGrads>),
        InstanceMethod("steps", &TrainerHandle::template guard<&TrainerHandle::Steps>),
        InstanceMethod("setMalmenPrior", &TrainerHandle::template guard<&TrainerHandle::SetMalmenPrior>),
    });
  }
  explicit TrainerHandle(const Napi::CallbackInfo& info) : GuardedWrap<TrainerHandle>(info) {}
  std::shared_ptr<TrainerRef> ref;

 private:
  bool idle(Napi::Env env) {
    if (!ref->busy) return true;
    make_error(env, "ERR_BUSY", "the trainer is running a step; await it before the next call").ThrowAsJavaScriptException();
    return false;
  }

  // step(edit, editOuter|null, loc, {updateStats, train}) → Promise<{total, edit, loc, editAcc, preLoss, stepped, gradNorm?}>
  // train = false: losses only (no statistics update, no gradients) — validation and tests.
  Napi::Value Step(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    struct B : Baton {
      std::shared_ptr<TrainerRef> ref;
      OwnedBatch edit, outer, loc;
      bool has_outer = false, update_stats = true, train = true;
      TrainerStepResult r;
      Status run() {
        TrainBatches tb;
        tb.edit = edit.view();
        Batch ob = outer.view();
        tb.edit_outer = has_outer ? &ob : nullptr;
        tb.loc = loc.view();
        return ref->trainer->step(tb, update_stats, train, &r);
      }
      void settled() { ref->busy = false; }
      Napi::Value result(Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("total", r.losses.total); o.Set("edit", r.losses.edit); o.Set("loc", r.losses.loc);
        o.Set("editAcc", r.losses.edit_acc); o.Set("preLoss", r.losses.pre_loss); o.Set("stepped", r.stepped);
        if (r.stepped) o.Set("gradNorm", r.grad_norm);
        return o;
      }
    } w;
    w.ref = ref;
    if (!read_batch_object(env, info[0], "edit", true, &w.edit) || !read_batch_object(env, info[2], "loc", false, &w.loc))
      return env.Undefined();
    if (!is_nullish(info[1])) {
      if (!read_batch_object(env, info[1], "editOuter", true, &w.outer)) return env.Undefined();
      w.has_outer = true;
    }
    if (info[3].IsObject()) {
      Napi::Object o = info[3].As<Napi::Object>();
      if (o.Has("updateStats")) w.update_stats = o.Get("updateStats").ToBoolean().Value();
      if (o.Has("train")) w.train = o.Get("train").ToBoolean().Value();
    }
    ref->busy = true;
    return queue_async(env, std::move(w));
  }

  Napi::Value Tensors(const Napi::CallbackInfo& info) {
    if (!idle(info.Env())) return info.Env().Undefined();
    return editor_to_js(info.Env(), ref->trainer->editor());
  }

  // The accumulated gradients, laid out like tensors().
  Napi::Value Grads(const Napi::CallbackInfo& info) {
    if (!idle(info.Env())) return info.Env().Undefined();
    return editor_to_js(info.Env(), ref->trainer->grads());
  }

  // setMalmenPrior(NativeRidge): the lifelong state the next steps solve on top of.
  Napi::Value SetMalmenPrior(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    auto p = unwrap_ridge(env, info[0]);
    if (!p) return env.Undefined();
    MEND_THROW_IF_ERROR(env, ref->trainer->set_malmen_prior(p));
    return env.Undefined();
  }

  Napi::Value Steps(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), (double)ref->trainer->steps());
  }

  // setGrads(spec): restores accumulated gradients (a checkpoint taken mid-accumulation).
  Napi::Value SetGrads(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsObject(), "Expected a gradient spec object");
    MendEditor g;
    if (!read_editor_spec(env, info[0].As<Napi::Object>(), &g)) return env.Undefined();
    MEND_THROW_IF_ERROR(env, ref->trainer->set_grads(std::move(g)));
    return env.Undefined();
  }

  // {t, steps, m: Float32Array[], v: Float32Array[]} — for checkpoints.
  Napi::Value OptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    const AdamState& a = ref->trainer->adam();
    Napi::Object o = Napi::Object::New(env);
    o.Set("t", a.t);
    o.Set("steps", (double)ref->trainer->steps());
    Napi::Array m = Napi::Array::New(env), v = Napi::Array::New(env);
    for (size_t i = 0; i < a.m.size(); i++) {
      m.Set((uint32_t)i, copy_to_f32(env, a.m[i]));
      v.Set((uint32_t)i, copy_to_f32(env, a.v[i]));
    }
    o.Set("m", m); o.Set("v", v);
    return o;
  }

  Napi::Value SetOptimizerState(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!idle(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsObject(), "Expected an optimizer state object");
    Napi::Object o = info[0].As<Napi::Object>();
    MEND_CHECK_ARG(env, o.Get("m").IsArray() && o.Get("v").IsArray(), "optimizer state: expected arrays m and v");
    Napi::Array m = o.Get("m").As<Napi::Array>(), v = o.Get("v").As<Napi::Array>();
    AdamState a;
    const double t = o.Get("t").ToNumber().DoubleValue(), steps = o.Get("steps").ToNumber().DoubleValue();
    MEND_CHECK_ARG(env, t >= 0 && t <= 2147483647.0 && t == std::floor(t) && steps >= 0 && steps <= 9007199254740991.0 && steps == std::floor(steps),
                   "optimizer state: expected non-negative integers t and steps");
    a.t = (int)t;
    for (uint32_t i = 0; i < m.Length(); i++) {
      MEND_CHECK_ARG(env, is_f32(m.Get(i)) && is_f32(v.Get(i)), "optimizer state: expected Float32Arrays");
      a.m.push_back(copy_f32(m.Get(i)));
      a.v.push_back(copy_f32(v.Get(i)));
    }
    MEND_THROW_IF_ERROR(env, ref->trainer->set_optimizer_state(std::move(a), (int64_t)o.Get("steps").ToNumber().Int64Value()));
    return env.Undefined();
  }
};

// createTrainer(model, spec, {lr, lrLr, cedit, cloc, gradClip, accumulateBs}) → NativeTrainer
Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = unwrap_model(env, info[0], "createTrainer");
  if (!model) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsObject() && info[2].IsObject(), "Expected (model, spec, options) for createTrainer");
  MendEditor editor;
  if (!read_editor_spec(env, info[1].As<Napi::Object>(), &editor)) return env.Undefined();
  Napi::Object o = info[2].As<Napi::Object>();
  auto num = [&](const char* k, float d) { return o.Get(k).IsNumber() ? o.Get(k).As<Napi::Number>().FloatValue() : d; };
  TrainerOptions opt;
  opt.lr = num("lr", opt.lr); opt.lr_lr = num("lrLr", opt.lr_lr); opt.cedit = num("cedit", opt.cedit);
  opt.cloc = num("cloc", opt.cloc); opt.grad_clip = num("gradClip", opt.grad_clip);
  opt.accumulate_bs = (int)num("accumulateBs", (float)opt.accumulate_bs);
  Napi::Value pv = o.Get("malmenPrior");
  if (!pv.IsUndefined() && !pv.IsNull()) {
    opt.malmen_prior = unwrap_ridge(env, pv);
    if (!opt.malmen_prior) return env.Undefined();
  }
  auto ref = std::make_shared<TrainerRef>();
  MEND_THROW_IF_ERROR(env, EditorTrainer::create(model, std::move(editor), opt, &ref->trainer));
  Napi::Object h = addon_data(env)->trainer_ctor.New({});
  TrainerHandle::Unwrap(h)->ref = ref;
  return h;
}

}  // namespace

void init_train(Napi::Env env, Napi::Object exports) {
  Napi::Function f = TrainerHandle::Define(env);
  addon_data(env)->trainer_ctor = Napi::Persistent(f);
  exports.Set("NativeTrainer", f);
  exports.Set("createTrainer", Napi::Function::New(env, guard_fn<CreateTrainer>));
}

}  // namespace addon
}  // namespace mend
