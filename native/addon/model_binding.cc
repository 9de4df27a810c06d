// model_binding.cc — the GPT-2 model handle for JavaScript: load/random/create construction and
// the Promise-returning forward, lossAndGrad, generate and save. Argument types are checked here (the
// TypeScript layer validates shapes first); the work runs on a worker thread against a
// shared_ptr, so dispose() while a call is in flight is safe.
#include <napi.h>

#include <cmath>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>

#include "addon/batch.h"
#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "model/gpt2.h"

namespace mend {
namespace addon {
namespace {

Status read_config(const Napi::Object& o, GPT2Config* cfg) {
  auto get = [&](const char* k, int* dst) -> Status {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined() || v.IsNull()) return Status::OK();
    if (!v.IsNumber()) return Status::Error(code::kConfig, std::string("config.") + k + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != std::floor(d))
      return Status::Error(code::kConfig, std::string("config.") + k + " must be an integer in [-2^31, 2^31) but is " + std::to_string(d));
    *dst = (int)d;
    return Status::OK();
  };
  MEND_RETURN_IF_ERROR(get("nLayer", &cfg->n_layer));
  MEND_RETURN_IF_ERROR(get("nHead", &cfg->n_head));
  MEND_RETURN_IF_ERROR(get("nEmbd", &cfg->n_embd));
  MEND_RETURN_IF_ERROR(get("nInner", &cfg->n_inner));
  MEND_RETURN_IF_ERROR(get("vocabSize", &cfg->vocab_size));
  MEND_RETURN_IF_ERROR(get("nPositions", &cfg->n_positions));
  Napi::Value eps = o.Get("layerNormEpsilon");
  if (eps.IsNumber()) cfg->layer_norm_eps = eps.As<Napi::Number>().FloatValue();
  return cfg->validate();
}

// args at..at+4: ids Int32Array, B, T, mask Int32Array|null, labels Int32Array|null
bool read_batch_args(const Napi::CallbackInfo& info, size_t at, OwnedBatch* out) {
  return read_batch(info.Env(), info[at], info[at + 1], info[at + 2], info[at + 3], info[at + 4], "", false, out);
}

bool read_names(Napi::Env env, const Napi::Value& v, const GPT2Model& m, const char* what, std::vector<int>* out) {
  if (!v.IsArray()) {
    make_error(env, code::kInvalidArg, std::string("Expected an array of parameter names for ") + what).ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    int idx = e.IsString() ? m.param_index(e.As<Napi::String>().Utf8Value()) : -1;
    if (idx < 0) {
      std::string name = e.IsString() ? e.As<Napi::String>().Utf8Value() : "(not a string)";
      make_error(env, code::kInvalidArg, std::string(what) + ": unknown parameter \"" + name + "\"").ThrowAsJavaScriptException();
      return false;
    }
    if (std::find(out->begin(), out->end(), idx) == out->end()) out->push_back(idx);
  }
  return true;
}

class Model : public GuardedWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeGPT2", {
        InstanceMethod("paramInfo", &Model::template guard<&Model::ParamInfo>),
        InstanceMethod("param", &Model::template guard<&Model::Param>),
        InstanceMethod("forward", &Model::template guard<&Model::Forward>),
        InstanceMethod("lossAndGrad", &Model::template guard<&Model::LossAndGrad>),
        InstanceMethod("generate", &Model::template guard<&Model::Generate>),
        InstanceMethod("save", &Model::template guard<&Model::Save>),
        InstanceMethod("paramBytes", &Model::template guard<&Model::ParamBytes>),
        InstanceMethod("dispose", &Model::template guard<&Model::Dispose>),
    });
  }
  static Napi::Object Wrap(Napi::Env env, std::shared_ptr<GPT2Model> m) {
    Napi::Object o = addon_data(env)->model_ctor.New({});
    Model* w = Unwrap(o);
    w->reported_ = (int64_t)m->owned_bytes();
    if (w->reported_) Napi::MemoryManagement::AdjustExternalMemory(env, w->reported_);
    w->model_ = std::move(m);
    return o;
  }
  // Heap memory the model owns is reported to V8 (mapped weights are not heap), so dropped models
  // are collected promptly.
  void Finalize(Napi::Env env) override {
    if (reported_) Napi::MemoryManagement::AdjustExternalMemory(env, -reported_);
  }
  explicit Model(const Napi::CallbackInfo& info) : GuardedWrap<Model>(info) {}
  std::shared_ptr<GPT2Model> model() const { return model_; }

 private:
  bool alive(Napi::Env env) {
    if (model_) return true;
    make_error(env, code::kClosed, "the model has been disposed").ThrowAsJavaScriptException();
    return false;
  }

  // Queues a call on this model (and the overlay argument: null = the base model) with baton w.
  template <class B>
  Napi::Value queue_call(Napi::Env env, const Napi::Value& overlay, B&& w) {
    bool ok = true;
    w.ov = unwrap_overlay(env, overlay, &ok);
    if (!ok) return env.Undefined();
    w.m = model_;
    return queue_async(env, std::move(w));
  }

  Napi::Value ParamInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    const auto& ps = model_->params();
    Napi::Array a = Napi::Array::New(env, ps.size());
    for (size_t i = 0; i < ps.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", ps[i].name);
      Napi::Array s = Napi::Array::New(env, ps[i].shape.size());
      for (size_t k = 0; k < ps[i].shape.size(); k++) s.Set((uint32_t)k, Napi::Number::New(env, (double)ps[i].shape[k]));
      o.Set("shape", s);
      a.Set((uint32_t)i, o);
    }
    return a;
  }

  // A copy of one parameter (the base is immutable; a view would let JavaScript write it).
  Napi::Value Param(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsString(), "Expected a parameter name");
    std::string name = info[0].As<Napi::String>().Utf8Value();
    int i = model_->param_index(name);
    if (i < 0) MEND_THROW(env, code::kInvalidArg, "unknown parameter \"" + name + "\"");
    size_t n = (size_t)model_->params()[i].numel();
    Napi::Float32Array a = Napi::Float32Array::New(env, n);
    model_->copy_param(i, a.Data());
    return a;
  }

  Napi::Value ParamBytes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    return Napi::Number::New(env, (double)model_->param_bytes());
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  // forward(ids, B, T, mask, labels, lastOnly, overlay)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    struct B : Baton {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; ForwardOptions opt; ForwardResult r;
      Status run() { return m->forward(b.view(), opt, ov.get(), &r); }
      Napi::Value result(Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("logits", vector_to_f32(env, std::move(r.logits)));
        if (r.has_loss) { o.Set("loss", r.loss); o.Set("nTargets", r.n_targets); }
        return o;
      }
    } w;
    if (!read_batch_args(info, 0, &w.b)) return env.Undefined();
    w.opt.last_only = info[5].ToBoolean().Value();
    return queue_call(env, info[6], std::move(w));
  }

  // lossAndGrad(ids, B, T, mask, labels, params: string[] | null, capture: string[], wantLogits, overlay)
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    struct B : Baton {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; GradOptions opt; GradResult r;
      Status run() { return m->loss_and_grad(b.view(), opt, ov.get(), &r); }
      Napi::Value result(Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("loss", r.loss);
        o.Set("nTargets", r.n_targets);
        Napi::Object g = Napi::Object::New(env);
        for (auto& kv : r.grads) g.Set(m->params()[kv.first].name, vector_to_f32(env, std::move(kv.second)));
        o.Set("grads", g);
        Napi::Object c = Napi::Object::New(env);
        for (auto& kv : r.captures) {
          Napi::Object xd = Napi::Object::New(env);
          xd.Set("x", vector_to_f32(env, std::move(kv.second.x)));
          xd.Set("d", vector_to_f32(env, std::move(kv.second.d)));
          c.Set(m->params()[kv.first].name, xd);
        }
        o.Set("captures", c);
        if (!r.logits.empty()) o.Set("logits", vector_to_f32(env, std::move(r.logits)));
        return o;
      }
    } w;
    if (!read_batch_args(info, 0, &w.b)) return env.Undefined();
    if (is_nullish(info[5])) {
      for (int i = 0; i < (int)model_->params().size(); i++) w.opt.params.push_back(i);
    } else if (!read_names(env, info[5], *model_, "params", &w.opt.params)) {
      return env.Undefined();
    }
    if (!is_nullish(info[6]) && !read_names(env, info[6], *model_, "capture", &w.opt.capture)) return env.Undefined();
    w.opt.want_logits = info[7].ToBoolean().Value();
    return queue_call(env, info[8], std::move(w));
  }

  // generate(ids, B, T, mask, {maxNewTokens, temperature, topK, topP, repetitionPenalty, eosTokenId, seed, useCache}, overlay)
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    struct B : Baton {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; GenerateOptions opt;
      std::vector<int32_t> out; int n = 0;
      Status run() { return m->generate(b.view(), opt, ov.get(), &out, &n); }
      Napi::Value result(Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("tokens", vector_to_i32(env, out));
        o.Set("n", n);
        return o;
      }
    } w;
    if (!read_batch(env, info[0], info[1], info[2], info[3], env.Undefined(), "", false, &w.b)) return env.Undefined();
    MEND_CHECK_ARG(env, info[4].IsObject(),
                   "Expected an options object {maxNewTokens, temperature, topK, eosTokenId, seed, useCache} for generate");
    Napi::Object o = info[4].As<Napi::Object>();
    // Absent options keep GenerateOptions' defaults; a present one must have the right type.
    for (const char* k : {"maxNewTokens", "temperature", "topK", "topP", "repetitionPenalty", "eosTokenId", "seed"})
      MEND_CHECK_ARG(env, o.Get(k).IsUndefined() || o.Get(k).IsNumber(),
                     std::string("Expected a number for generate options.") + k);
    auto given = [&](const char* k) { return !o.Get(k).IsUndefined(); };
    auto num = [&](const char* k) { return o.Get(k).As<Napi::Number>(); };
    if (given("maxNewTokens")) w.opt.max_new_tokens = num("maxNewTokens").Int32Value();
    if (given("temperature")) w.opt.temperature = num("temperature").FloatValue();
    if (given("topK")) w.opt.top_k = num("topK").Int32Value();
    if (given("topP")) w.opt.top_p = num("topP").FloatValue();
    if (given("repetitionPenalty")) w.opt.repetition_penalty = num("repetitionPenalty").FloatValue();
    if (given("eosTokenId")) w.opt.eos_token_id = num("eosTokenId").Int32Value();
    if (given("seed")) w.opt.seed = (uint64_t)num("seed").Int64Value();
    Napi::Value uc = o.Get("useCache");
    MEND_CHECK_ARG(env, uc.IsUndefined() || uc.IsBoolean(), "Expected a boolean for generate options.useCache");
    w.opt.use_cache = uc.IsUndefined() ? true : uc.As<Napi::Boolean>().Value();
    return queue_call(env, info[5], std::move(w));
  }

  // save(path, metadata: Record<string,string>)
  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsString(), "Expected a path string for save");
    struct B : Baton {
      std::shared_ptr<GPT2Model> m; std::string path; std::map<std::string, std::string> meta;
      Status run() { return m->save(path, meta); }
      Napi::Value result(Napi::Env env) { return env.Undefined(); }
    } w;
    w.m = model_;
    w.path = info[0].As<Napi::String>().Utf8Value();
    if (info[1].IsObject()) w.meta = read_string_map(info[1].As<Napi::Object>());
    return queue_async(env, std::move(w));
  }

  std::shared_ptr<GPT2Model> model_;
  int64_t reported_ = 0;
};

// A model made on a worker thread, wrapped on the main thread.
struct NewModel : Baton {
  std::shared_ptr<GPT2Model> m;
  Napi::Value result(Napi::Env env) { return Model::Wrap(env, m); }
};

// loadModel(path, config, mmap?) → Promise<NativeGPT2>; mmap: map the file instead of reading it
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsString(), "Expected a path string for loadModel");
  MEND_CHECK_ARG(env, info[1].IsObject(), "Expected a config object for loadModel");
  MEND_CHECK_ARG(env, info.Length() < 3 || info[2].IsUndefined() || info[2].IsBoolean(), "Expected a boolean (mmap) for loadModel");
  struct B : NewModel {
    std::string path; GPT2Config cfg; bool map_file = false;
    Status run() { return GPT2Model::load(path, cfg, &m, map_file); }
  } w;
  MEND_THROW_IF_ERROR(env, read_config(info[1].As<Napi::Object>(), &w.cfg));
  w.path = info[0].As<Napi::String>().Utf8Value();
  w.map_file = info.Length() >= 3 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  return queue_async(env, std::move(w));
}

// randomModel(config, seed) → Promise<NativeGPT2>
Napi::Value RandomModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsObject(), "Expected a config object for randomModel");
  MEND_CHECK_ARG(env, info[1].IsNumber(), "Expected a numeric seed for randomModel");
  struct B : NewModel {
    GPT2Config cfg; uint64_t seed = 0;
    Status run() { return GPT2Model::random(cfg, seed, &m); }
  } w;
  MEND_THROW_IF_ERROR(env, read_config(info[0].As<Napi::Object>(), &w.cfg));
  w.seed = (uint64_t)info[1].As<Napi::Number>().Int64Value();
  return queue_async(env, std::move(w));
}

// createModel(config, tensors: Record<string, Float32Array>) → Promise<NativeGPT2> (the data are copied)
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsObject() && info[1].IsObject(), "Expected (config, tensors) for createModel");
  struct B : NewModel {
    GPT2Config cfg; std::map<std::string, std::vector<float>> tensors;
    Status run() { return GPT2Model::from_tensors(cfg, std::move(tensors), &m); }
  } w;
  MEND_THROW_IF_ERROR(env, read_config(info[0].As<Napi::Object>(), &w.cfg));
  Napi::Object o = info[1].As<Napi::Object>();
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) {
    std::string k = keys.Get(i).ToString().Utf8Value();
    MEND_CHECK_ARG(env, is_f32(o.Get(k)), "Expected a Float32Array for tensor \"" + k + "\"");
    w.tensors[k] = copy_f32(o.Get(k));
  }
  return queue_async(env, std::move(w));
}

}  // namespace

std::shared_ptr<GPT2Model> unwrap_model(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env)->model_ctor.Value())) {
    make_error(env, code::kInvalidArg, std::string("Expected a native model for ") + what).ThrowAsJavaScriptException();
    return nullptr;
  }
  auto m = Model::Unwrap(v.As<Napi::Object>())->model();
  if (!m) make_error(env, code::kClosed, "the model has been disposed").ThrowAsJavaScriptException();
  return m;
}

Napi::Object wrap_model(Napi::Env env, std::shared_ptr<GPT2Model> m) { return Model::Wrap(env, std::move(m)); }

void init_model(Napi::Env env, Napi::Object exports) {
  Napi::Function f = Model::Define(env);
  addon_data(env)->model_ctor = Napi::Persistent(f);
  exports.Set("NativeGPT2", f);
  exports.Set("loadModel", Napi::Function::New(env, guard_fn<LoadModel>));
  exports.Set("randomModel", Napi::Function::New(env, guard_fn<RandomModel>));
  exports.Set("createModel", Napi::Function::New(env, guard_fn<CreateModel>));
}

}  // namespace addon
}  // namespace mend
