// bindings.h — each binding file of the product addon registers its functions on the exports.
#pragma once
#include <napi.h>

namespace mend {
namespace addon {
void init_model(Napi::Env env, Napi::Object exports);         // model_binding.cc
void init_safetensors(Napi::Env env, Napi::Object exports);   // safetensors_binding.cc
void init_mend(Napi::Env env, Napi::Object exports);          // mend_binding.cc: editor, overlay, edit
void init_lifelong(Napi::Env env, Napi::Object exports);      // lifelong_binding.cc: the lifelong mode's solve
void init_train(Napi::Env env, Napi::Object exports);         // train_binding.cc: editor training
void init_optimizer(Napi::Env env, Napi::Object exports);     // optimizer_binding.cc: optimizerStep, adamwUpdate
}  // namespace addon
}  // namespace mend
