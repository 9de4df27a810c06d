// mend.cc — see mend.h. The editor's GEMMs run once per shape over the rows of all inner params of
// that shape together (the weights are shared), so each U and V is streamed once per edit.
#include "mend.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "threadpool.h"

namespace mend {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool all_finite(const std::vector<float>& v) {
  for (float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

}  // namespace

Status GradientTransform::validate(const std::string& what) const {
  const size_t Dz = (size_t)D(), r = (size_t)rank, nm = (size_t)n_modes;
  auto sized = [&](const std::vector<float>& v, size_t n, const std::string& name) -> Status {
    if (v.size() != n)
      return Status::Error(code::kShape, what + name + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(n));
    if (!all_finite(v)) return Status::Error(code::kNonFinite, what + name + " holds NaN or Inf");
    return Status::OK();
  };
  if (d_in < 1 || d_out < 1 || rank < 1 || n_modes < 1 || layers.empty())
    return Status::Error(code::kInvalidArg, what + ": invalid sizes");
  for (size_t j = 0; j < layers.size(); j++) {
    const MendLayer& L = layers[j];
    std::string p = ".mlp.layers." + std::to_string(j) + ".";
    MEND_RETURN_IF_ERROR(sized(L.u, Dz * r, p + "u"));
    MEND_RETURN_IF_ERROR(sized(L.v, r * Dz, p + "v"));
    MEND_RETURN_IF_ERROR(sized(L.bias, Dz, p + "bias"));
    MEND_RETURN_IF_ERROR(sized(L.scale, nm * Dz, p + "mode_scale.weight"));
    MEND_RETURN_IF_ERROR(sized(L.shift, nm * Dz, p + "mode_shift.weight"));
  }
  MEND_RETURN_IF_ERROR(sized(u_mean, d_in, ".u_mean"));
  MEND_RETURN_IF_ERROR(sized(u_std, d_in, ".u_std"));
  MEND_RETURN_IF_ERROR(sized(u_s, d_in, ".u_s"));
  MEND_RETURN_IF_ERROR(sized(v_mean, d_out, ".v_mean"));
  MEND_RETURN_IF_ERROR(sized(v_std, d_out, ".v_std"));
  MEND_RETURN_IF_ERROR(sized(v_s, d_out, ".v_s"));
  return Status::OK();
}

void transform_forward(const GradientTransform& g, float* z, const int* mode, int Ns, std::vector<LayerActs>* acts) {
  const int D = g.D(), r = g.rank;
  std::vector<float> h((size_t)Ns * r), pre((size_t)Ns * D);
  if (acts) acts->resize(g.layers.size());
  for (size_t j = 0; j < g.layers.size(); j++) {
    const MendLayer& L = g.layers[j];
    if (acts) (*acts)[j].z.assign(z, z + (size_t)Ns * D);
    gemm(false, true, Ns, r, D, 1.0f, z, D, L.v.data(), D, 0.0f, h.data(), r);    // (Ns,r) = z·Vᵀ
    gemm(false, true, Ns, D, r, 1.0f, h.data(), r, L.u.data(), r, 0.0f, pre.data(), D);  // (Ns,D) = h·Uᵀ
    parallel_for(Ns, [&](int64_t b0, int64_t e0) {
      for (int64_t i = b0; i < e0; i++) {
        const float* sc = L.scale.data() + (size_t)mode[i] * D;
        const float* sh = L.shift.data() + (size_t)mode[i] * D;
        float* p = pre.data() + (size_t)i * D;
        float* zr = z + (size_t)i * D;
        for (int k = 0; k < D; k++) {
          p[k] += L.bias[k];
          const float a = p[k] * sc[k] + sh[k];
          zr[k] += L.relu ? (a > 0 ? a : 0.0f) : a;
        }
      }
    });
    if (acts) { (*acts)[j].h = h; (*acts)[j].p = pre; }
  }
}

Status check_editor(const GPT2Model& model, const MendEditor& e) {
  const size_t n = e.inner.size();
  if (n == 0) return Status::Error(code::kInvalidArg, "the editor has no inner params");
  if (e.transform_of.size() != n || e.mode_of.size() != n || e.edit_lrs.size() != n)
    return Status::Error(code::kShape, "edit_lrs has " + std::to_string(e.edit_lrs.size()) + " values for " +
                                           std::to_string(n) + " inner params");
  for (float a : e.edit_lrs)
    if (!std::isfinite(a)) return Status::Error(code::kNonFinite, "edit_lrs holds NaN or Inf");
  for (size_t s = 0; s < e.transforms.size(); s++) {
    const GradientTransform& g = e.transforms[s];
    MEND_RETURN_IF_ERROR(g.validate("mend.(" + std::to_string(g.d_in) + ", " + std::to_string(g.d_out) + ")"));
  }
  for (size_t k = 0; k < n; k++) {
    int p = e.inner[k];
    if (p < 0 || p >= (int)model.params().size()) return Status::Error(code::kInvalidArg, "inner param index out of range");
    const ParamInfo& info = model.params()[p];
    const bool conv = info.name.find(".attn.c_attn.weight") != std::string::npos ||
                      info.name.find(".attn.c_proj.weight") != std::string::npos ||
                      info.name.find(".mlp.c_fc.weight") != std::string::npos ||
                      info.name.find(".mlp.c_proj.weight") != std::string::npos;
    if (!conv) return Status::Error(code::kInvalidArg, "inner param \"" + info.name + "\" is not a Conv1D weight");
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

Status mend_edit(const GPT2Model& model, const std::shared_ptr<const Overlay>& prev, const MendEditor& editor,
                 const Batch& batch, std::shared_ptr<const Overlay>* next, Edit* edit, EditInfo* info) {
  MEND_RETURN_IF_ERROR(check_editor(model, editor));
  const size_t n = editor.inner.size();

  // 1. Pre-edit pass on the current model: loss, and X_k, D_k of every inner param.
  auto t0 = std::chrono::steady_clock::now();
  GradOptions go;
  go.capture = editor.inner;
  GradResult gr;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batch, go, prev.get(), &gr));
  info->loss = gr.loss;
  info->ms_pre = ms_since(t0);

  // 2. Keep rows where X has a nonzero and D has a nonzero.
  t0 = std::chrono::steady_clock::now();
  const int rows = batch.B * batch.T;
  std::vector<std::vector<int>> keep(n);
  info->kept.assign(n, 0);
  for (size_t k = 0; k < n; k++) {
    const Capture& c = gr.captures.at(editor.inner[k]);
    const GradientTransform& g = editor.transforms[editor.transform_of[k]];
    for (int r = 0; r < rows; r++) {
      const float* x = c.x.data() + (size_t)r * g.d_in;
      const float* d = c.d.data() + (size_t)r * g.d_out;
      bool xnz = false, dnz = false;
      for (int i = 0; i < g.d_in && !xnz; i++) xnz = x[i] != 0;
      for (int i = 0; i < g.d_out && !dnz; i++) dnz = d[i] != 0;
      if (xnz && dnz) keep[k].push_back(r);
    }
    info->kept[k] = (int)keep[k].size();
  }

  // 3. Per transform: z0 = [û, v̂] for the rows of all its inner params, then the layers.
  info->u.assign(n, {});
  info->d.assign(n, {});
  for (size_t s = 0; s < editor.transforms.size(); s++) {
    const GradientTransform& g = editor.transforms[s];
    const int D = g.D();
    std::vector<size_t> members;
    int Ns = 0;
    for (size_t k = 0; k < n; k++)
      if (editor.transform_of[k] == (int)s) { members.push_back(k); Ns += (int)keep[k].size(); }
    if (Ns == 0) continue;
    std::vector<float> z((size_t)Ns * D);
    std::vector<int> mode(Ns);
    int row = 0;
    for (size_t k : members) {
      const Capture& c = gr.captures.at(editor.inner[k]);
      for (int src : keep[k]) {
        float* zr = z.data() + (size_t)row * D;
        const float* x = c.x.data() + (size_t)src * g.d_in;
        const float* d = c.d.data() + (size_t)src * g.d_out;
        for (int i = 0; i < g.d_in; i++) zr[i] = (x[i] - g.u_mean[i]) / (g.u_std[i] + 1e-7f);
        for (int i = 0; i < g.d_out; i++) zr[g.d_in + i] = (d[i] - g.v_mean[i]) / (g.v_std[i] + 1e-7f);
        mode[row] = editor.mode_of[k];
        row++;
      }
    }
    transform_forward(g, z.data(), mode.data(), Ns, nullptr);
    // 4. Split into Ũ and D̃ per inner param.
    row = 0;
    for (size_t k : members) {
      const int Nk = (int)keep[k].size();
      auto& u = info->u[k];
      auto& d = info->d[k];
      u.resize((size_t)Nk * g.d_in);
      d.resize((size_t)Nk * g.d_out);
      for (int i = 0; i < Nk; i++, row++) {
        const float* zr = z.data() + (size_t)row * D;
        std::memcpy(u.data() + (size_t)i * g.d_in, zr, g.d_in * sizeof(float));
        std::memcpy(d.data() + (size_t)i * g.d_out, zr + g.d_in, g.d_out * sizeof(float));
      }
    }
  }
  for (size_t k = 0; k < n; k++)
    if (!all_finite(info->u[k]) || !all_finite(info->d[k]))
      return Status::Error(code::kNonFinite, "the editor produced NaN or Inf for \"" + model.params()[editor.inner[k]].name + "\"");

  // 5. cos(G, P) with G = XᵀD (true gradient) and P = ŨᵀD̃, from row Gram matrices (no d_in×d_out).
  info->cos.assign(n, 0.0);
  for (size_t k = 0; k < n; k++) {
    const GradientTransform& g = editor.transforms[editor.transform_of[k]];
    const Capture& c = gr.captures.at(editor.inner[k]);
    const int Nk = (int)keep[k].size();
    if (Nk == 0) continue;
    std::vector<float> X((size_t)Nk * g.d_in), Dm((size_t)Nk * g.d_out);
    for (int i = 0; i < Nk; i++) {
      std::memcpy(X.data() + (size_t)i * g.d_in, c.x.data() + (size_t)keep[k][i] * g.d_in, g.d_in * sizeof(float));
      std::memcpy(Dm.data() + (size_t)i * g.d_out, c.d.data() + (size_t)keep[k][i] * g.d_out, g.d_out * sizeof(float));
    }
    auto gram = [&](const std::vector<float>& A, const std::vector<float>& B, int dim) {
      std::vector<float> out((size_t)Nk * Nk);
      gemm(false, true, Nk, Nk, dim, 1.0f, A.data(), dim, B.data(), dim, 0.0f, out.data(), Nk);
      return out;
    };
    auto dot = [&](const std::vector<float>& a, const std::vector<float>& b) {
      double s = 0;
      for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * b[i];
      return s;
    };
    double gp = dot(gram(X, info->u[k], g.d_in), gram(Dm, info->d[k], g.d_out));
    double gg = dot(gram(X, X, g.d_in), gram(Dm, Dm, g.d_out));
    double pp = dot(gram(info->u[k], info->u[k], g.d_in), gram(info->d[k], info->d[k], g.d_out));
    info->cos[k] = (gg > 0 && pp > 0) ? gp / std::sqrt(gg * pp) : 0.0;
  }
  info->ms_editor = ms_since(t0);

  // 6. Factors (α·Ũ, D̃) and the new overlay.
  t0 = std::chrono::steady_clock::now();
  edit->clear();
  for (size_t k = 0; k < n; k++) {
    EditFactors f;
    f.param = editor.inner[k];
    f.rows = info->kept[k];
    auto a = std::make_shared<std::vector<float>>(info->u[k]);
    const float alpha = editor.edit_lrs[k];
    for (float& x : *a) x *= alpha;
    f.a = std::move(a);
    f.b = std::make_shared<std::vector<float>>(info->d[k]);
    edit->push_back(std::move(f));
  }
  MEND_RETURN_IF_ERROR(Overlay::extend(model, prev, *edit, next));
  info->ms_overlay = ms_since(t0);
  return Status::OK();
}

}  // namespace mend
