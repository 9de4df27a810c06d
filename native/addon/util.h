// util.h — helpers for the node-addon-api bindings: the per-environment data, coded errors (the one
// way native errors are made), throw-and-return argument checks, typed arrays, and the one async
// worker. Only native/addon/ and native/testing/ include Napi; everything below them is plain C++.
#pragma once
#include <napi.h>

#include <cstring>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "core/common.h"

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace mend {
namespace addon {

// Per-environment data (napi instance data, deleted with the environment: every reference here is
// released at teardown, and each worker thread's environment has its own).
struct AddonData {
  Napi::FunctionReference error_ctor;  // setErrorClass: errors are `new ctor(code, message)`
  Napi::FunctionReference model_ctor, overlay_ctor, editor_ctor, trainer_ctor, ridge_ctor;
};
inline AddonData* addon_data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

// The JavaScript Error for a Status code and message: an instance of the class given to
// setErrorClass (the library's MendError), else an Error with `.code`.
inline Napi::Error make_error(Napi::Env env, const std::string& code, const std::string& message) {
  AddonData* d = addon_data(env);
  if (d && !d->error_ctor.IsEmpty()) {
    try {
      return Napi::Error(env, d->error_ctor.New({Napi::String::New(env, code), Napi::String::New(env, message)}));
    } catch (const Napi::Error&) {
      // the class threw (its exception is cleared): fall back to a plain Error below
    }
  }
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
#define MEND_THROW_IF_ERROR(env, expr) \
  do { ::mend::Status _s = (expr); if (!_s.ok()) MEND_THROW(env, _s.code, _s.message); } while (0)

// No C++ exception leaves a binding (DESIGN §8: native code never aborts): a Napi::Error goes on
// to node-addon-api, which throws it into JavaScript; std::bad_alloc becomes ERR_OUT_OF_MEMORY and
// any other exception ERR_INTERNAL. During environment teardown (a worker_thread terminated mid-call)
// an error that cannot be thrown is dropped (NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS, CMakeLists.txt).
template <class F>
Napi::Value guarded(Napi::Env env, F&& body) {
  const char* c = code::kInternal;
  std::string msg;
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    c = code::kOutOfMemory;
    msg = "out of memory";
  } catch (const std::exception& e) {
    msg = std::string("native exception: ") + e.what();
  } catch (...) {
    msg = "an unknown native exception";
  }
  try {
    make_error(env, c, msg).ThrowAsJavaScriptException();
  } catch (...) {
    // the environment is going away (or out of memory): nothing can be thrown into it
  }
  return Napi::Value();
}
// A free binding function, guarded: Napi::Function::New(env, guard_fn<CreateEditor>, "createEditor").
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value guard_fn(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] { return F(info); });
}
// ObjectWrap with guarded instance methods: derive from GuardedWrap<T> and register
// InstanceMethod("name", &T::template guard<&T::Name>).
template <class T>
class GuardedWrap : public Napi::ObjectWrap<T> {
 public:
  using Napi::ObjectWrap<T>::ObjectWrap;
  template <Napi::Value (T::*M)(const Napi::CallbackInfo&)>
  Napi::Value guard(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&] { return (static_cast<T*>(this)->*M)(info); });
  }
};

// Keeps this shared object loaded for the life of the process. Node unloads an addon (dlclose)
// when the last worker_thread that loaded it ends; the process-wide thread pool's threads would then
// return into unmapped code (SIGSEGV). Called from each addon's Init.
inline void pin_module(const void* address_in_module) {
#if defined(__unix__) || defined(__APPLE__)
  Dl_info info;
  if (dladdr(address_in_module, &info) && info.dli_fname) (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NODELETE);
#else
  (void)address_in_module;
#endif
}

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
// A Float32Array holding a copy.
inline Napi::Float32Array copy_to_f32(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
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
inline bool is_nullish(const Napi::Value& v) { return v.IsNull() || v.IsUndefined(); }
// Copies of typed-array contents, for async work (JS memory must not be touched off-thread).
inline std::vector<int32_t> copy_i32(const Napi::Value& v) {
  Napi::Int32Array a = v.As<Napi::Int32Array>();
  return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
}
inline std::vector<float> copy_f32(const Napi::Value& v) {
  Napi::Float32Array a = v.As<Napi::Float32Array>();
  return std::vector<float>(a.Data(), a.Data() + a.ElementLength());
}
// A string -> string object (metadata), read with ToString.
inline std::map<std::string, std::string> read_string_map(const Napi::Object& o) {
  std::map<std::string, std::string> out;
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t i = 0; i < keys.Length(); i++) {
    std::string k = keys.Get(i).ToString().Utf8Value();
    out[k] = o.Get(k).ToString().Utf8Value();
  }
  return out;
}

// ---- the async worker (sharp style) -----------------------------------------------------------
// A baton holds everything a call needs, copied out of JavaScript on the main thread before
// queue_async. run() executes on a worker thread and never touches JavaScript; exceptions it throws
// become ERR_OUT_OF_MEMORY (std::bad_alloc) or ERR_INTERNAL. result(env) builds the resolved value on the main thread after run() succeeded;
// a failed Status rejects with its coded error. settled() runs on the main thread before the
// promise settles, either way (a baton derived from Baton may hide it).
struct Baton {
  void settled() {}
};

template <class B>
class BatonWorker final : public Napi::AsyncWorker {
 public:
  BatonWorker(Napi::Env env, B&& baton)
      : Napi::AsyncWorker(env, "node-mend"), baton_(std::move(baton)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 private:
  void Execute() override {
    try {
      status_ = baton_.run();
    } catch (const std::bad_alloc&) {
      status_ = Status::Error(code::kOutOfMemory, "out of memory");
    } catch (const std::exception& e) {
      status_ = Status::Error(code::kInternal, e.what());
    } catch (...) {
      status_ = Status::Error(code::kInternal, "an unknown native exception");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    baton_.settled();
    if (!status_.ok()) { deferred_.Reject(make_error(env, status_).Value()); return; }
    try {
      deferred_.Resolve(baton_.result(env));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (const std::exception& e) {
      deferred_.Reject(make_error(env, code::kInternal, e.what()).Value());
    }
  }
  void OnError(const Napi::Error& e) override {
    baton_.settled();
    deferred_.Reject(e.Value());
  }

  B baton_;
  Status status_;
  Napi::Promise::Deferred deferred_;
};

// Queues the baton's work; returns its Promise.
template <class B>
Napi::Value queue_async(Napi::Env env, B baton) {
  auto* w = new BatonWorker<B>(env, std::move(baton));
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}

}  // namespace addon
}  // namespace mend
