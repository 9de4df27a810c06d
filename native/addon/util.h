// util.h — helpers for the node-addon-api bindings: coded errors, argument checks, typed arrays.
// Only native/addon/ includes Napi; everything below it is plain C++.
#pragma once
#include <napi.h>

#include <cstring>
#include <string>
#include <vector>

#include "common.h"

namespace mend {
namespace addon {

// An Error with `.code` (the Status code) and the Status message.
inline Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}
inline Napi::Error make_error(Napi::Env env, const Status& s) { return make_error(env, s.code, s.message); }

// Throw-and-return argument checks (better-sqlite3 style). Used in functions returning Napi::Value.
#define MEND_THROW(env, code, msg) \
  do { ::mend::addon::make_error((env), (code), (msg)).ThrowAsJavaScriptException(); return (env).Undefined(); } while (0)
#define MEND_CHECK_ARG(env, cond, msg) \
  do { if (!(cond)) MEND_THROW(env, ::mend::code::kInvalidArg, msg); } while (0)

// A Float32Array that is a view of native memory: `owner` (heap-allocated, any type holding the
// data) is deleted when the ArrayBuffer is collected.
template <typename Owner>
Napi::Float32Array external_f32(Napi::Env env, Owner* owner, float* data, size_t n) {
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, data, n * sizeof(float),
      [](Napi::Env, void*, Owner* o) { delete o; }, owner);
  return Napi::Float32Array::New(env, n, ab, 0);
}
// A Float32Array owning a float vector (moved in, no copy of the data).
template <class Alloc>
Napi::Float32Array vector_to_f32(Napi::Env env, std::vector<float, Alloc>&& v) {
  auto* owner = new std::vector<float, Alloc>(std::move(v));
  if (owner->empty()) { delete owner; return Napi::Float32Array::New(env, 0); }
  return external_f32(env, owner, owner->data(), owner->size());
}
inline Napi::Int32Array vector_to_i32(Napi::Env env, const std::vector<int32_t>& v) {
  Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(int32_t));
  return a;
}

inline bool is_f32(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
}
inline bool is_i32(const Napi::Value& v) {
  return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array;
}
// Copies of typed-array contents, for async work (JS memory must not be touched off-thread).
inline std::vector<int32_t> copy_i32(const Napi::Value& v) {
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}
inline std::vector<float> copy_f32(const Napi::Value& v) {
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}

// Promise-returning async work (sharp style): Execute() runs off the event loop and must not touch
// JavaScript; it fills `status` on failure. OnOK builds the result via `make_result`.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env, "node-mend"), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  virtual Status run() = 0;                              // worker thread
  virtual Napi::Value result(Napi::Env env) = 0;          // main thread, after success
  void Execute() override {
    try {
      status_ = run();
    } catch (const std::bad_alloc&) {
      status_ = Status::Error(code::kInternal, "out of memory");
    } catch (const std::exception& e) {
      status_ = Status::Error(code::kInternal, e.what());
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!status_.ok()) { deferred_.Reject(make_error(env, status_).Value()); return; }
    try {
      deferred_.Resolve(result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

  Status status_;
  Napi::Promise::Deferred deferred_;
};

}  // namespace addon
}  // namespace mend
