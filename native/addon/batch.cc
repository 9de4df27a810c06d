// batch.cc — see batch.h.
#include "addon/batch.h"

#include "addon/util.h"

namespace mend {
namespace addon {

Batch OwnedBatch::view() const {
  Batch b;
  b.ids = ids.data();
  b.mask = mask.empty() ? nullptr : mask.data();
  b.labels = labels.empty() ? nullptr : labels.data();
  b.B = B;
  b.T = T;
  return b;
}

bool read_batch(Napi::Env env, Napi::Value ids, Napi::Value B, Napi::Value T, Napi::Value mask, Napi::Value labels,
                const std::string& what, bool need_labels, OwnedBatch* out) {
  const std::string pre = what.empty() ? "" : what + ": ";
  auto fail = [&](const std::string& m) {
    make_error(env, code::kInvalidArg, pre + m).ThrowAsJavaScriptException();
    return false;
  };
  if (!is_i32(ids)) return fail("Expected an Int32Array for inputIds");
  if (!B.IsNumber() || !T.IsNumber()) return fail("Expected numbers for the batch shape");
  out->B = B.As<Napi::Number>().Int32Value();
  out->T = T.As<Napi::Number>().Int32Value();
  if (out->B < 1 || out->T < 1) return fail("inputIds must have at least one row and one column");
  const size_t n = (size_t)out->B * out->T;
  out->ids = copy_i32(ids);
  if (out->ids.size() != n)
    return fail("inputIds has " + std::to_string(out->ids.size()) + " elements, expected B*T = " + std::to_string(n));
  const Napi::Value optional[2] = {mask, labels};
  for (int k = 0; k < 2; k++) {
    const char* name = k == 0 ? "attentionMask" : "labels";
    const Napi::Value& v = optional[k];
    if (is_nullish(v)) {
      if (k == 1 && need_labels) return fail("Expected an Int32Array for labels");
      continue;
    }
    if (!is_i32(v)) return fail(std::string("Expected an Int32Array or null for ") + name);
    std::vector<int32_t>& dst = k == 0 ? out->mask : out->labels;
    dst = copy_i32(v);
    if (dst.size() != n)
      return fail(std::string(name) + " has " + std::to_string(dst.size()) + " elements, expected " + std::to_string(n));
  }
  return true;
}

bool read_batch_object(Napi::Env env, Napi::Value v, const std::string& what, bool need_labels, OwnedBatch* out) {
  if (!v.IsObject()) {
    make_error(env, code::kInvalidArg, "Expected a batch object {ids, B, T, mask, labels} for " + what)
        .ThrowAsJavaScriptException();
    return false;
  }
  Napi::Object o = v.As<Napi::Object>();
  return read_batch(env, o.Get("ids"), o.Get("B"), o.Get("T"), o.Get("mask"), o.Get("labels"), what, need_labels, out);
}

}  // namespace addon
}  // namespace mend
