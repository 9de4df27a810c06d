// model_binding.cc — the GPT-2 model handle for JavaScript: load/random construction and the
// Promise-returning forward, lossAndGrad, generate and save. Argument types are checked here (the
// TypeScript layer validates shapes first); the work runs on a worker thread against a
// shared_ptr, so dispose() while a call is in flight is safe.
#include <napi.h>

#include <memory>

#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "gpt2.h"

namespace mend {
namespace addon {
namespace {

Status read_config(const Napi::Object& o, GPT2Config* cfg) {
  auto get = [&](const char* k, int* dst) -> Status {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined() || v.IsNull()) return Status::OK();
    if (!v.IsNumber()) return Status::Error(code::kConfig, std::string("config.") + k + " must be a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != (double)(int)d) return Status::Error(code::kConfig, std::string("config.") + k + " must be an integer");
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

// A batch copied out of JavaScript memory so the worker never touches it.
struct OwnedBatch {
  std::vector<int32_t> ids, mask, labels;
  int B = 0, T = 0;
  Batch view() const {
    Batch b;
    b.ids = ids.data();
    b.mask = mask.empty() ? nullptr : mask.data();
    b.labels = labels.empty() ? nullptr : labels.data();
    b.B = B;
    b.T = T;
    return b;
  }
};

// args: ids Int32Array, B, T, mask Int32Array|null, labels Int32Array|null
bool read_batch(const Napi::CallbackInfo& info, size_t at, OwnedBatch* out) {
  Napi::Env env = info.Env();
  auto fail = [&](const std::string& m) { make_error(env, code::kInvalidArg, m).ThrowAsJavaScriptException(); return false; };
  if (!is_i32(info[at])) return fail("Expected an Int32Array for inputIds");
  if (!info[at + 1].IsNumber() || !info[at + 2].IsNumber()) return fail("Expected numbers for the batch shape");
  out->B = info[at + 1].As<Napi::Number>().Int32Value();
  out->T = info[at + 2].As<Napi::Number>().Int32Value();
  size_t n = (size_t)out->B * out->T;
  if (out->B < 1 || out->T < 1) return fail("inputIds must have at least one row and one column");
  out->ids = copy_i32(info[at]);
  if (out->ids.size() != n) return fail("inputIds has " + std::to_string(out->ids.size()) + " elements, expected B*T = " + std::to_string(n));
  for (int k = 0; k < 2; k++) {
    Napi::Value v = info[at + 3 + k];
    if (v.IsNull() || v.IsUndefined()) continue;
    const char* what = k == 0 ? "attentionMask" : "labels";
    if (!is_i32(v)) return fail(std::string("Expected an Int32Array or null for ") + what);
    auto& dst = k == 0 ? out->mask : out->labels;
    dst = copy_i32(v);
    if (dst.size() != n) return fail(std::string(what) + " has " + std::to_string(dst.size()) + " elements, expected " + std::to_string(n));
  }
  return true;
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

class Model : public Napi::ObjectWrap<Model> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeGPT2", {
        InstanceMethod("paramInfo", &Model::ParamInfo),
        InstanceMethod("param", &Model::Param),
        InstanceMethod("forward", &Model::Forward),
        InstanceMethod("lossAndGrad", &Model::LossAndGrad),
        InstanceMethod("generate", &Model::Generate),
        InstanceMethod("save", &Model::Save),
        InstanceMethod("paramBytes", &Model::ParamBytes),
        InstanceMethod("dispose", &Model::Dispose),
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
  explicit Model(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Model>(info) {}
  std::shared_ptr<GPT2Model> model() const { return model_; }

 private:
  bool alive(Napi::Env env) {
    if (model_) return true;
    make_error(env, code::kClosed, "the model has been disposed").ThrowAsJavaScriptException();
    return false;
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
    std::memcpy(a.Data(), model_->param(i), n * sizeof(float));
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

  // forward(ids, B, T, mask, labels, lastOnly)
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    OwnedBatch batch;
    if (!read_batch(info, 0, &batch)) return env.Undefined();
    ForwardOptions opt;
    opt.last_only = info[5].ToBoolean().Value();
    bool ok = true;
    auto ov = unwrap_overlay(env, info[6], &ok);
    if (!ok) return env.Undefined();
    struct W : PromiseWorker {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; ForwardOptions opt; ForwardResult r;
      using PromiseWorker::PromiseWorker;
      Status run() override { return m->forward(b.view(), opt, ov.get(), &r); }
      Napi::Value result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("logits", vector_to_f32(env, std::move(r.logits)));
        if (r.has_loss) { o.Set("loss", r.loss); o.Set("nTargets", r.n_targets); }
        return o;
      }
    };
    auto* w = new W(env);
    w->m = model_; w->ov = ov; w->b = std::move(batch); w->opt = opt;
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // lossAndGrad(ids, B, T, mask, labels, params: string[] | null, capture: string[], wantLogits)
  Napi::Value LossAndGrad(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    OwnedBatch batch;
    if (!read_batch(info, 0, &batch)) return env.Undefined();
    GradOptions opt;
    if (info[5].IsNull() || info[5].IsUndefined()) {
      for (int i = 0; i < (int)model_->params().size(); i++) opt.params.push_back(i);
    } else if (!read_names(env, info[5], *model_, "params", &opt.params)) {
      return env.Undefined();
    }
    if (!(info[6].IsNull() || info[6].IsUndefined()) && !read_names(env, info[6], *model_, "capture", &opt.capture))
      return env.Undefined();
    opt.want_logits = info[7].ToBoolean().Value();
    bool ok = true;
    auto ov = unwrap_overlay(env, info[8], &ok);
    if (!ok) return env.Undefined();
    struct W : PromiseWorker {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; GradOptions opt; GradResult r;
      using PromiseWorker::PromiseWorker;
      Status run() override { return m->loss_and_grad(b.view(), opt, ov.get(), &r); }
      Napi::Value result(Napi::Env env) override {
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
    };
    auto* w = new W(env);
    w->m = model_; w->ov = ov; w->b = std::move(batch); w->opt = std::move(opt);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // generate(ids, B, T, mask, maxNewTokens, temperature, topK, eosTokenId, seed, useCache)
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    OwnedBatch batch;
    if (!is_i32(info[0])) MEND_THROW(env, code::kInvalidArg, "Expected an Int32Array for inputIds");
    batch.B = info[1].As<Napi::Number>().Int32Value();
    batch.T = info[2].As<Napi::Number>().Int32Value();
    MEND_CHECK_ARG(env, batch.B >= 1 && batch.T >= 1, "inputIds must have at least one row and one column");
    batch.ids = copy_i32(info[0]);
    MEND_CHECK_ARG(env, batch.ids.size() == (size_t)batch.B * batch.T, "inputIds length does not match B*T");
    if (is_i32(info[3])) {
      batch.mask = copy_i32(info[3]);
      MEND_CHECK_ARG(env, batch.mask.size() == batch.ids.size(), "attentionMask length does not match inputIds");
    }
    GenerateOptions opt;
    for (int k = 4; k <= 8; k++) MEND_CHECK_ARG(env, info[k].IsNumber(), "Expected numbers for the generate options");
    opt.max_new_tokens = info[4].As<Napi::Number>().Int32Value();
    opt.temperature = info[5].As<Napi::Number>().FloatValue();
    opt.top_k = info[6].As<Napi::Number>().Int32Value();
    opt.eos_token_id = info[7].As<Napi::Number>().Int32Value();
    opt.seed = (uint64_t)info[8].As<Napi::Number>().Int64Value();
    opt.use_cache = info[9].ToBoolean().Value();
    bool ok = true;
    auto ov = unwrap_overlay(env, info[10], &ok);
    if (!ok) return env.Undefined();
    struct W : PromiseWorker {
      std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> ov; OwnedBatch b; GenerateOptions opt; std::vector<int32_t> out; int n = 0;
      using PromiseWorker::PromiseWorker;
      Status run() override { return m->generate(b.view(), opt, ov.get(), &out, &n); }
      Napi::Value result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("tokens", vector_to_i32(env, out));
        o.Set("n", n);
        return o;
      }
    };
    auto* w = new W(env);
    w->m = model_; w->ov = ov; w->b = std::move(batch); w->opt = opt;
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  // save(path, metadata: Record<string,string>)
  Napi::Value Save(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!alive(env)) return env.Undefined();
    MEND_CHECK_ARG(env, info[0].IsString(), "Expected a path string for save");
    std::map<std::string, std::string> meta;
    if (info[1].IsObject()) {
      Napi::Object o = info[1].As<Napi::Object>();
      Napi::Array keys = o.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); i++) {
        std::string k = keys.Get(i).ToString().Utf8Value();
        meta[k] = o.Get(k).ToString().Utf8Value();
      }
    }
    struct W : PromiseWorker {
      std::shared_ptr<GPT2Model> m; std::string path; std::map<std::string, std::string> meta;
      using PromiseWorker::PromiseWorker;
      Status run() override { return m->save(path, meta); }
      Napi::Value result(Napi::Env env) override { return env.Undefined(); }
    };
    auto* w = new W(env);
    w->m = model_; w->path = info[0].As<Napi::String>().Utf8Value(); w->meta = std::move(meta);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }

  std::shared_ptr<GPT2Model> model_;
  int64_t reported_ = 0;
};

// loadModel(path, config) → Promise<NativeGPT2>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsString(), "Expected a path string for loadModel");
  MEND_CHECK_ARG(env, info[1].IsObject(), "Expected a config object for loadModel");
  GPT2Config cfg;
  Status s = read_config(info[1].As<Napi::Object>(), &cfg);
  if (!s.ok()) { make_error(env, s).ThrowAsJavaScriptException(); return env.Undefined(); }
  struct W : PromiseWorker {
    std::string path; GPT2Config cfg; std::shared_ptr<GPT2Model> m;
    using PromiseWorker::PromiseWorker;
    Status run() override { return GPT2Model::load(path, cfg, &m); }
    Napi::Value result(Napi::Env env) override { return Model::Wrap(env, m); }
  };
  auto* w = new W(env);
  w->path = info[0].As<Napi::String>().Utf8Value(); w->cfg = cfg;
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// randomModel(config, seed) → Promise<NativeGPT2>
Napi::Value RandomModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsObject(), "Expected a config object for randomModel");
  MEND_CHECK_ARG(env, info[1].IsNumber(), "Expected a numeric seed for randomModel");
  GPT2Config cfg;
  Status s = read_config(info[0].As<Napi::Object>(), &cfg);
  if (!s.ok()) { make_error(env, s).ThrowAsJavaScriptException(); return env.Undefined(); }
  struct W : PromiseWorker {
    GPT2Config cfg; uint64_t seed; std::shared_ptr<GPT2Model> m;
    using PromiseWorker::PromiseWorker;
    Status run() override { return GPT2Model::random(cfg, seed, &m); }
    Napi::Value result(Napi::Env env) override { return Model::Wrap(env, m); }
  };
  auto* w = new W(env);
  w->cfg = cfg; w->seed = (uint64_t)info[1].As<Napi::Number>().Int64Value();
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

// createModel(config, tensors: Record<string, Float32Array>) → Promise<NativeGPT2> (the data are copied)
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsObject() && info[1].IsObject(), "Expected (config, tensors) for createModel");
  GPT2Config cfg;
  Status s = read_config(info[0].As<Napi::Object>(), &cfg);
  if (!s.ok()) { make_error(env, s).ThrowAsJavaScriptException(); return env.Undefined(); }
  std::map<std::string, std::vector<float>> tensors;
  Napi::Object o = info[1].As<Napi::Object>();
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) {
    std::string k = keys.Get(i).ToString().Utf8Value();
    MEND_CHECK_ARG(env, is_f32(o.Get(k)), "Expected a Float32Array for tensor \"" + k + "\"");
    tensors[k] = copy_f32(o.Get(k));
  }
  struct W : PromiseWorker {
    GPT2Config cfg; std::map<std::string, std::vector<float>> tensors; std::shared_ptr<GPT2Model> m;
    using PromiseWorker::PromiseWorker;
    Status run() override { return GPT2Model::from_tensors(cfg, std::move(tensors), &m); }
    Napi::Value result(Napi::Env env) override { return Model::Wrap(env, m); }
  };
  auto* w = new W(env);
  w->cfg = cfg; w->tensors = std::move(tensors);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
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
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("randomModel", Napi::Function::New(env, RandomModel));
  exports.Set("createModel", Napi::Function::New(env, CreateModel));
}

}  // namespace addon
}  // namespace mend
