// safetensors_binding.cc — safetensorsRead / safetensorsWrite for JavaScript.
//
// safetensorsRead(path) resolves to { metadata: {k: string}, tensors: {name: {dtype, shape, data}} }.
// Float dtypes come back as Float32Array: a view of the file's buffer (read into private memory, so
// nothing done to the file later reaches it) for aligned F32 (the buffer lives until every view is
// collected), converted copies for F16/BF16/F64/unaligned F32. Integer and
// BOOL tensors come back with `data: null` (their dtype and shape only).
//
// safetensorsWrite(path, [{name, shape, data: Float32Array}], metadata) resolves when the file has
// been written atomically. The data are copied on the main thread: a reference to the caller's
// arrays would not stop them being detached (postMessage transfer) or shrunk (resizable buffers)
// while the worker reads them.
#include <cmath>
#include <memory>
#include <set>

#include "addon/bindings.h"
#include "addon/util.h"
#include "io/safetensors.h"

namespace mend {
namespace addon {
namespace {

using FileRef = std::shared_ptr<SafetensorsFile>;

// Sets an own enumerable property without running setters (a tensor may be named "__proto__").
void define(Napi::Object obj, const std::string& key, Napi::Value value) {
  obj.DefineProperty(Napi::PropertyDescriptor::Value(Napi::String::New(obj.Env(), key), value, napi_default_jsproperty));
}

struct ReadBaton : Baton {
  struct Entry {
    const SafeTensor* tensor;
    bool has_data = false;
    const float* view = nullptr;  // into the mapping when `owned` is unused
    std::vector<float> owned;
  };

  std::string path_;
  FileRef file_;
  std::vector<Entry> entries_;

  Status run() {
    std::unique_ptr<SafetensorsFile> f;
    MEND_RETURN_IF_ERROR(SafetensorsFile::open(path_, &f));
    file_ = FileRef(std::move(f));
    for (auto& kv : file_->tensors()) {
      Entry e;
      e.tensor = &kv.second;
      switch (kv.second.dtype) {
        case DType::F32: case DType::F16: case DType::BF16: case DType::F64:
          e.has_data = true;
          MEND_RETURN_IF_ERROR(file_->as_f32(kv.second, &e.view, &e.owned));
          if (!e.owned.empty()) e.view = nullptr;
          break;
        default:
          break;
      }
      entries_.push_back(std::move(e));
    }
    return Status::OK();
  }

  Napi::Value result(Napi::Env env) {
    Napi::Object metadata = Napi::Object::New(env);
    for (auto& kv : file_->metadata()) define(metadata, kv.first, Napi::String::New(env, kv.second));
    Napi::Object tensors = Napi::Object::New(env);
    for (Entry& e : entries_) {
      const SafeTensor& t = *e.tensor;
      Napi::Object o = Napi::Object::New(env);
      o.Set("dtype", Napi::String::New(env, dtype_name(t.dtype)));
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (size_t k = 0; k < t.shape.size(); ++k) shape.Set(static_cast<uint32_t>(k), Napi::Number::New(env, static_cast<double>(t.shape[k])));
      o.Set("shape", shape);
      const size_t n = static_cast<size_t>(t.numel());
      Napi::Value data = env.Null();
      if (e.has_data) {
        if (n == 0) {
          data = Napi::Float32Array::New(env, 0);
        } else if (e.view) {
          // Each view holds the file; the mapping is released when the last one is collected.
          data = external_f32(env, new FileRef(file_), const_cast<float*>(e.view), n);
        } else {
          data = vector_to_f32(env, std::move(e.owned));
        }
      }
      o.Set("data", data);
      define(tensors, t.name, o);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("metadata", metadata);
    out.Set("tensors", tensors);
    file_.reset();
    entries_.clear();
    return out;
  }
};

struct WriteBaton : Baton {
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;
  };
  std::string path_;
  std::vector<Tensor> tensors_;
  std::map<std::string, std::string> metadata_;

  Status run() {
    std::vector<TensorToWrite> list;
    list.reserve(tensors_.size());
    for (auto& t : tensors_) list.push_back({t.name, t.shape, t.data.data()});
    return safetensors_write(path_, list, metadata_);
  }
  Napi::Value result(Napi::Env env) { return env.Undefined(); }
};

Napi::Value SafetensorsRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info.Length() >= 1 && info[0].IsString(), "Expected a string for path");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  MEND_CHECK_ARG(env, !path.empty(), "Expected a non-empty string for path");
  ReadBaton w;
  w.path_ = std::move(path);
  return queue_async(env, std::move(w));
}

Napi::Value SafetensorsWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info.Length() >= 2 && info[0].IsString(), "Expected a string for path");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  MEND_CHECK_ARG(env, !path.empty(), "Expected a non-empty string for path");
  MEND_CHECK_ARG(env, info[1].IsArray(), "Expected an array of {name, shape, data} for tensors");

  Napi::Array arr = info[1].As<Napi::Array>();
  std::vector<WriteBaton::Tensor> tensors;
  std::set<std::string> names;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    const std::string where = "tensors[" + std::to_string(i) + "]";
    Napi::Value item = arr.Get(i);
    MEND_CHECK_ARG(env, item.IsObject(), "Expected an object {name, shape, data} for " + where);
    Napi::Object o = item.As<Napi::Object>();
    Napi::Value name = o.Get("name");
    MEND_CHECK_ARG(env, name.IsString(), "Expected a string for " + where + ".name");
    WriteBaton::Tensor t;
    t.name = name.As<Napi::String>().Utf8Value();
    MEND_CHECK_ARG(env, !t.name.empty(), "Expected a non-empty string for " + where + ".name");
    MEND_CHECK_ARG(env, t.name != "__metadata__", "Expected a name other than \"__metadata__\" for " + where + ".name");
    MEND_CHECK_ARG(env, names.insert(t.name).second, "Expected unique tensor names but received \"" + t.name + "\" twice");
    const std::string tw = "tensor \"" + t.name + "\"";
    Napi::Value shape = o.Get("shape");
    MEND_CHECK_ARG(env, shape.IsArray(), "Expected an array of non-negative integers for the shape of " + tw);
    Napi::Array sa = shape.As<Napi::Array>();
    double numel = 1;
    for (uint32_t k = 0; k < sa.Length(); ++k) {
      Napi::Value d = sa.Get(k);
      double v = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
      MEND_CHECK_ARG(env, v >= 0 && v <= 9007199254740991.0 && std::floor(v) == v,
                     "Expected an array of non-negative integers for the shape of " + tw);
      t.shape.push_back(static_cast<int64_t>(v));
      numel *= v;
    }
    Napi::Value data = o.Get("data");
    MEND_CHECK_ARG(env, is_f32(data), "Expected a Float32Array for the data of " + tw);
    const size_t len = data.As<Napi::Float32Array>().ElementLength();
    MEND_CHECK_ARG(env, numel == static_cast<double>(len),
                   "Expected " + std::to_string(static_cast<uint64_t>(numel)) + " elements (shape product) for the data of " +
                       tw + " but received " + std::to_string(len));
    t.data = copy_f32(data);
    tensors.push_back(std::move(t));
  }

  std::map<std::string, std::string> metadata;
  if (info.Length() >= 3 && !info[2].IsUndefined() && !info[2].IsNull()) {
    MEND_CHECK_ARG(env, info[2].IsObject() && !info[2].IsArray(), "Expected an object of strings for metadata");
    Napi::Object m = info[2].As<Napi::Object>();
    Napi::Array keys = m.GetPropertyNames();
    for (uint32_t k = 0; k < keys.Length(); ++k) {
      std::string key = keys.Get(k).ToString().Utf8Value();
      Napi::Value v = m.Get(keys.Get(k));
      MEND_CHECK_ARG(env, v.IsString(), "Expected a string for metadata \"" + key + "\"");
      metadata[key] = v.As<Napi::String>().Utf8Value();
    }
  }

  WriteBaton w;
  w.path_ = std::move(path);
  w.tensors_ = std::move(tensors);
  w.metadata_ = std::move(metadata);
  return queue_async(env, std::move(w));
}

}  // namespace

void init_safetensors(Napi::Env env, Napi::Object exports) {
  exports.Set("safetensorsRead", Napi::Function::New(env, guard_fn<SafetensorsRead>, "safetensorsRead"));
  exports.Set("safetensorsWrite", Napi::Function::New(env, guard_fn<SafetensorsWrite>, "safetensorsWrite"));
}

}  // namespace addon
}  // namespace mend
