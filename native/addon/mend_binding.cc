// mend_binding.cc — MEND handles for JavaScript: the editor (NativeEditor), the overlay of an edited
// model (NativeOverlay), one edit (mendEdit), rebuilding an overlay from an edit log (buildOverlay)
// and merging it into a plain model (materialize). Tensors are copied in on the main thread.
#include <napi.h>

#include <cstring>

#include "addon/batch.h"
#include "addon/bindings.h"
#include "addon/handles.h"
#include "addon/util.h"
#include "mend/edit.h"
#include "model/overlay.h"

namespace mend {
namespace addon {
namespace {

class OverlayHandle : public GuardedWrap<OverlayHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeOverlay", {
        InstanceMethod("bytes", &OverlayHandle::template guard<&OverlayHandle::Bytes>),
        InstanceMethod("nEdits", &OverlayHandle::template guard<&OverlayHandle::NEdits>),
        InstanceMethod("lowrankRows", &OverlayHandle::template guard<&OverlayHandle::LowrankRows>),
        InstanceMethod("folded", &OverlayHandle::template guard<&OverlayHandle::Folded>),
    });
  }
  explicit OverlayHandle(const Napi::CallbackInfo& info) : GuardedWrap<OverlayHandle>(info) {}
  // Native bytes reported to V8, so that dropped edited models are collected promptly (V8 cannot
  // see the factors and merged weights an overlay holds).
  void set(Napi::Env env, std::shared_ptr<const Overlay> o) {
    overlay = std::move(o);
    reported = overlay ? (int64_t)overlay->bytes() : 0;
    if (reported) Napi::MemoryManagement::AdjustExternalMemory(env, reported);
  }
  void Finalize(Napi::Env env) override {
    if (reported) Napi::MemoryManagement::AdjustExternalMemory(env, -reported);
  }
  std::shared_ptr<const Overlay> overlay;
  int64_t reported = 0;

 private:
  Napi::Value Bytes(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), (double)overlay->bytes()); }
  Napi::Value NEdits(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), overlay->n_edits()); }
  // lowrankRows(paramIndex), folded(paramIndex)
  Napi::Value LowrankRows(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), overlay->lowrank_rows(info[0].As<Napi::Number>().Int32Value()));
  }
  Napi::Value Folded(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), overlay->folded(info[0].As<Napi::Number>().Int32Value()));
  }
};

}  // namespace

// The editor's tensors as createEditor takes them (copies).
Napi::Object editor_to_js(Napi::Env env, const MendEditor& e) {
  auto f32 = [&](const std::vector<float>& v) { return copy_to_f32(env, v); };
  auto ints = [&](const std::vector<int>& v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set((uint32_t)i, v[i]);
    return a;
  };
  Napi::Object o = Napi::Object::New(env);
  o.Set("inner", ints(e.inner));
  o.Set("transformOf", ints(e.transform_of));
  o.Set("modeOf", ints(e.mode_of));
  o.Set("editLrs", f32(e.edit_lrs));
  Napi::Array ts = Napi::Array::New(env, e.transforms.size());
  for (size_t s = 0; s < e.transforms.size(); s++) {
    const GradientTransform& g = e.transforms[s];
    Napi::Object t = Napi::Object::New(env);
    t.Set("dIn", g.d_in); t.Set("dOut", g.d_out); t.Set("rank", g.rank); t.Set("nModes", g.n_modes);
    Napi::Array ls = Napi::Array::New(env, g.layers.size());
    for (size_t j = 0; j < g.layers.size(); j++) {
      const MendLayer& L = g.layers[j];
      Napi::Object l = Napi::Object::New(env);
      l.Set("u", f32(L.u)); l.Set("v", f32(L.v)); l.Set("bias", f32(L.bias));
      l.Set("scale", f32(L.scale)); l.Set("shift", f32(L.shift)); l.Set("relu", L.relu);
      ls.Set((uint32_t)j, l);
    }
    t.Set("layers", ls);
    t.Set("uMean", f32(g.u_mean)); t.Set("vMean", f32(g.v_mean)); t.Set("uStd", f32(g.u_std));
    t.Set("vStd", f32(g.v_std)); t.Set("uS", f32(g.u_s)); t.Set("vS", f32(g.v_s)); t.Set("k", g.k);
    ts.Set((uint32_t)s, t);
  }
  o.Set("transforms", ts);
  return o;
}

namespace {

class EditorHandle : public GuardedWrap<EditorHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEditor", {InstanceMethod("tensors", &EditorHandle::template guard<&EditorHandle::Tensors>)});
  }
  explicit EditorHandle(const Napi::CallbackInfo& info) : GuardedWrap<EditorHandle>(info) {}
  std::shared_ptr<const MendEditor> editor;

 private:
  // The editor's tensors as createEditor takes them (copies).
  Napi::Value Tensors(const Napi::CallbackInfo& info) { return editor_to_js(info.Env(), *editor); }
};

bool read_f32(Napi::Env env, Napi::Object o, const char* key, const std::string& where, std::vector<float>* out) {
  Napi::Value v = o.Get(key);
  if (!is_f32(v)) {
    make_error(env, code::kInvalidArg, "Expected a Float32Array for " + where + "." + key).ThrowAsJavaScriptException();
    return false;
  }
  *out = copy_f32(v);
  return true;
}

bool read_int_array(Napi::Env env, Napi::Object o, const char* key, std::vector<int>* out) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) {
    make_error(env, code::kInvalidArg, std::string("Expected an array of integers for ") + key).ThrowAsJavaScriptException();
    return false;
  }
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out->push_back(a.Get(i).ToNumber().Int32Value());
  return true;
}

}  // namespace

bool read_editor_spec(Napi::Env env, Napi::Object spec, MendEditor* e) {
  if (!read_int_array(env, spec, "inner", &e->inner) || !read_int_array(env, spec, "transformOf", &e->transform_of) ||
      !read_int_array(env, spec, "modeOf", &e->mode_of) || !read_f32(env, spec, "editLrs", "editor", &e->edit_lrs))
    return false;
  Napi::Value tv = spec.Get("transforms");
  if (!tv.IsArray()) { make_error(env, code::kInvalidArg, "Expected an array for transforms").ThrowAsJavaScriptException(); return false; }
  Napi::Array ts = tv.As<Napi::Array>();
  for (uint32_t s = 0; s < ts.Length(); s++) {
    Napi::Object t = ts.Get(s).As<Napi::Object>();
    GradientTransform g;
    g.d_in = t.Get("dIn").ToNumber().Int32Value();
    g.d_out = t.Get("dOut").ToNumber().Int32Value();
    g.rank = t.Get("rank").ToNumber().Int32Value();
    g.n_modes = t.Get("nModes").ToNumber().Int32Value();
    g.k = t.Get("k").ToNumber().DoubleValue();
    std::string where = "mend.(" + std::to_string(g.d_in) + ", " + std::to_string(g.d_out) + ")";
    Napi::Value lv = t.Get("layers");
    if (!lv.IsArray()) { make_error(env, code::kInvalidArg, "Expected an array for " + where + ".layers").ThrowAsJavaScriptException(); return false; }
    Napi::Array ls = lv.As<Napi::Array>();
    for (uint32_t j = 0; j < ls.Length(); j++) {
      Napi::Object l = ls.Get(j).As<Napi::Object>();
      MendLayer L;
      std::string lw = where + ".mlp.layers." + std::to_string(j);
      if (!read_f32(env, l, "u", lw, &L.u) || !read_f32(env, l, "v", lw, &L.v) || !read_f32(env, l, "bias", lw, &L.bias) ||
          !read_f32(env, l, "scale", lw, &L.scale) || !read_f32(env, l, "shift", lw, &L.shift))
        return false;
      // Absent = EasyEdit's clamp; anything but a boolean is refused (it would silently change the network).
      Napi::Value rv = l.Get("relu");
      if (!rv.IsUndefined() && !rv.IsBoolean()) {
        make_error(env, code::kInvalidArg, "Expected a boolean for " + lw + ".relu").ThrowAsJavaScriptException();
        return false;
      }
      L.relu = rv.IsUndefined() ? true : rv.As<Napi::Boolean>().Value();
      g.layers.push_back(std::move(L));
    }
    if (!read_f32(env, t, "uMean", where, &g.u_mean) || !read_f32(env, t, "vMean", where, &g.v_mean) ||
        !read_f32(env, t, "uStd", where, &g.u_std) || !read_f32(env, t, "vStd", where, &g.v_std) ||
        !read_f32(env, t, "uS", where, &g.u_s) || !read_f32(env, t, "vS", where, &g.v_s))
      return false;
    e->transforms.push_back(std::move(g));
  }
  return true;
}

namespace {

// createEditor(model, spec) → NativeEditor; the spec is the shape Tensors() returns.
Napi::Value CreateEditor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = unwrap_model(env, info[0], "createEditor");
  if (!model) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsObject(), "Expected an editor spec object");
  Napi::Object spec = info[1].As<Napi::Object>();
  auto e = std::make_shared<MendEditor>();
  if (!read_editor_spec(env, spec, e.get())) return env.Undefined();
  MEND_THROW_IF_ERROR(env, check_editor(*model, *e));
  pack_editor_transposed(e.get());  // a handle's editor is immutable: its u and v streamed packed by every edit
  Napi::Object o = addon_data(env)->editor_ctor.New({});
  EditorHandle::Unwrap(o)->editor = e;
  return o;
}

// mendEdit(model, overlay|null, editor, ids, B, T, mask|null, labels) → Promise<result>
Napi::Value MendEdit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::shared_ptr<const Overlay> prev, next; std::shared_ptr<const MendEditor> e;
    OwnedBatch b; Edit edit; EditInfo ei;
    Status run() { return mend_edit(*m, prev, *e, b.view(), &next, &edit, &ei); }
    Napi::Value result(Napi::Env env) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("loss", ei.loss);
      Napi::Array kept = Napi::Array::New(env, ei.kept.size()), cos = Napi::Array::New(env, ei.cos.size());
      Napi::Array us = Napi::Array::New(env, ei.u.size()), ds = Napi::Array::New(env, ei.d.size());
      for (size_t k = 0; k < ei.kept.size(); k++) {
        kept.Set((uint32_t)k, ei.kept[k]);
        cos.Set((uint32_t)k, ei.cos[k]);
        us.Set((uint32_t)k, vector_to_f32(env, std::move(ei.u[k])));
        ds.Set((uint32_t)k, vector_to_f32(env, std::move(ei.d[k])));
      }
      o.Set("kept", kept); o.Set("cos", cos); o.Set("u", us); o.Set("d", ds);
      Napi::Object t = Napi::Object::New(env);
      t.Set("preMs", ei.ms_pre); t.Set("editorMs", ei.ms_editor); t.Set("overlayMs", ei.ms_overlay);
      o.Set("timings", t);
      o.Set("overlay", wrap_overlay(env, next));
      return o;
    }
  } w;
  w.m = unwrap_model(env, info[0], "mendEdit");
  if (!w.m) return env.Undefined();
  bool ok = true;
  w.prev = unwrap_overlay(env, info[1], &ok);
  if (!ok) return env.Undefined();
  w.e = unwrap_editor(env, info[2]);
  if (!w.e) return env.Undefined();
  if (!read_batch(env, info[3], info[4], info[5], info[6], info[7], "mendEdit", true, &w.b)) return env.Undefined();
  return queue_async(env, std::move(w));
}

// buildOverlay(model, edits: Array<Array<{param: number, a: Float32Array, b: Float32Array}>>) → Promise<NativeOverlay>
Napi::Value BuildOverlay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = unwrap_model(env, info[0], "buildOverlay");
  if (!model) return env.Undefined();
  MEND_CHECK_ARG(env, info[1].IsArray(), "Expected an array of edits for buildOverlay");
  Napi::Array edits = info[1].As<Napi::Array>();
  std::vector<Edit> all(edits.Length());
  for (uint32_t i = 0; i < edits.Length(); i++) {
    MEND_CHECK_ARG(env, edits.Get(i).IsArray(), "Expected each edit to be an array of factors");
    Napi::Array fs = edits.Get(i).As<Napi::Array>();
    for (uint32_t j = 0; j < fs.Length(); j++) {
      Napi::Object fo = fs.Get(j).As<Napi::Object>();
      MEND_CHECK_ARG(env, fo.Get("param").IsNumber() && is_f32(fo.Get("a")) && is_f32(fo.Get("b")),
                     "Expected {param, a: Float32Array, b: Float32Array} edit factors");
      EditFactors f;
      f.param = fo.Get("param").As<Napi::Number>().Int32Value();
      auto a = std::make_shared<std::vector<float>>(copy_f32(fo.Get("a")));
      auto b = std::make_shared<std::vector<float>>(copy_f32(fo.Get("b")));
      MEND_CHECK_ARG(env, f.param >= 0 && f.param < (int)model->params().size() && model->params()[f.param].conv1d,
                     "edit factors name a parameter that is not an editable Conv1D weight");
      MEND_CHECK_ARG(env, a->size() % (size_t)model->params()[f.param].shape[0] == 0,
                     "edit factors for \"" + model->params()[f.param].name + "\" do not match its shape");
      f.rows = (int)(a->size() / model->params()[f.param].shape[0]);
      f.a = a; f.b = b;
      all[i].push_back(std::move(f));
    }
  }
  struct B : Baton {
    std::shared_ptr<GPT2Model> m; std::vector<Edit> edits; std::shared_ptr<const Overlay> out;
    Status run() {
      std::vector<const Edit*> ptrs;
      for (const Edit& e : edits) ptrs.push_back(&e);
      return Overlay::build(*m, ptrs, &out);
    }
    Napi::Value result(Napi::Env env) { return wrap_overlay(env, out); }
  } w;
  w.m = model; w.edits = std::move(all);
  return queue_async(env, std::move(w));
}

// materialize(model, overlay) → Promise<NativeGPT2> with merged weights (base storage shared otherwise).
Napi::Value Materialize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto model = unwrap_model(env, info[0], "materialize");
  if (!model) return env.Undefined();
  bool ok = true;
  auto ov = unwrap_overlay(env, info[1], &ok);
  if (!ok) return env.Undefined();
  struct B : Baton {
    std::shared_ptr<GPT2Model> m, out; std::shared_ptr<const Overlay> ov;
    Status run() {
      std::map<int, std::vector<float>> merged;
      if (ov) merged = ov->merged_weights(*m);
      return m->with_replaced(std::move(merged), &out);
    }
    Napi::Value result(Napi::Env env) { return wrap_model(env, out); }
  } w;
  w.m = model; w.ov = ov;
  return queue_async(env, std::move(w));
}

}  // namespace

std::shared_ptr<const MendEditor> unwrap_editor(Napi::Env env, Napi::Value v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env)->editor_ctor.Value())) {
    make_error(env, code::kInvalidArg, "Expected a native editor").ThrowAsJavaScriptException();
    return nullptr;
  }
  return EditorHandle::Unwrap(v.As<Napi::Object>())->editor;
}

std::shared_ptr<const Overlay> unwrap_overlay(Napi::Env env, Napi::Value v, bool* ok) {
  *ok = true;
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(addon_data(env)->overlay_ctor.Value())) {
    *ok = false;
    make_error(env, code::kInvalidArg, "Expected a native overlay or null").ThrowAsJavaScriptException();
    return nullptr;
  }
  return OverlayHandle::Unwrap(v.As<Napi::Object>())->overlay;
}

Napi::Object wrap_overlay(Napi::Env env, std::shared_ptr<const Overlay> o) {
  Napi::Object h = addon_data(env)->overlay_ctor.New({});
  OverlayHandle::Unwrap(h)->set(env, std::move(o));
  return h;
}

void init_mend(Napi::Env env, Napi::Object exports) {
  Napi::Function ov = OverlayHandle::Define(env);
  Napi::Function ed = EditorHandle::Define(env);
  addon_data(env)->overlay_ctor = Napi::Persistent(ov);
  addon_data(env)->editor_ctor = Napi::Persistent(ed);
  exports.Set("NativeOverlay", ov);
  exports.Set("NativeEditor", ed);
  exports.Set("createEditor", Napi::Function::New(env, guard_fn<CreateEditor>));
  exports.Set("mendEdit", Napi::Function::New(env, guard_fn<MendEdit>));
  exports.Set("buildOverlay", Napi::Function::New(env, guard_fn<BuildOverlay>));
  exports.Set("materialize", Napi::Function::New(env, guard_fn<Materialize>));
}

}  // namespace addon
}  // namespace mend
