// addon.cc — module entry point: registers the bindings and the process-wide settings.
#include <napi.h>

#include "addon/bindings.h"
#include "kernels/kernels.h"
#include "threadpool.h"

namespace {

Napi::Value NumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mend::num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber() || info[0].As<Napi::Number>().Int32Value() < 1) {
    Napi::Error e = Napi::TypeError::New(env, "Expected a positive integer for threads");
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG"));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  }
  mend::set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

Napi::Value GemmBackend(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), mend::gemm_backend());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("gemmBackend", Napi::Function::New(env, GemmBackend));
  mend::addon::init_model(env, exports);
  mend::addon::init_safetensors(env, exports);
  mend::addon::init_testing(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(node_mend, Init)
