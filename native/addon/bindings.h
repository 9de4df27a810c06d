// bindings.h — each binding file registers its functions on the module's exports.
#pragma once
#include <napi.h>

namespace mend {
namespace addon {
void init_model(Napi::Env env, Napi::Object exports);         // model_binding.cc
void init_safetensors(Napi::Env env, Napi::Object exports);   // safetensors_binding.cc
void init_mend(Napi::Env env, Napi::Object exports);          // mend_binding.cc: editor, overlay, edit
void init_train(Napi::Env env, Napi::Object exports);         // train_binding.cc: editor training
void init_testing(Napi::Env env, Napi::Object exports);       // testing_binding.cc: kernels, for tests
}  // namespace addon
}  // namespace mend
