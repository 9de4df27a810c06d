// handles.h — the native object handles shared between binding files (model, overlay, editor); their
// constructors live in the per-environment AddonData (util.h).
#pragma once
#include <napi.h>

#include <memory>

#include "addon/util.h"
#include "mend/editor.h"
#include "mend/lifelong.h"
#include "model/gpt2.h"
#include "model/overlay.h"

namespace mend {
namespace addon {

// Each returns null (and throws a coded JavaScript error) when v is not a live handle of that kind.
std::shared_ptr<GPT2Model> unwrap_model(Napi::Env env, Napi::Value v, const char* what);
Napi::Object wrap_model(Napi::Env env, std::shared_ptr<GPT2Model> m);
// An overlay handle, or null for null/undefined (*ok = false when v is something else).
std::shared_ptr<const Overlay> unwrap_overlay(Napi::Env env, Napi::Value v, bool* ok);
Napi::Object wrap_overlay(Napi::Env env, std::shared_ptr<const Overlay> o);
// An editor handle (null and a coded JavaScript error when v is not one).
std::shared_ptr<const MendEditor> unwrap_editor(Napi::Env env, Napi::Value v);
// A lifelong state handle (NativeRidge; null and a coded JavaScript error when v is not one).
std::shared_ptr<const RidgeState> unwrap_ridge(Napi::Env env, Napi::Value v);
// Editor specs (the object createEditor takes and NativeEditor.tensors returns) in and out.
bool read_editor_spec(Napi::Env env, Napi::Object spec, MendEditor* e);  // throws and returns false on bad input
Napi::Object editor_to_js(Napi::Env env, const MendEditor& e);

}  // namespace addon
}  // namespace mend
