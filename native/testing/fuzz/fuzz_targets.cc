// fuzz_targets.cc — see fuzz_targets.h. The validators' target decodes a small editor, edit and
// optimizer state for a tiny fixed GPT-2 (1 block, width 4) from the bytes: sizes near the right
// ones (so most inputs reach the deep checks), floats taken raw from the input (NaN, Inf, huge).
#include "testing/fuzz/fuzz_targets.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "mend/edit.h"
#include "mend/editor.h"
#include "mend/trainer.h"
#include "model/gpt2.h"
#include "model/overlay.h"

namespace mend {
namespace fuzz {
namespace {

const std::set<std::string>& known_codes() {
  static const std::set<std::string> c = {code::kInvalidArg, code::kTokenRange, code::kSeqLen, code::kNoTarget, code::kIO,
                                          code::kSafetensors, code::kMissingTensor, code::kShape, code::kConfig,
                                          code::kNonFinite, code::kOutOfMemory};
  return c;
}
bool coded(const Status& s) { return known_codes().count(s.code) && !s.message.empty(); }

// Reads the fuzz input as a stream of choices; past the end everything is zero.
struct Reader {
  const uint8_t* p;
  size_t n, i = 0;
  uint8_t byte() { return i < n ? p[i++] : 0; }
  int small(int lo, int hi) { return lo + (int)(byte() % (uint8_t)(hi - lo + 1)); }
  float value() {
    const uint8_t k = byte();
    if (k < 200) return ((int)k - 100) / 64.0f;  // mostly ordinary values
    if (k < 220) { float f; uint8_t b[4] = {byte(), byte(), byte(), byte()}; std::memcpy(&f, b, 4); return f; }  // raw bits
    static const float special[] = {NAN, INFINITY, -INFINITY, 3.0e38f, -3.0e38f, 1e8f, 1.1e8f, 1e30f, 0.0f, -0.0f, 1e-40f};
    return special[k % (sizeof special / sizeof special[0])];
  }
  std::vector<float> floats(size_t want) {
    const int delta = small(0, 15) == 0 ? small(-2, 2) : 0;  // occasionally the wrong size
    const size_t len = delta < 0 && (size_t)-delta > want ? 0 : want + delta;
    std::vector<float> v(len);
    for (float& x : v) x = value();
    return v;
  }
};

std::shared_ptr<GPT2Model> tiny_model() {
  static std::shared_ptr<GPT2Model> m = [] {
    GPT2Config c;
    c.n_layer = 1; c.n_head = 1; c.n_embd = 4; c.vocab_size = 8; c.n_positions = 8;
    std::shared_ptr<GPT2Model> out;
    Status s = GPT2Model::random(c, 1, &out);
    return s.ok() ? out : nullptr;
  }();
  return m;
}

bool all_finite(const float* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!std::isfinite(p[i])) return false;
  return true;
}

// A forward pass with the deltas: the logits of an accepted overlay are finite.
int forward_finite(const GPT2Model& m, const WeightDeltas* d) {
  const int32_t ids[4] = {1, 2, 3, 4};
  Batch b; b.ids = ids; b.B = 1; b.T = 4;
  ForwardOptions fo; ForwardResult fr;
  Status s = m.forward(b, fo, d, &fr);
  if (!s.ok()) return coded(s) ? kFine : kBadCode;
  return all_finite(fr.logits.data(), fr.logits.size()) ? kFine : kNonFinite;
}

}  // namespace

int fuzz_safetensors(const uint8_t* data, size_t size) {
  std::unique_ptr<SafetensorsFile> f;
  Status s = SafetensorsFile::from_memory("fuzz.safetensors", data, size, &f);
  if (!s.ok()) return (s.code == code::kSafetensors || s.code == code::kIO || s.code == code::kOutOfMemory) && !s.message.empty() ? kFine : kBadCode;
  // Accepted: every tensor lies inside the data, and the data is fully indexed.
  uint64_t total = 0;
  for (auto& kv : f->tensors()) {
    const SafeTensor& t = kv.second;
    if ((uint64_t)t.numel() * dtype_size(t.dtype) != t.nbytes) return kIncoherent;
    total += t.nbytes;
    if (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16 || t.dtype == DType::F64) {
      const float* p = nullptr;
      std::vector<float> owned;
      Status c = f->as_f32(t, &p, &owned);
      if (!c.ok()) return kBadCode;
      volatile float sink = 0;
      for (int64_t k = 0; k < t.numel(); k++) sink = sink + p[k] * 0.0f;  // every element is readable (ASan)
      (void)sink;
    }
  }
  if (size < 8) return kIncoherent;
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | data[k];
  if (8 + n + total != size) return kIncoherent;  // the data buffer is fully indexed
  return kFine;
}

int fuzz_validators(const uint8_t* data, size_t size) {
  std::shared_ptr<GPT2Model> m = tiny_model();
  if (!m) return kBadCode;
  Reader r{data, size};
  const auto& params = m->params();
  // Conv1D weights of the tiny model, for inner params and edit factors mostly aimed right.
  std::vector<int> conv;
  for (size_t i = 0; i < params.size(); i++)
    if (params[i].conv1d) conv.push_back((int)i);
  auto pick_param = [&]() { return r.small(0, 7) == 0 ? r.small(-1, (int)params.size()) : conv[r.small(0, (int)conv.size() - 1)]; };

  const int which = r.small(0, 2);
  if (which == 0) {
    // ---- the editor validator, then an edit with the editor it accepted
    MendEditor e;
    const int n_inner = r.small(0, 3);
    for (int k = 0; k < n_inner; k++) {
      const int p = pick_param();
      e.inner.push_back(p);
      e.transform_of.push_back(r.small(0, 7) == 0 ? r.small(-1, 2) : k);
      e.mode_of.push_back(r.small(0, 7) == 0 ? r.small(-1, 2) : 0);
      const bool valid = p >= 0 && p < (int)params.size() && params[p].shape.size() == 2;
      GradientTransform g;
      g.d_in = valid ? (int)params[p].shape[0] : r.small(0, 8);
      g.d_out = valid ? (int)params[p].shape[1] : r.small(0, 8);
      if (r.small(0, 15) == 0) g.d_in += r.small(-1, 1);
      const int D = g.d_in + g.d_out;
      g.rank = r.small(0, 15) == 0 ? r.small(-1, D + 2) : r.small(1, std::max(1, std::min(D, 6)));
      g.n_modes = r.small(0, 15) == 0 ? r.small(0, 2) : 1;
      const int n_layers = r.small(0, 15) == 0 ? r.small(0, 3) : 2;
      const size_t Dz = D > 0 ? (size_t)D : 0, rk = g.rank > 0 ? (size_t)g.rank : 0, nm = g.n_modes > 0 ? (size_t)g.n_modes : 0;
      for (int j = 0; j < n_layers; j++) {
        MendLayer L;
        L.u = r.floats(Dz * rk); L.v = r.floats(rk * Dz); L.bias = r.floats(Dz);
        L.scale = r.floats(nm * Dz); L.shift = r.floats(nm * Dz);
        L.relu = r.byte() & 1;
        g.layers.push_back(std::move(L));
      }
      const size_t di = g.d_in > 0 ? (size_t)g.d_in : 0, dd = g.d_out > 0 ? (size_t)g.d_out : 0;
      g.u_mean = r.floats(di); g.v_mean = r.floats(dd); g.u_std = r.floats(di); g.v_std = r.floats(dd);
      g.u_s = r.floats(di); g.v_s = r.floats(dd);
      for (float& x : g.u_std) x = std::fabs(x) + 0.5f;
      for (float& x : g.v_std) x = std::fabs(x) + 0.5f;
      g.k = r.small(0, 3);
      e.transforms.push_back(std::move(g));
    }
    e.edit_lrs = r.floats((size_t)n_inner);
    Status s = check_editor(*m, e);
    if (!s.ok()) return coded(s) ? kFine : kBadCode;
    // Accepted: an edit either is refused with a code or gives an overlay whose logits are finite.
    const int32_t ids[4] = {1, 2, 3, 4}, labels[4] = {-100, 2, 3, 4};
    Batch b; b.ids = ids; b.labels = labels; b.B = 1; b.T = 4;
    std::shared_ptr<const Overlay> next;
    Edit edit;
    EditInfo info;
    Status es = mend_edit(*m, nullptr, e, b, &next, &edit, &info);
    if (!es.ok()) return coded(es) ? kFine : kBadCode;
    return forward_finite(*m, next.get());
  }
  if (which == 1) {
    // ---- the edit-log validator (Overlay::build), then a forward with the overlay it accepted
    std::vector<Edit> edits(r.small(1, 3));
    for (Edit& ed : edits) {
      const int nf = r.small(0, 2);
      for (int k = 0; k < nf; k++) {
        EditFactors f;
        f.param = pick_param();
        const bool valid = f.param >= 0 && f.param < (int)params.size() && params[f.param].shape.size() == 2;
        f.rows = r.small(0, 15) == 0 ? r.small(-1, 3) : r.small(0, 3);
        const size_t rows = f.rows > 0 ? (size_t)f.rows : 0;
        const size_t din = valid ? (size_t)params[f.param].shape[0] : 4, dout = valid ? (size_t)params[f.param].shape[1] : 4;
        f.a = std::make_shared<std::vector<float>>(r.floats(rows * din));
        f.b = std::make_shared<std::vector<float>>(r.floats(rows * dout));
        ed.push_back(std::move(f));
      }
    }
    std::vector<const Edit*> ptrs;
    for (const Edit& ed : edits) ptrs.push_back(&ed);
    std::shared_ptr<const Overlay> o;
    Status s = Overlay::build(*m, ptrs, &o);
    if (!s.ok()) return coded(s) ? kFine : kBadCode;
    return forward_finite(*m, o.get());
  }
  // ---- the checkpoint validator: an optimizer state and accumulated gradients for a valid editor
  MendEditor e;
  const int p = conv[0];
  e.inner = {p}; e.transform_of = {0}; e.mode_of = {0}; e.edit_lrs = {1e-4f};
  GradientTransform g;
  g.d_in = (int)params[p].shape[0]; g.d_out = (int)params[p].shape[1]; g.rank = 2; g.n_modes = 1;
  const size_t D = (size_t)g.D();
  for (int j = 0; j < 2; j++) {
    MendLayer L;
    L.u.assign(D * 2, 0.0f); L.v.assign(2 * D, 0.1f); L.bias.assign(D, 0.0f); L.scale.assign(D, 1.0f); L.shift.assign(D, 0.0f);
    g.layers.push_back(std::move(L));
  }
  g.u_mean.assign(g.d_in, 0); g.v_mean.assign(g.d_out, 0); g.u_std.assign(g.d_in, 1); g.v_std.assign(g.d_out, 1);
  g.u_s.assign(g.d_in, 0); g.v_s.assign(g.d_out, 0);
  e.transforms.push_back(std::move(g));
  std::shared_ptr<EditorTrainer> tr;
  Status cs = EditorTrainer::create(m, e, TrainerOptions(), &tr);
  if (!cs.ok()) return kBadCode;  // the fixed editor is valid
  MendEditor shape = tr->grads();
  AdamState a;
  a.t = r.small(0, 15) == 0 ? -r.small(1, 3) : r.small(0, 9);
  const int64_t steps = r.small(0, 15) == 0 ? -1 : r.small(0, 9);
  const int n_arrays = r.small(0, 15) == 0 ? r.small(0, 12) : 11;  // 2 layers x 5 arrays + edit_lrs
  for (int i = 0; i < n_arrays; i++) {
    const size_t want = i < 10 ? (i % 5 == 0 || i % 5 == 1 ? D * 2 : D) : 1;
    a.m.push_back(r.floats(want));
    a.v.push_back(r.floats(want));
  }
  Status s = tr->set_optimizer_state(a, steps);
  if (!s.ok()) return coded(s) ? kFine : kBadCode;
  for (size_t i = 0; i < tr->adam().v.size(); i++)
    for (float x : tr->adam().v[i])
      if (!std::isfinite(x) || x < 0) return kIncoherent;
  for (auto& L : shape.transforms[0].layers) for (float& x : L.u) x = r.value();
  Status gs = tr->set_grads(shape);
  if (!gs.ok()) return coded(gs) ? kFine : kBadCode;
  return kFine;
}

}  // namespace fuzz
}  // namespace mend
