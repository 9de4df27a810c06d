// testing_addon.cc — entry point of the testing addon (node_mend_testing.node): the kernels
// (kernels_binding.cc), the GEMM check and the read-bandwidth probe of the benchmarks.
//   gemmCheckSections() → number of sections
//   gemmCheck(section) → {section, runs, failures, maxAbs, maxRel, worst, failed: string[], limit}
//   benchReadBandwidth(megabytes, repeats) → median GB/s of reading a buffer with the kernels' threads
//   fuzzReplay(target, bytes) → 0, or the FuzzFinding of a fuzz target on those bytes (the corpus replay)
//   nativeThrow(kind) → throws a C++ exception of that kind ("bad_alloc", "runtime", "other") inside
//     a guarded binding (util.h), for the test that no exception escapes as an abort
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "addon/util.h"
#include "core/threadpool.h"
#include "testing/fuzz/fuzz_targets.h"
#include "testing/gemm_check.h"
#include "testing/testing.h"

namespace mend {
namespace testing {
namespace {

Napi::Value GemmCheckSections(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), gemm_check_sections());
}

Napi::Value GemmCheck(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsNumber(), "Expected a section number for gemmCheck");
  const int s = info[0].As<Napi::Number>().Int32Value();
  MEND_CHECK_ARG(env, s >= 0 && s < gemm_check_sections(), "Expected a section in [0, gemmCheckSections()) for gemmCheck");
  const GemmCheckReport r = gemm_check(s);
  Napi::Object o = Napi::Object::New(env);
  o.Set("section", r.section);
  o.Set("runs", (double)r.runs);
  o.Set("failures", (double)r.failures);
  o.Set("maxAbs", r.max_abs);
  o.Set("maxRel", r.max_rel);
  o.Set("limit", kGemmCheckLimit);
  o.Set("worst", r.worst);
  Napi::Array failed = Napi::Array::New(env, r.failed.size());
  for (size_t i = 0; i < r.failed.size(); i++) failed.Set((uint32_t)i, r.failed[i]);
  o.Set("failed", failed);
  return o;
}

// (the memory floor of the benchmarks; never used by the library itself)
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
    parallel_for((int64_t)n, [&](int64_t b, int64_t e) {
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

Napi::Value FuzzReplay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info[0].IsString() && info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array,
                 "Expected (target, Uint8Array) for fuzzReplay");
  const std::string target = info[0].As<Napi::String>().Utf8Value();
  Napi::Uint8Array a = info[1].As<Napi::Uint8Array>();
  std::vector<uint8_t> bytes(a.Data(), a.Data() + a.ElementLength());
  if (target == "safetensors") return Napi::Number::New(env, fuzz::fuzz_safetensors(bytes.data(), bytes.size()));
  if (target == "validators") return Napi::Number::New(env, fuzz::fuzz_validators(bytes.data(), bytes.size()));
  MEND_THROW(env, code::kInvalidArg, "Expected \"safetensors\" or \"validators\" for the fuzzReplay target");
}

// (the guard of every binding, util.h: each kind must arrive as a coded JavaScript error)
Napi::Value NativeThrow(const Napi::CallbackInfo& info) {
  const std::string kind = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  if (kind == "bad_alloc") throw std::bad_alloc();
  if (kind == "runtime") throw std::runtime_error("a runtime error");
  if (kind == "other") throw 42;
  return info.Env().Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  addon::pin_module(reinterpret_cast<const void*>(&GemmCheckSections));  // the thread pool outlives any worker_thread
  env.SetInstanceData(new addon::AddonData());  // make_error reads it (no error class here: Error + .code)
  init_kernels(env, exports);
  exports.Set("gemmCheckSections", Napi::Function::New(env, GemmCheckSections, "gemmCheckSections"));
  exports.Set("gemmCheck", Napi::Function::New(env, GemmCheck, "gemmCheck"));
  exports.Set("benchReadBandwidth", Napi::Function::New(env, BenchReadBandwidth, "benchReadBandwidth"));
  exports.Set("fuzzReplay", Napi::Function::New(env, addon::guard_fn<FuzzReplay>, "fuzzReplay"));
  exports.Set("nativeThrow", Napi::Function::New(env, addon::guard_fn<NativeThrow>, "nativeThrow"));
  return exports;
}

}  // namespace testing
}  // namespace mend

namespace {
Napi::Object InitTesting(Napi::Env env, Napi::Object exports) { return mend::testing::Init(env, exports); }
}  // namespace

NODE_API_MODULE(node_mend_testing, InitTesting)
