// editor.cc — see editor.h. The editor's GEMMs run once per shape over the rows of all inner params
// of that shape together (the weights are shared), so each U and V is streamed once per pass.
// transform_forward:  z (Ns,D) = (in place), acts = (saved for backward)
// transform_backward: dz (Ns,D) = (in place), gradients of U, V, bias, scale, shift +=
#include "mend/editor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {
namespace {

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

Status GradientTransform::validate(const std::string& what, bool values) const {
  const size_t Dz = (size_t)D(), r = (size_t)rank, nm = (size_t)n_modes;
  // Layer tensors are bounded like weights (kMaxWeight: a larger scale, shift or bias makes every edit
  // NaN); the statistics only need to be finite (the Welford sums grow with the rows seen).
  auto sized = [&](const std::vector<float>& v, size_t n, const std::string& name, double max_abs = kMaxWeight) -> Status {
    if (v.size() != n)
      return Status::Error(code::kShape, what + name + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
    return values ? check_weights(v.data(), v.size(), what + name, max_abs) : Status::OK();
  };
  const double stat = kAnyFinite;
  if (d_in < 1 || d_out < 1 || rank < 1 || n_modes < 1 || layers.empty())
    return Status::Error(code::kInvalidArg, what + ": invalid sizes");
  if (rank > D() || layers.size() > (size_t)kMaxHidden + 1 || (size_t)n_modes > (size_t)1 << 16)
    return Status::Error(code::kInvalidArg, what + ": rank " + std::to_string(rank) + ", " + std::to_string(layers.size()) +
                                                " layers, " + std::to_string(n_modes) + " modes (at most rank d_in + d_out = " +
                                                std::to_string(D()) + ", " + std::to_string(kMaxHidden + 1) + " layers)");
  for (size_t j = 0; j < layers.size(); j++) {
    const MendLayer& L = layers[j];
    std::string p = ".mlp.layers." + std::to_string(j) + ".";
    MEND_RETURN_IF_ERROR(sized(L.u, Dz * r, p + "u"));
    MEND_RETURN_IF_ERROR(sized(L.v, r * Dz, p + "v"));
    MEND_RETURN_IF_ERROR(sized(L.bias, Dz, p + "bias"));
    MEND_RETURN_IF_ERROR(sized(L.scale, nm * Dz, p + "mode_scale.weight"));
    MEND_RETURN_IF_ERROR(sized(L.shift, nm * Dz, p + "mode_shift.weight"));
  }
  MEND_RETURN_IF_ERROR(sized(u_mean, d_in, ".u_mean", stat));
  MEND_RETURN_IF_ERROR(sized(u_std, d_in, ".u_std", stat));
  MEND_RETURN_IF_ERROR(sized(u_s, d_in, ".u_s", stat));
  MEND_RETURN_IF_ERROR(sized(v_mean, d_out, ".v_mean", stat));
  MEND_RETURN_IF_ERROR(sized(v_std, d_out, ".v_std", stat));
  MEND_RETURN_IF_ERROR(sized(v_s, d_out, ".v_s", stat));
  if (!std::isfinite(k) || k < 0) return Status::Error(code::kNonFinite, what + ".k is " + std::to_string(k) + " (must be finite and >= 0)");
  return Status::OK();
}

Status check_editor(const GPT2Model& model, const MendEditor& e, bool values) {
  const size_t n = e.inner.size();
  if (n == 0) return Status::Error(code::kInvalidArg, "the editor has no inner params");
  if (e.transform_of.size() != n || e.mode_of.size() != n || e.edit_lrs.size() != n)
    return Status::Error(code::kShape, "edit_lrs has " + std::to_string(e.edit_lrs.size()) + " values for " +
                                           std::to_string(n) + " inner params");
  MEND_RETURN_IF_ERROR(check_weights(e.edit_lrs.data(), e.edit_lrs.size(), "edit_lrs"));
  for (size_t s = 0; s < e.transforms.size(); s++) {
    const GradientTransform& g = e.transforms[s];
    MEND_RETURN_IF_ERROR(g.validate("mend.(" + std::to_string(g.d_in) + ", " + std::to_string(g.d_out) + ")", values));
  }
  for (size_t k = 0; k < n; k++) {
    int p = e.inner[k];
    if (p < 0 || p >= (int)model.params().size()) return Status::Error(code::kInvalidArg, "inner param index out of range");
    const ParamInfo& info = model.params()[p];
    if (!info.conv1d) return Status::Error(code::kInvalidArg, "inner param \"" + info.name + "\" is not a Conv1D weight");
    int s = e.transform_of[k];
    if (s < 0 || s >= (int)e.transforms.size()) return Status::Error(code::kInvalidArg, "inner param without an editor");
    const GradientTransform& g = e.transforms[s];
    if (info.shape[0] != g.d_in || info.shape[1] != g.d_out)
      return Status::Error(code::kShape, "inner param \"" + info.name + "\" has shape [" + std::to_string(info.shape[0]) + "," +
                                             std::to_string(info.shape[1]) + "] but its editor is mend.(" + std::to_string(g.d_in) +
                                             ", " + std::to_string(g.d_out) + ")");
    if (e.mode_of[k] < 0 || e.mode_of[k] >= g.n_modes)
      return Status::Error(code::kShape, "inner param \"" + info.name + "\" has mode " + std::to_string(e.mode_of[k]) +
                                             " but its editor has " + std::to_string(g.n_modes) + " modes");
  }
  return Status::OK();
}

MendGrads MendGrads::zeros_like(const MendEditor& e) {
  MendGrads g;
  for (const GradientTransform& t : e.transforms) {
    std::vector<Layer> ls;
    for (const MendLayer& L : t.layers)
      ls.push_back({std::vector<float>(L.u.size()), std::vector<float>(L.v.size()), std::vector<float>(L.bias.size()),
                    std::vector<float>(L.scale.size()), std::vector<float>(L.shift.size())});
    g.transforms.push_back(std::move(ls));
  }
  g.edit_lrs.assign(e.edit_lrs.size(), 0.0f);
  return g;
}

std::vector<std::pair<std::vector<float>*, std::vector<float>*>> MendGrads::pairs(MendEditor* e) {
  std::vector<std::pair<std::vector<float>*, std::vector<float>*>> out;
  for (size_t s = 0; s < transforms.size(); s++)
    for (size_t j = 0; j < transforms[s].size(); j++) {
      Layer& g = transforms[s][j];
      MendLayer& L = e->transforms[s].layers[j];
      out.push_back({&g.u, &L.u});
      out.push_back({&g.v, &L.v});
      out.push_back({&g.bias, &L.bias});
      out.push_back({&g.scale, &L.scale});
      out.push_back({&g.shift, &L.shift});
    }
  out.push_back({&edit_lrs, &e->edit_lrs});
  return out;
}

void MendGrads::clear() {
  for (auto& t : transforms)
    for (auto& l : t)
      for (auto* v : {&l.u, &l.v, &l.bias, &l.scale, &l.shift}) std::fill(v->begin(), v->end(), 0.0f);
  std::fill(edit_lrs.begin(), edit_lrs.end(), 0.0f);
}

namespace {
// p's buffer when nothing else holds it and it has n floats (pack_matrix writes every float of it,
// padding included), else a new one: a trainer packs after every optimizer step, and a fresh 236 MB
// (the rank-1920 GPT-2 editor) is zeroed and faulted in page by page.
std::shared_ptr<std::vector<float>> reuse_or_new(const std::shared_ptr<const std::vector<float>>& p, size_t n) {
  if (p && p.use_count() == 1 && p->size() == n) return std::const_pointer_cast<std::vector<float>>(p);
  return std::make_shared<std::vector<float>>(n);
}
}  // namespace

void pack_editor(MendEditor* e) {
  for (GradientTransform& g : e->transforms) {
    const int D = g.D(), r = g.rank;
    for (MendLayer& L : g.layers) {
      auto pu = reuse_or_new(L.pu, packed_floats(D, r));
      auto pv = reuse_or_new(L.pv, packed_floats(r, D));
      pack_matrix(L.u.data(), D, r, pu->data());
      pack_matrix(L.v.data(), r, D, pv->data());
      L.pu = std::move(pu);
      L.pv = std::move(pv);
      L.put.reset();
      L.pvt.reset();
    }
  }
}

void pack_editor_transposed(MendEditor* e) {
  for (GradientTransform& g : e->transforms) {
    const int D = g.D(), r = g.rank;
    for (MendLayer& L : g.layers) {
      auto put = std::make_shared<std::vector<float>>(packed_floats(r, D));
      auto pvt = std::make_shared<std::vector<float>>(packed_floats(D, r));
      pack_matrix_t(L.u.data(), D, r, put->data());  // Uᵀ (r, D)
      pack_matrix_t(L.v.data(), r, D, pvt->data());  // Vᵀ (D, r)
      L.put = std::move(put);
      L.pvt = std::move(pvt);
    }
  }
}

// ---- the network -----------------------------------------------------------------------------

void transform_forward(const GradientTransform& g, float* z, const int* mode, int Ns, std::vector<LayerActs>* acts) {
  const int D = g.D(), r = g.rank;
  std::vector<float> h((size_t)Ns * r), pre((size_t)Ns * D);
  if (acts) acts->resize(g.layers.size());
  for (size_t j = 0; j < g.layers.size(); j++) {
    const MendLayer& L = g.layers[j];
    if (acts) (*acts)[j].z.assign(z, z + (size_t)Ns * D);
    if (L.pu && L.pv) {
      gemm_packed(false, true, Ns, 1.0f, z, D, PackedMatrix{L.pv->data(), r, D}, 0.0f, h.data(), r);
      gemm_packed(false, true, Ns, 1.0f, h.data(), r, PackedMatrix{L.pu->data(), D, r}, 0.0f, pre.data(), D);
    } else {
      // (Ns,r) = z·Vᵀ and (Ns,D) = h·Uᵀ; from the packed transposes where the handle has them (the same bits)
      if (!L.pvt || !gemm_nt_prepacked(Ns, 1.0f, z, D, PackedMatrix{L.pvt->data(), D, r}, 0.0f, h.data(), r))
        gemm(false, true, Ns, r, D, 1.0f, z, D, L.v.data(), D, 0.0f, h.data(), r);
      if (!L.put || !gemm_nt_prepacked(Ns, 1.0f, h.data(), r, PackedMatrix{L.put->data(), r, D}, 0.0f, pre.data(), D))
        gemm(false, true, Ns, D, r, 1.0f, h.data(), r, L.u.data(), r, 0.0f, pre.data(), D);
    }
    mend_layer_forward(z, pre.data(), L.bias.data(), L.scale.data(), L.shift.data(), mode, Ns, D, L.relu);
    if (acts) { (*acts)[j].h = h; (*acts)[j].p = pre; }
  }
}

void transform_backward(const GradientTransform& g, float* dz, const int* mode, int Ns, const std::vector<LayerActs>& acts,
                        std::vector<MendGrads::Layer>* gl) {
  const int D = g.D(), r = g.rank;
  std::vector<float> dp((size_t)Ns * D), dh((size_t)Ns * r);
  for (int j = (int)g.layers.size() - 1; j >= 0; j--) {
    const MendLayer& L = g.layers[j];
    const LayerActs& a = acts[j];
    MendGrads::Layer& G = (*gl)[j];
    // da = dz ⊙ act'(a) (the clamp passes gradient where a >= 0); dp = da ⊙ scale.
    mend_layer_backward(dp.data(), G.bias.data(), G.scale.data(), G.shift.data(), dz, a.p.data(), L.scale.data(),
                        L.shift.data(), mode, Ns, D, L.relu);
    gemm(true, false, D, r, Ns, 1.0f, dp.data(), D, a.h.data(), r, 1.0f, G.u.data(), r);   // dU (D,r) += dpᵀ·h
    if (L.pu) gemm_packed(false, false, Ns, 1.0f, dp.data(), D, PackedMatrix{L.pu->data(), D, r}, 0.0f, dh.data(), r);
    else gemm(false, false, Ns, r, D, 1.0f, dp.data(), D, L.u.data(), r, 0.0f, dh.data(), r);  // dh (Ns,r) = dp·U
    gemm(true, false, r, D, Ns, 1.0f, dh.data(), r, a.z.data(), D, 1.0f, G.v.data(), D);   // dV (r,D) += dhᵀ·z
    if (L.pv) gemm_packed(false, false, Ns, 1.0f, dh.data(), r, PackedMatrix{L.pv->data(), r, D}, 1.0f, dz, D);
    else gemm(false, false, Ns, D, r, 1.0f, dh.data(), r, L.v.data(), D, 1.0f, dz, D);         // dz += dh·V
  }
}

// ---- the editor pass ----------------------------------------------------------------------------

EditorPass::EditorPass(const MendEditor& e, const GradResult& pre, int rows)
    : keep(e.inner.size()), members(e.transforms.size()), z(e.transforms.size()), mode(e.transforms.size()),
      acts(e.transforms.size()), u(e.inner.size()), d(e.inner.size()), pre_(pre) {
  for (size_t k = 0; k < e.inner.size(); k++) {
    const GradientTransform& g = e.transforms[e.transform_of[k]];
    const Capture& c = capture(e, k);
    for (int r = 0; r < rows; r++) {
      const float* x = c.x.data() + (size_t)r * g.d_in;
      const float* dr = c.d.data() + (size_t)r * g.d_out;
      const bool xnz = std::any_of(x, x + g.d_in, [](float v) { return v != 0; });
      const bool dnz = std::any_of(dr, dr + g.d_out, [](float v) { return v != 0; });
      if (xnz && dnz) keep[k].push_back(r);
    }
    members[e.transform_of[k]].push_back(k);
  }
}

void EditorPass::append_z0(const MendEditor& e, size_t k) {
  const int s = e.transform_of[k];
  const GradientTransform& g = e.transforms[s];
  const Capture& c = capture(e, k);
  const int D = g.D();
  for (int r : keep[k]) {
    const float* x = c.x.data() + (size_t)r * g.d_in;
    const float* dr = c.d.data() + (size_t)r * g.d_out;
    const size_t at = z[s].size();
    z[s].resize(at + D);
    float* zr = z[s].data() + at;
    for (int i = 0; i < g.d_in; i++) zr[i] = (x[i] - g.u_mean[i]) / (g.u_std[i] + 1e-7f);
    for (int i = 0; i < g.d_out; i++) zr[g.d_in + i] = (dr[i] - g.v_mean[i]) / (g.v_std[i] + 1e-7f);
    mode[s].push_back(e.mode_of[k]);
  }
}

Status EditorPass::run(const GPT2Model& model, const MendEditor& e, bool save_acts) {
  for (size_t s = 0; s < e.transforms.size(); s++) {
    const GradientTransform& g = e.transforms[s];
    const int Ns = (int)mode[s].size();
    if (Ns == 0) continue;
    transform_forward(g, z[s].data(), mode[s].data(), Ns, save_acts ? &acts[s] : nullptr);
    int row = 0;
    for (size_t k : members[s]) {
      const int Nk = (int)keep[k].size();
      u[k].resize((size_t)Nk * g.d_in);
      d[k].resize((size_t)Nk * g.d_out);
      for (int i = 0; i < Nk; i++, row++) {
        const float* zr = z[s].data() + (size_t)row * g.D();
        std::memcpy(u[k].data() + (size_t)i * g.d_in, zr, g.d_in * sizeof(float));
        std::memcpy(d[k].data() + (size_t)i * g.d_out, zr + g.d_in, g.d_out * sizeof(float));
      }
    }
  }
  for (size_t k = 0; k < e.inner.size(); k++)
    if (!all_finite(u[k]) || !all_finite(d[k]))
      return Status::Error(code::kNonFinite, "the editor produced NaN or Inf for \"" + model.params()[e.inner[k]].name + "\"");
  return Status::OK();
}

Edit EditorPass::factors(const MendEditor& e) const {
  Edit edit;
  for (size_t k = 0; k < e.inner.size(); k++) {
    EditFactors f;
    f.param = e.inner[k];
    f.rows = (int)keep[k].size();
    auto a = std::make_shared<std::vector<float>>(u[k]);
    const float alpha = e.edit_lrs[k];
    for (float& x : *a) x *= alpha;
    f.a = std::move(a);
    f.b = std::make_shared<std::vector<float>>(d[k]);
    edit.push_back(std::move(f));
  }
  return edit;
}

}  // namespace mend
