// addon.cc — entry point of the product addon (node_mend.node): the per-environment data, the error
// class, the process-wide settings, and the bindings of every other file (bindings.h).
#include <napi.h>

#include "addon/bindings.h"
#include "addon/util.h"
#include "core/threadpool.h"
#include "kernels/kernels.h"
#ifdef NODE_MEND_HAVE_CUDA
#include "kernels/cuda/kernels_cuda.h"
#endif

namespace {

using mend::addon::addon_data;
using mend::addon::guard_fn;

Napi::Value NumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), mend::num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double n = info.Length() >= 1 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  MEND_CHECK_ARG(env, n >= 1 && n <= mend::kMaxThreads && n == (double)(int)n,
                 "Expected an integer in [1, " + std::to_string(mend::kMaxThreads) + "] for threads");
  mend::set_num_threads(info[0].As<Napi::Number>().Int32Value());
  return env.Undefined();
}

Napi::Value GemmBackend(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), mend::gemm_backend());
}

// cudaInfo() -> { built, available, reason, device }: whether this addon has the CUDA backend and,
// if so, whether the runtime finds a GPU (reason says why not). Exported by every build, so the
// node-gyp (CPU-only) and cmake-js addons have the same exports.
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
#ifdef NODE_MEND_HAVE_CUDA
  std::string why;
  const bool available = mend::cuda::device_available(&why);
  o.Set("built", true);
  o.Set("available", available);
  o.Set("reason", available ? std::string() : why);
  o.Set("device", available ? mend::cuda::device_description() : std::string());
#else
  o.Set("built", false);
  o.Set("available", false);
  o.Set("reason", "this node-mend addon was built without the CUDA backend (CMake found no nvcc, or NODE_MEND_CUDA=OFF, "
                  "or it was built by node-gyp, which is CPU-only)");
  o.Set("device", "");
#endif
  return o;
}

// setErrorClass(ctor | null): native errors are constructed as `new ctor(code, message)` from now on
// in this environment (the library passes its MendError); null goes back to Error with `.code`.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  mend::addon::AddonData* d = addon_data(env);
  if (info.Length() >= 1 && (info[0].IsNull() || info[0].IsUndefined())) {
    d->error_ctor.Reset();
    return env.Undefined();
  }
  MEND_CHECK_ARG(env, info.Length() >= 1 && info[0].IsFunction(), "Expected a constructor (code, message) for setErrorClass");
  d->error_ctor = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  mend::addon::pin_module(reinterpret_cast<const void*>(&NumThreads));  // the thread pool outlives any worker_thread
  env.SetInstanceData(new mend::addon::AddonData());  // deleted with the environment
  exports.Set("numThreads", Napi::Function::New(env, guard_fn<NumThreads>, "numThreads"));
  exports.Set("setNumThreads", Napi::Function::New(env, guard_fn<SetNumThreads>, "setNumThreads"));
  exports.Set("gemmBackend", Napi::Function::New(env, guard_fn<GemmBackend>, "gemmBackend"));
  exports.Set("cudaInfo", Napi::Function::New(env, guard_fn<CudaInfo>, "cudaInfo"));
  exports.Set("setErrorClass", Napi::Function::New(env, guard_fn<SetErrorClass>, "setErrorClass"));
  mend::addon::init_model(env, exports);
  mend::addon::init_mend(env, exports);
  mend::addon::init_lifelong(env, exports);
  mend::addon::init_train(env, exports);
  mend::addon::init_optimizer(env, exports);
  mend::addon::init_safetensors(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(node_mend, Init)
