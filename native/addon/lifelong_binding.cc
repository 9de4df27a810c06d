// lifelong_binding.cc — the lifelong mode (mend/lifelong.h) for JavaScript: the solve state of an
// edit log (NativeRidge), its prior (ridgePrior), moving it by the rows of edits (ridgeUpdate, which
// also returns the overlay W + ΔW), and one edit's keys and value shifts on the base (malmenPropose).
#include <napi.h>

#include <cstring>

#include "addon/batch.h"
#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "mend/lifelong.h"

namespace mend {
namespace addon {
namespace {

class RidgeHandle : public GuardedWrap<RidgeHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeRidge", {
        InstanceMethod("nRows", &RidgeHandle::template guard<&RidgeHandle::NRows>),
        InstanceMethod("bytes", &RidgeHandle::template guard<&RidgeHandle::Bytes>),
    });
  }
  explicit RidgeHandle(const Napi::CallbackInfo& info) : GuardedWrap<RidgeHandle>(info) {}
  void set(Napi::Env env, std::shared_ptr<const RidgeState> s) {
    state = std::move(s);
    reported = (int64_t)bytes_of(*state);
    if (reported) Napi::MemoryManagement::AdjustExternalMemory(env, reported);
  }
  void Finalize(Napi::Env env) override {
    if (reported) Napi::MemoryManagement::AdjustExternalMemory(env, -reported);
  }
  static size_t bytes_of(const RidgeState& s) {
    size_t n = 0;
    for (const RidgeParam& p : s.params) n += (p.P.size() + p.dW.size()) * sizeof(double);
    return n;
  }
  std::shared_ptr<const RidgeState> state;
  int64_t reported = 0;

 private:
  Napi::Value NRows(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), state->n_rows); }
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)bytes_of(*state)); }
};

Napi::Object wrap_ridge(Napi::Env env, std::shared_ptr<const RidgeState> s) {
  Napi::Object h = addon_data(env)->ridge_ctor.New({});
  RidgeHandle::Unwrap(h)->set(env, std::move(s));
  return h;
}

// Row blocks {slot, <a>: Float32Array (rows, d_in), <b>: Float32Array (rows, d_out), ...} of the
// inner weights of s, copied: appends each slot, rows, a and b, or throws (false) with these messages.
struct RowBlockNames {
  const char* a; const char* b;
  const char* not_object; const char* bad_fields; const char* no_slot; const char* bad_shape;
};
bool read_row_blocks(Napi::Env env, const Napi::Array& arr, const RidgeState& s, const RowBlockNames& n, std::vector<int>* slots,
                     std::vector<int>* rows, std::vector<std::vector<float>>* as, std::vector<std::vector<float>>* bs) {
  auto refuse = [&](const char* msg) { make_error(env, code::kInvalidArg, msg).ThrowAsJavaScriptException(); return false; };
  for (uint32_t i = 0; i < arr.Length(); i++) {
    if (!arr.Get(i).IsObject()) return refuse(n.not_object);
    Napi::Object o = arr.Get(i).As<Napi::Object>();
    if (!(o.Get("slot").IsNumber() && is_f32(o.Get(n.a)) && is_f32(o.Get(n.b)))) return refuse(n.bad_fields);
    const int slot = o.Get("slot").As<Napi::Number>().Int32Value();
    if (!(slot >= 0 && slot < (int)s.params.size())) return refuse(n.no_slot);
    const RidgeParam& p = s.params[slot];
    as->push_back(copy_f32(o.Get(n.a)));
    bs->push_back(copy_f32(o.Get(n.b)));
    if (!(as->back().size() % p.d_in == 0 && bs->back().size() % p.d_out == 0 && as->back().size() / p.d_in == bs->back().size() / p.d_out))
      return refuse(n.bad_shape);
    slots->push_back(slot);
    rows->push_back((int)(as->back().size() / p.d_in));
  }
  return true;
}

// ridgePrior(model, [{param, logRidge, mu, c0: Float32Array|null}], sync?) → Promise<NativeRidge>, or
// the NativeRidge itself when sync (for EditTrainer's constructor: one d_in³ solve per inner param).
Napi::Value RidgePrior(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool sync = info.Length() > 2 && info[2].ToBoolean().Value();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::vector<RidgePriorSpec> specs; std::shared_ptr<const RidgeState> out;
    Status run() { return ridge_prior(*m, specs, &out); }
    Napi::Value result(Napi::Env env) { return wrap_ridge(env, out); }
  } w;
  w.m = unwrap_model(env, info[0], "ridgePrior");
  if (!w.m) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsArray(), "Expected an array of priors for ridgePrior");
  Napi::Array a = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    MEND_CHECK_ARG(env, a.Get(i).IsObject(), "Expected {param, logRidge, mu, c0} priors");
    Napi::Object o = a.Get(i).As<Napi::Object>();
    MEND_CHECK_ARG(env, o.Get("param").IsNumber() && o.Get("logRidge").IsNumber() && o.Get("mu").IsNumber(),
                   "Expected numbers for a prior's param, logRidge and mu");
    RidgePriorSpec s;
    s.param = o.Get("param").As<Napi::Number>().Int32Value();
    s.log_ridge = o.Get("logRidge").As<Napi::Number>().DoubleValue();
    s.mu = o.Get("mu").As<Napi::Number>().DoubleValue();
    Napi::Value c0 = o.Get("c0");
    if (!c0.IsNull() && !c0.IsUndefined()) {
      MEND_CHECK_ARG(env, is_f32(c0), "Expected a Float32Array or null for a prior's c0");
      s.c0 = copy_f32(c0);
    }
    w.specs.push_back(std::move(s));
  }
  if (sync) {
    MEND_THROW_IF_ERROR(env, w.run());
    return w.result(env);
  }
  return queue_async(env, std::move(w));
}

// ridgeUpdate(model, state, [{slot, k: Float32Array, v: Float32Array, sign}]) → Promise<{state, overlay}>
Napi::Value RidgeUpdate_(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::shared_ptr<const RidgeState> prev, next; std::shared_ptr<const Overlay> ov;
    std::vector<std::vector<float>> ks, vs; std::vector<RidgeUpdate> ups;
    Status run() {
      for (size_t i = 0; i < ups.size(); i++) { ups[i].k = ks[i].data(); ups[i].v = vs[i].data(); }
      MEND_RETURN_IF_ERROR(ridge_update(*prev, ups, &next));
      return ridge_overlay(*m, *next, &ov);
    }
    Napi::Value result(Napi::Env env) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("state", wrap_ridge(env, next));
      o.Set("overlay", wrap_overlay(env, ov));
      return o;
    }
  } w;
  w.m = unwrap_model(env, info[0], "ridgeUpdate");
  if (!w.m) return env.Undefined();
  w.prev = unwrap_ridge(env, info[1]);
  if (!w.prev) return env.Undefined();
  MEND_CHECK_ARG(env, info[2].IsArray(), "Expected an array of updates for ridgeUpdate");
  Napi::Array a = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++)
    MEND_CHECK_ARG(env, !a.Get(i).IsObject() || a.Get(i).As<Napi::Object>().Get("sign").IsNumber(),
                   "Expected {slot: number, k: Float32Array, v: Float32Array, sign: number} updates");
  std::vector<int> slots, rows;
  if (!read_row_blocks(env, a, *w.prev, {"k", "v", "Expected {slot, k, v, sign} updates",
                                         "Expected {slot: number, k: Float32Array, v: Float32Array, sign: number} updates",
                                         "an update's slot names no inner weight",
                                         "an update's keys and value shifts do not match the inner weight's shape"},
                       &slots, &rows, &w.ks, &w.vs))
    return env.Undefined();
  for (uint32_t i = 0; i < a.Length(); i++) {
    RidgeUpdate u;
    u.slot = slots[i];
    u.rows = rows[i];
    u.sign = a.Get(i).As<Napi::Object>().Get("sign").As<Napi::Number>().Int32Value();
    w.ups.push_back(u);
  }
  return queue_async(env, std::move(w));
}

// ridgeValueGradients(state, g: (Float32Array|null)[] per slot, [{slot, k: Float32Array}], factors?: [{slot, x, d}])
// → Promise<Float32Array[]>: ∂L/∂V = K·(P·G) per key block, G = g + Σ xᵀd (mend/lifelong.h ridge_value_gradients).
Napi::Value RidgeValueGradients(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<const RidgeState> s; std::vector<std::vector<float>> gs, ks, fx, fd; std::vector<KeyBlock> blocks;
    std::vector<GradFactors> factors;
    std::vector<std::vector<float>> out;
    Status run() {
      std::vector<const float*> g(gs.size());
      for (size_t i = 0; i < gs.size(); i++) g[i] = gs[i].empty() ? nullptr : gs[i].data();
      for (size_t i = 0; i < blocks.size(); i++) blocks[i].k = ks[i].data();
      for (size_t i = 0; i < factors.size(); i++) { factors[i].x = fx[i].data(); factors[i].d = fd[i].data(); }
      return ridge_value_gradients(*s, g, factors, blocks, &out);
    }
    Napi::Value result(Napi::Env env) {
      Napi::Array a = Napi::Array::New(env, out.size());
      for (size_t i = 0; i < out.size(); i++) a.Set((uint32_t)i, vector_to_f32(env, std::move(out[i])));
      return a;
    }
  } w;
  w.s = unwrap_ridge(env, info[0]);
  if (!w.s) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsArray() && info[1].As<Napi::Array>().Length() == w.s->params.size(),
                 "Expected one gradient G (Float32Array or null) per inner weight for ridgeValueGradients");
  Napi::Array ga = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < ga.Length(); i++) {
    Napi::Value v = ga.Get(i);
    if (v.IsNull() || v.IsUndefined()) { w.gs.emplace_back(); continue; }
    MEND_CHECK_ARG(env, is_f32(v), "Expected each gradient G as a Float32Array or null");
    w.gs.push_back(copy_f32(v));
    const RidgeParam& p = w.s->params[i];
    MEND_CHECK_ARG(env, w.gs.back().size() == (size_t)p.d_in * p.d_out, "a gradient G does not match its inner weight's shape");
  }
  MEND_CHECK_ARG(env, info[2].IsArray(), "Expected an array of {slot, k} key blocks for ridgeValueGradients");
  Napi::Array a = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    MEND_CHECK_ARG(env, a.Get(i).IsObject(), "Expected {slot, k} key blocks");
    Napi::Object o = a.Get(i).As<Napi::Object>();
    MEND_CHECK_ARG(env, o.Get("slot").IsNumber() && is_f32(o.Get("k")), "Expected {slot: number, k: Float32Array} key blocks");
    KeyBlock b;
    b.slot = o.Get("slot").As<Napi::Number>().Int32Value();
    MEND_CHECK_ARG(env, b.slot >= 0 && b.slot < (int)w.s->params.size(), "a key block's slot names no inner weight");
    w.ks.push_back(copy_f32(o.Get("k")));
    MEND_CHECK_ARG(env, w.ks.back().size() % w.s->params[b.slot].d_in == 0, "a key block does not match its inner weight's d_in");
    b.rows = (int)(w.ks.back().size() / w.s->params[b.slot].d_in);
    w.blocks.push_back(b);
  }
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    MEND_CHECK_ARG(env, info[3].IsArray(), "Expected an array of {slot, x, d} gradient factors for ridgeValueGradients");
    std::vector<int> slots, rows;
    if (!read_row_blocks(env, info[3].As<Napi::Array>(), *w.s, {"x", "d", "Expected {slot, x, d} gradient factors",
                                                                 "Expected {slot: number, x: Float32Array, d: Float32Array} gradient factors",
                                                                 "a gradient factor's slot names no inner weight",
                                                                 "a gradient factor's x and d do not match the inner weight's shape"},
                         &slots, &rows, &w.fx, &w.fd))
      return env.Undefined();
    for (size_t i = 0; i < slots.size(); i++) {
      GradFactors f;
      f.slot = slots[i];
      f.rows = rows[i];
      w.factors.push_back(f);
    }
  }
  return queue_async(env, std::move(w));
}

// ridgeShift(model, state, [{slot, k: Float32Array, v: Float32Array}], coefs: number[]) → Promise<{state, overlay}[]>:
// the state with ΔW + c·P·ΣKᵀV for each c (mend/lifelong.h ridge_shift).
Napi::Value RidgeShift(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::shared_ptr<const RidgeState> s;
    std::vector<std::vector<float>> ks, vs; std::vector<RidgeUpdate> blocks; std::vector<double> coefs;
    std::vector<std::shared_ptr<const RidgeState>> states; std::vector<std::shared_ptr<const Overlay>> ovs;
    Status run() {
      for (size_t i = 0; i < blocks.size(); i++) { blocks[i].k = ks[i].data(); blocks[i].v = vs[i].data(); }
      return ridge_shift(*m, *s, blocks, coefs, &states, &ovs);
    }
    Napi::Value result(Napi::Env env) {
      Napi::Array a = Napi::Array::New(env, states.size());
      for (size_t i = 0; i < states.size(); i++) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("state", wrap_ridge(env, states[i]));
        o.Set("overlay", wrap_overlay(env, ovs[i]));
        a.Set((uint32_t)i, o);
      }
      return a;
    }
  } w;
  w.m = unwrap_model(env, info[0], "ridgeShift");
  if (!w.m) return env.Undefined();
  w.s = unwrap_ridge(env, info[1]);
  if (!w.s) return env.Undefined();
  MEND_CHECK_ARG(env, info[2].IsArray(), "Expected an array of {slot, k, v} value blocks for ridgeShift");
  std::vector<int> slots, rows;
  if (!read_row_blocks(env, info[2].As<Napi::Array>(), *w.s, {"k", "v", "Expected {slot, k, v} value blocks",
                                                               "Expected {slot: number, k: Float32Array, v: Float32Array} value blocks",
                                                               "a value block's slot names no inner weight",
                                                               "a value block's keys and values do not match the inner weight's shape"},
                       &slots, &rows, &w.ks, &w.vs))
    return env.Undefined();
  for (size_t i = 0; i < slots.size(); i++) {
    RidgeUpdate u;
    u.slot = slots[i];
    u.rows = rows[i];
    w.blocks.push_back(u);
  }
  MEND_CHECK_ARG(env, info[3].IsArray(), "Expected an array of coefficients for ridgeShift");
  Napi::Array c = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < c.Length(); i++) {
    MEND_CHECK_ARG(env, c.Get(i).IsNumber(), "Expected numbers as ridgeShift coefficients");
    w.coefs.push_back(c.Get(i).As<Napi::Number>().DoubleValue());
  }
  return queue_async(env, std::move(w));
}

// malmenPropose(model, editor, ids, B, T, mask|null, labels, keyMask: Int32Array|null, live: overlay|null) → Promise<result>
Napi::Value MalmenPropose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::shared_ptr<const MendEditor> e; std::shared_ptr<const Overlay> live;
    OwnedBatch b; std::vector<int32_t> key_mask;
    Proposal p;
    Status run() { return malmen_propose(*m, live.get(), *e, b.view(), key_mask.empty() ? nullptr : key_mask.data(), &p); }
    Napi::Value result(Napi::Env env) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("loss", p.loss);
      Napi::Array rows = Napi::Array::New(env, p.rows.size()), ks = Napi::Array::New(env, p.rows.size()),
                  vs = Napi::Array::New(env, p.rows.size());
      for (size_t k = 0; k < p.rows.size(); k++) {
        rows.Set((uint32_t)k, p.rows[k]);
        ks.Set((uint32_t)k, vector_to_f32(env, std::move(p.keys[k])));
        vs.Set((uint32_t)k, vector_to_f32(env, std::move(p.values[k])));
      }
      o.Set("rows", rows); o.Set("keys", ks); o.Set("values", vs);
      Napi::Object t = Napi::Object::New(env);
      t.Set("preMs", p.ms_pre); t.Set("editorMs", p.ms_editor);
      o.Set("timings", t);
      return o;
    }
  } w;
  w.m = unwrap_model(env, info[0], "malmenPropose");
  if (!w.m) return env.Undefined();
  w.e = unwrap_editor(env, info[1]);
  if (!w.e) return env.Undefined();
  if (!read_batch(env, info[2], info[3], info[4], info[5], info[6], "malmenPropose", true, &w.b)) return env.Undefined();
  Napi::Value km = info[7];
  if (!km.IsNull() && !km.IsUndefined()) {
    MEND_CHECK_ARG(env, km.IsTypedArray() && km.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array,
                   "Expected an Int32Array or null for malmenPropose keyMask");
    Napi::Int32Array a = km.As<Napi::Int32Array>();
    MEND_CHECK_ARG(env, (int64_t)a.ElementLength() == (int64_t)w.b.B * w.b.T, "malmenPropose keyMask must have B*T entries");
    w.key_mask.assign(a.Data(), a.Data() + a.ElementLength());
  }
  bool ok = true;
  w.live = unwrap_overlay(env, info[8], &ok);
  if (!ok) return env.Undefined();
  return queue_async(env, std::move(w));
}

// keyCovariance(model, ids, B, T, mask|null, params: number[]) → Promise<{sums: Float64Array[], count}>
Napi::Value KeyCovariance(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; OwnedBatch b; std::vector<int> params; std::vector<std::vector<double>> sums; int count = 0;
    Status run() { return key_covariance(*m, b.view(), params, &sums, &count); }
    Napi::Value result(Napi::Env env) {
      Napi::Object o = Napi::Object::New(env);
      Napi::Array a = Napi::Array::New(env, sums.size());
      for (size_t i = 0; i < sums.size(); i++) {
        Napi::Float64Array f = Napi::Float64Array::New(env, sums[i].size());
        std::memcpy(f.Data(), sums[i].data(), sums[i].size() * sizeof(double));
        a.Set((uint32_t)i, f);
      }
      o.Set("sums", a);
      o.Set("count", count);
      return o;
    }
  } w;
  w.m = unwrap_model(env, info[0], "keyCovariance");
  if (!w.m) return env.Undefined();
  if (!read_batch(env, info[1], info[2], info[3], info[4], env.Null(), "keyCovariance", false, &w.b)) return env.Undefined();
  MEND_CHECK_ARG(env, info[5].IsArray(), "Expected an array of parameter indices for keyCovariance");
  Napi::Array a = info[5].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    MEND_CHECK_ARG(env, a.Get(i).IsNumber(), "Expected parameter indices for keyCovariance");
    w.params.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  }
  return queue_async(env, std::move(w));
}

}  // namespace

std::shared_ptr<const RidgeState> unwrap_ridge(Napi::Env env, Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env)->ridge_ctor.Value())) {
    make_error(env, code::kInvalidArg, "Expected a native lifelong state").ThrowAsJavaScriptException();
    return nullptr;
  }
  return RidgeHandle::Unwrap(v.As<Napi::Object>())->state;
}

void init_lifelong(Napi::Env env, Napi::Object exports) {
  Napi::Function r = RidgeHandle::Define(env);
  addon_data(env)->ridge_ctor = Napi::Persistent(r);
  exports.Set("NativeRidge", r);
  exports.Set("ridgePrior", Napi::Function::New(env, guard_fn<RidgePrior>));
  exports.Set("ridgeUpdate", Napi::Function::New(env, guard_fn<RidgeUpdate_>));
  exports.Set("malmenPropose", Napi::Function::New(env, guard_fn<MalmenPropose>));
  exports.Set("ridgeValueGradients", Napi::Function::New(env, guard_fn<RidgeValueGradients>));
  exports.Set("ridgeShift", Napi::Function::New(env, guard_fn<RidgeShift>));
  exports.Set("keyCovariance", Napi::Function::New(env, guard_fn<KeyCovariance>));
}

}  // namespace addon
}  // namespace mend
