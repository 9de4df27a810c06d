// edit.cc — see edit.h.
#include "mend/edit.h"

#include <chrono>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"

namespace mend {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Status mend_edit(const GPT2Model& model, const std::shared_ptr<const Overlay>& prev, const MendEditor& editor,
                 const Batch& batch, std::shared_ptr<const Overlay>* next, Edit* edit, EditInfo* info) {
  MEND_RETURN_IF_ERROR(check_editor(model, editor, /*values=*/false));  // values checked when the handle was made
  const size_t n = editor.inner.size();

  // 1. Pre-edit pass on the current model: loss, and X_k, D_k of every inner param.
  auto t0 = std::chrono::steady_clock::now();
  GradOptions go;
  go.capture = editor.inner;
  GradResult gr;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batch, go, prev.get(), &gr));
  info->loss = gr.loss;
  info->ms_pre = ms_since(t0);

  // 2-4. The editor pass (eval mode: the statistics are read only): kept rows, z0, Ũ and D̃.
  t0 = std::chrono::steady_clock::now();
  EditorPass pass(editor, gr, batch.B * batch.T);
  info->kept.assign(n, 0);
  for (size_t k = 0; k < n; k++) {
    info->kept[k] = (int)pass.keep[k].size();
    pass.append_z0(editor, k);
  }
  MEND_RETURN_IF_ERROR(pass.run(model, editor, false));
  const std::vector<std::vector<int>>& keep = pass.keep;

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
    double gp = dot(gram(X, pass.u[k], g.d_in), gram(Dm, pass.d[k], g.d_out));
    double gg = dot(gram(X, X, g.d_in), gram(Dm, Dm, g.d_out));
    double pp = dot(gram(pass.u[k], pass.u[k], g.d_in), gram(pass.d[k], pass.d[k], g.d_out));
    info->cos[k] = (gg > 0 && pp > 0) ? gp / std::sqrt(gg * pp) : 0.0;
  }
  info->ms_editor = ms_since(t0);

  // 6. Factors (α·Ũ, D̃) and the new overlay.
  t0 = std::chrono::steady_clock::now();
  *edit = pass.factors(editor);
  MEND_RETURN_IF_ERROR(Overlay::extend(model, prev, *edit, next));
  info->ms_overlay = ms_since(t0);
  info->u = std::move(pass.u);
  info->d = std::move(pass.d);
  return Status::OK();
}

}  // namespace mend
