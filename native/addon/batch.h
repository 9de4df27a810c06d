// batch.h — THE batch reader of the bindings: a token batch copied out of JavaScript memory on the
// main thread (so a worker never touches it), from positional arguments or from a batch object.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "model/gpt2.h"

namespace mend {
namespace addon {

struct OwnedBatch {
  std::vector<int32_t> ids, mask, labels;  // (B,T); mask and labels may be empty (= none)
  int B = 0, T = 0;
  Batch view() const;
};

// ids Int32Array (B*T values), B and T numbers, mask and labels Int32Array or null/undefined (labels
// required when need_labels). `what` names the batch in messages ("" for a call's own arguments).
// On bad input throws a coded JavaScript error and returns false.
bool read_batch(Napi::Env env, Napi::Value ids, Napi::Value B, Napi::Value T, Napi::Value mask, Napi::Value labels,
                const std::string& what, bool need_labels, OwnedBatch* out);
// The same from {ids, B, T, mask, labels}.
bool read_batch_object(Napi::Env env, Napi::Value v, const std::string& what, bool need_labels, OwnedBatch* out);

}  // namespace addon
}  // namespace mend
