// mend_train.cc — see mend_train.h.
#include "mend_train.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "overlay.h"
#include "threadpool.h"

namespace mend {

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

// Welford update of one statistics vector with row x (EasyEdit's update_counter), k already counted.
void welford(std::vector<float>& mean, std::vector<float>& s, const float* x, double k) {
  for (size_t i = 0; i < mean.size(); i++) {
    const float m0 = mean[i];
    const float m1 = m0 + (float)((x[i] - m0) / k);
    s[i] += (x[i] - m0) * (x[i] - m1);
    mean[i] = m1;
  }
}

// Backward through the layers of g: dz (Ns, D) holds ∂L/∂z_L and becomes ∂L/∂z_0; parameter
// gradients are added to gl.
void transform_backward(const GradientTransform& g, float* dz, const int* mode, int Ns, const std::vector<LayerActs>& acts,
                        std::vector<MendGrads::Layer>* gl) {
  const int D = g.D(), r = g.rank;
  std::vector<float> dp((size_t)Ns * D), dh((size_t)Ns * r);
  for (int j = (int)g.layers.size() - 1; j >= 0; j--) {
    const MendLayer& L = g.layers[j];
    const LayerActs& a = acts[j];
    MendGrads::Layer& G = (*gl)[j];
    // da = dz ⊙ act'(a) (the clamp passes gradient where a >= 0); dp = da ⊙ scale.
    for (int i = 0; i < Ns; i++) {
      const float* sc = L.scale.data() + (size_t)mode[i] * D;
      const float* sh = L.shift.data() + (size_t)mode[i] * D;
      float* gsc = G.scale.data() + (size_t)mode[i] * D;
      float* gsh = G.shift.data() + (size_t)mode[i] * D;
      const float* p = a.p.data() + (size_t)i * D;
      const float* dzr = dz + (size_t)i * D;
      float* dpr = dp.data() + (size_t)i * D;
      for (int k = 0; k < D; k++) {
        const float pre = p[k] * sc[k] + sh[k];
        const float da = (!L.relu || pre >= 0) ? dzr[k] : 0.0f;
        gsh[k] += da;
        gsc[k] += da * p[k];
        dpr[k] = da * sc[k];
        G.bias[k] += dpr[k];
      }
    }
    gemm(true, false, D, r, Ns, 1.0f, dp.data(), D, a.h.data(), r, 1.0f, G.u.data(), r);   // dU (D,r) += dpᵀ·h
    gemm(false, false, Ns, r, D, 1.0f, dp.data(), D, L.u.data(), r, 0.0f, dh.data(), r);  // dh (Ns,r) = dp·U
    gemm(true, false, r, D, Ns, 1.0f, dh.data(), r, a.z.data(), D, 1.0f, G.v.data(), D);   // dV (r,D) += dhᵀ·z
    gemm(false, false, Ns, D, r, 1.0f, dh.data(), r, L.v.data(), D, 1.0f, dz, D);         // dz += dh·V
  }
}

// Token accuracy of logits (B,T,V) against HF-shifted labels.
float token_accuracy(const FloatBuf& logits, const Batch& b, int V) {
  int hit = 0, n = 0;
  for (int r = 0; r < b.B; r++)
    for (int t = 0; t + 1 < b.T; t++) {
      const int32_t lab = b.labels[r * b.T + t + 1];
      if (lab == -100) continue;
      const float* l = logits.data() + ((size_t)r * b.T + t) * V;
      hit += (int)(std::max_element(l, l + V) - l) == lab;
      n++;
    }
  return n ? (float)hit / n : 0.0f;
}

// Adds c·α-weighted low-rank outer gradients of one post-edit pass for inner param k.
void lowrank_grads(const Capture& cap, int rows, const std::vector<float>& U, const std::vector<float>& Dt, int Nk, int din,
                   int dout, float alpha, float c, float* dU, float* dD, double* dalpha) {
  if (Nk == 0 || c == 0) return;
  std::vector<float> A((size_t)Nk * rows), Bm((size_t)Nk * rows);
  gemm(false, true, Nk, rows, dout, 1.0f, Dt.data(), dout, cap.d.data(), dout, 0.0f, A.data(), rows);  // D̃·D'ᵀ
  gemm(false, true, Nk, rows, din, 1.0f, U.data(), din, cap.x.data(), din, 0.0f, Bm.data(), rows);     // Ũ·X'ᵀ
  gemm(false, false, Nk, din, rows, alpha * c, A.data(), rows, cap.x.data(), din, 1.0f, dU, din);      // α c D̃ Gᵀ
  gemm(false, false, Nk, dout, rows, alpha * c, Bm.data(), rows, cap.d.data(), dout, 1.0f, dD, dout);  // α c Ũ G
  double s = 0;
  for (size_t i = 0; i < A.size(); i++) s += (double)A[i] * Bm[i];
  *dalpha += c * s;
}

}  // namespace

Status mend_train_step(const GPT2Model& model, MendEditor* editor, const TrainBatches& batches, float cedit, float cloc,
                       bool update_stats, MendGrads* grads, float grad_scale, TrainStepResult* out) {
  MEND_RETURN_IF_ERROR(check_editor(model, *editor));
  MEND_RETURN_IF_ERROR(model.check_batch(batches.loc, false));
  const size_t n = editor->inner.size();
  const int V = model.config().vocab_size;

  // 1. Pre-edit pass on the base model.
  GradOptions go;
  go.capture = editor->inner;
  GradResult pre;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batches.edit, go, nullptr, &pre));
  out->pre_loss = pre.loss;

  // 2. Kept rows, statistics (training mode: per inner param in order, row by row) and z0.
  const int rows = batches.edit.B * batches.edit.T;
  std::vector<std::vector<int>> keep(n);
  for (size_t k = 0; k < n; k++) {
    const GradientTransform& g = editor->transforms[editor->transform_of[k]];
    const Capture& c = pre.captures.at(editor->inner[k]);
    for (int r = 0; r < rows; r++) {
      const float* x = c.x.data() + (size_t)r * g.d_in;
      const float* d = c.d.data() + (size_t)r * g.d_out;
      bool xnz = std::any_of(x, x + g.d_in, [](float v) { return v != 0; });
      bool dnz = std::any_of(d, d + g.d_out, [](float v) { return v != 0; });
      if (xnz && dnz) keep[k].push_back(r);
    }
  }
  const size_t S = editor->transforms.size();
  std::vector<std::vector<float>> z(S);
  std::vector<std::vector<int>> mode(S);
  std::vector<std::vector<size_t>> members(S);
  for (size_t k = 0; k < n; k++) {
    const int s = editor->transform_of[k];
    GradientTransform& g = editor->transforms[s];
    const Capture& c = pre.captures.at(editor->inner[k]);
    members[s].push_back(k);
    if (update_stats) {
      for (int r : keep[k]) {
        const float* x = c.x.data() + (size_t)r * g.d_in;
        const float* d = c.d.data() + (size_t)r * g.d_out;
        if (!(g.k >= 1)) {  // first row ever: the statistics start from it (EasyEdit's norm_init)
          g.u_mean.assign(x, x + g.d_in);
          g.v_mean.assign(d, d + g.d_out);
          std::fill(g.u_s.begin(), g.u_s.end(), 0.0f);
          std::fill(g.v_s.begin(), g.v_s.end(), 0.0f);
          g.k = 1;
        } else {
          g.k += 1;
          welford(g.u_mean, g.u_s, x, g.k);
          welford(g.v_mean, g.v_s, d, g.k);
        }
      }
      if (g.k < 2) return Status::Error(code::kInvalidArg, "the editor statistics need at least two kept rows (k = " + std::to_string((int)g.k) + "): use a target of two or more tokens or a larger first batch");
      for (int i = 0; i < g.d_in; i++) g.u_std[i] = std::sqrt(g.u_s[i] / (float)(g.k - 1));
      for (int i = 0; i < g.d_out; i++) g.v_std[i] = std::sqrt(g.v_s[i] / (float)(g.k - 1));
    }
    const int D = g.D();
    for (int r : keep[k]) {
      const float* x = c.x.data() + (size_t)r * g.d_in;
      const float* d = c.d.data() + (size_t)r * g.d_out;
      const size_t at = z[s].size();
      z[s].resize(at + D);
      float* zr = z[s].data() + at;
      for (int i = 0; i < g.d_in; i++) zr[i] = (x[i] - g.u_mean[i]) / (g.u_std[i] + 1e-7f);
      for (int i = 0; i < g.d_out; i++) zr[g.d_in + i] = (d[i] - g.v_mean[i]) / (g.v_std[i] + 1e-7f);
      mode[s].push_back(editor->mode_of[k]);
    }
  }

  // 3. Editor forward with saved activations; split into Ũ, D̃ per inner param.
  std::vector<std::vector<LayerActs>> acts(S);
  std::vector<std::vector<float>> U(n), Dt(n);
  for (size_t s = 0; s < S; s++) {
    const GradientTransform& g = editor->transforms[s];
    const int Ns = (int)mode[s].size();
    if (Ns == 0) continue;
    transform_forward(g, z[s].data(), mode[s].data(), Ns, &acts[s]);
    int row = 0;
    for (size_t k : members[s]) {
      const int Nk = (int)keep[k].size();
      U[k].resize((size_t)Nk * g.d_in);
      Dt[k].resize((size_t)Nk * g.d_out);
      for (int i = 0; i < Nk; i++, row++) {
        const float* zr = z[s].data() + (size_t)row * g.D();
        std::memcpy(U[k].data() + (size_t)i * g.d_in, zr, g.d_in * sizeof(float));
        std::memcpy(Dt[k].data() + (size_t)i * g.d_out, zr + g.d_in, g.d_out * sizeof(float));
      }
    }
  }
  Edit edit;
  for (size_t k = 0; k < n; k++) {
    for (float v : U[k]) if (!std::isfinite(v)) return Status::Error(code::kNonFinite, "the editor produced NaN or Inf");
    for (float v : Dt[k]) if (!std::isfinite(v)) return Status::Error(code::kNonFinite, "the editor produced NaN or Inf");
    EditFactors f;
    f.param = editor->inner[k];
    f.rows = (int)keep[k].size();
    auto a = std::make_shared<std::vector<float>>(U[k]);
    for (float& v : *a) v *= editor->edit_lrs[k];
    f.a = std::move(a);
    f.b = std::make_shared<std::vector<float>>(Dt[k]);
    edit.push_back(std::move(f));
  }
  std::shared_ptr<const Overlay> ov;
  std::vector<const Edit*> one{&edit};
  MEND_RETURN_IF_ERROR(Overlay::build(model, one, &ov));

  // 4. Post-edit passes: L_edit (on editOuter when given) and the locality KL.
  const Batch& eb = batches.edit_outer ? *batches.edit_outer : batches.edit;
  GradOptions ge;
  ge.capture = editor->inner;
  ge.want_logits = true;
  GradResult post;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(eb, ge, ov.get(), &post));
  out->edit = post.loss;
  out->edit_acc = token_accuracy(post.logits, eb, V);
  ForwardResult base_loc;
  ForwardOptions fo;
  MEND_RETURN_IF_ERROR(model.forward(batches.loc, fo, nullptr, &base_loc));
  GradOptions gl;
  gl.capture = editor->inner;
  gl.kl_target = base_loc.logits.data();
  GradResult loc;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batches.loc, gl, ov.get(), &loc));
  out->loc = loc.loss;
  out->total = cedit * out->edit + cloc * out->loc;
  if (!grads) return Status::OK();

  // 5. Outer gradients: low-rank through the overlay, then back through the editor layers.
  std::vector<std::vector<float>> dz(S);
  for (size_t s = 0; s < S; s++) dz[s].assign(z[s].size(), 0.0f);
  for (size_t s = 0; s < S; s++) {
    const GradientTransform& g = editor->transforms[s];
    size_t row = 0;
    for (size_t k : members[s]) {
      const int Nk = (int)keep[k].size();
      std::vector<float> dU((size_t)Nk * g.d_in, 0.0f), dD((size_t)Nk * g.d_out, 0.0f);
      double dalpha = 0;
      const float alpha = editor->edit_lrs[k];
      lowrank_grads(post.captures.at(editor->inner[k]), eb.B * eb.T, U[k], Dt[k], Nk, g.d_in, g.d_out, alpha, cedit,
                    dU.data(), dD.data(), &dalpha);
      lowrank_grads(loc.captures.at(editor->inner[k]), batches.loc.B * batches.loc.T, U[k], Dt[k], Nk, g.d_in, g.d_out,
                    alpha, cloc, dU.data(), dD.data(), &dalpha);
      grads->edit_lrs[k] += (float)(dalpha * grad_scale);
      for (int i = 0; i < Nk; i++, row++) {
        float* d = dz[s].data() + row * g.D();
        for (int j = 0; j < g.d_in; j++) d[j] = dU[(size_t)i * g.d_in + j] * grad_scale;
        for (int j = 0; j < g.d_out; j++) d[g.d_in + j] = dD[(size_t)i * g.d_out + j] * grad_scale;
      }
    }
    if (!mode[s].empty())
      transform_backward(g, dz[s].data(), mode[s].data(), (int)mode[s].size(), acts[s], &grads->transforms[s]);
  }
  return Status::OK();
}

}  // namespace mend
