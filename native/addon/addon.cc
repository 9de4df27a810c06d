// addon.cc — module entry point: registers the bindings and the process-wide settings.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "addon/bindings.h"
#include "addon/handles.h"
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

// benchReadBandwidth(megabytes, repeats) → median GB/s of reading a buffer with the kernels' threads
// (the memory floor of the benchmarks; never used by the library itself).
Napi::Value BenchReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  size_t mb = info[0].IsNumber() ? (size_t)info[0].As<Napi::Number>().Int64Value() : 1024;
  int reps = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 7;
  if (mb < 1) mb = 1;
  if (reps < 1) reps = 1;
  const size_t n = mb * (1u << 20) / sizeof(uint64_t);
  std::vector<uint64_t> buf(n);
  for (size_t i = 0; i < n; i++) buf[i] = i;
  std::vector<double> gbps;
  std::atomic<uint64_t> sink{0};  // keeps the reads from being optimised away
  for (int r = 0; r < reps; r++) {
    auto t0 = std::chrono::steady_clock::now();
    mend::parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) { s0 += buf[i]; s1 += buf[i + 1]; s2 += buf[i + 2]; s3 += buf[i + 3]; }
      for (; i < e; i++) s0 += buf[i];
      sink.fetch_xor(s0 ^ s1 ^ s2 ^ s3, std::memory_order_relaxed);
    }, 1 << 16);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    gbps.push_back((double)n * sizeof(uint64_t) / sec / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return Napi::Number::New(env, gbps[gbps.size() / 2]);
}

// adamwUpdate(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, t): one PyTorch AdamW step in
// place on Float32Arrays of equal length (used by the TypeScript pretraining loop).
Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto bad = [&](const char* m) {
    Napi::Error e = Napi::TypeError::New(env, m);
    e.Set("code", Napi::String::New(env, "ERR_INVALID_ARG"));
    e.ThrowAsJavaScriptException();
    return env.Undefined();
  };
  if (info.Length() < 10) return bad("Expected (param, grad, m, v, lr, beta1, beta2, eps, weightDecay, t) for adamwUpdate");
  for (int i = 0; i < 4; i++)
    if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      return bad("Expected Float32Arrays for param, grad, m and v");
  for (int i = 4; i < 10; i++)
    if (!info[i].IsNumber()) return bad("Expected numbers for lr, beta1, beta2, eps, weightDecay and t");
  auto p = info[0].As<Napi::Float32Array>(), g = info[1].As<Napi::Float32Array>(), m = info[2].As<Napi::Float32Array>(),
       v = info[3].As<Napi::Float32Array>();
  const size_t n = p.ElementLength();
  if (g.ElementLength() != n || m.ElementLength() != n || v.ElementLength() != n) return bad("param, grad, m and v must have the same length");
  const int t = info[9].As<Napi::Number>().Int32Value();
  if (t < 1) return bad("t (the step number) must be >= 1");
  mend::adamw_update(p.Data(), g.Data(), m.Data(), v.Data(), (int64_t)n, info[4].As<Napi::Number>().FloatValue(),
                     info[5].As<Napi::Number>().FloatValue(), info[6].As<Napi::Number>().FloatValue(),
                     info[7].As<Napi::Number>().FloatValue(), info[8].As<Napi::Number>().FloatValue(), t);
  return env.Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("gemmBackend", Napi::Function::New(env, GemmBackend));
  exports.Set("benchReadBandwidth", Napi::Function::New(env, BenchReadBandwidth));
  exports.Set("adamwUpdate", Napi::Function::New(env, AdamwUpdate));
  env.SetInstanceData(new mend::addon::AddonData());  // freed with the environment
  mend::addon::init_model(env, exports);
  mend::addon::init_mend(env, exports);
  mend::addon::init_train(env, exports);
  mend::addon::init_safetensors(env, exports);
  mend::addon::init_testing(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(node_mend, Init)
