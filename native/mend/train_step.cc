// train_step.cc — see train_step.h.
#include "mend/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "mend/lifelong.h"
#include "model/overlay.h"

namespace mend {
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

// Training-mode statistics (EasyEdit's update_counter): each kept row of one inner param updates
// μ and the Welford sums of its transform, u then v, row by row; then σ = √(s/(k−1)).
Status update_statistics(GradientTransform* g, const Capture& c, const std::vector<int>& rows) {
  for (int r : rows) {
    const float* x = c.x.data() + (size_t)r * g->d_in;
    const float* d = c.d.data() + (size_t)r * g->d_out;
    if (!(g->k >= 1)) {  // first row ever: the statistics start from it (EasyEdit's norm_init)
      g->u_mean.assign(x, x + g->d_in);
      g->v_mean.assign(d, d + g->d_out);
      std::fill(g->u_s.begin(), g->u_s.end(), 0.0f);
      std::fill(g->v_s.begin(), g->v_s.end(), 0.0f);
      g->k = 1;
    } else {
      g->k += 1;
      welford(g->u_mean, g->u_s, x, g->k);
      welford(g->v_mean, g->v_s, d, g->k);
    }
  }
  if (g->k < 2)
    return Status::Error(code::kInvalidArg, "the editor statistics need at least two kept rows (k = " +
                                                std::to_string((int)g->k) +
                                                "): use a target of two or more tokens or a larger first batch");
  for (int i = 0; i < g->d_in; i++) g->u_std[i] = std::sqrt(g->u_s[i] / (float)(g->k - 1));
  for (int i = 0; i < g->d_out; i++) g->v_std[i] = std::sqrt(g->v_s[i] / (float)(g->k - 1));
  return Status::OK();
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

// The post-edit passes of a training step on the edited model `ov`: L_edit on editOuter (else the
// edit batch) with its token accuracy, and the locality KL against `loc_ref` (null = the base), with
// the inner params' captures of both for the outer gradients.
Status post_edit_passes(const GPT2Model& model, const MendEditor& editor, const TrainBatches& batches, const Overlay* ov,
                        const WeightDeltas* loc_ref, float cedit, float cloc, GradResult* post, GradResult* loc,
                        TrainStepResult* out) {
  const Batch& eb = batches.edit_outer ? *batches.edit_outer : batches.edit;
  GradOptions ge;
  ge.capture = editor.inner;
  ge.want_accuracy = true;  // the LM head on the label rows only (no logits returned)
  MEND_RETURN_IF_ERROR(model.loss_and_grad(eb, ge, ov, post));
  out->edit = post->loss;
  out->edit_acc = post->n_targets ? (float)post->n_correct / post->n_targets : 0.0f;
  ForwardResult ref;
  ForwardOptions fo;
  MEND_RETURN_IF_ERROR(model.forward(batches.loc, fo, loc_ref, &ref));
  GradOptions gl;
  gl.capture = editor.inner;
  gl.kl_target = ref.logits.data();
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batches.loc, gl, ov, loc));
  out->loc = loc->loss;
  out->total = cedit * out->edit + cloc * out->loc;
  return Status::OK();
}

}  // namespace

Status mend_train_step(const GPT2Model& model, MendEditor* editor, const TrainBatches& batches, float cedit, float cloc,
                       bool update_stats, MendGrads* grads, float grad_scale, TrainStepResult* out) {
  MEND_RETURN_IF_ERROR(check_editor(model, *editor, /*values=*/false));  // values: at trainer creation (editor.h)
  MEND_RETURN_IF_ERROR(model.check_batch(batches.loc, false));
  const size_t n = editor->inner.size();

  // 1. Pre-edit pass on the base model.
  GradOptions go;
  go.capture = editor->inner;
  GradResult pre;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batches.edit, go, nullptr, &pre));
  out->pre_loss = pre.loss;

  // 2. Kept rows, statistics (training mode: per inner param in order, row by row) and z0.
  EditorPass pass(*editor, pre, batches.edit.B * batches.edit.T);
  for (size_t k = 0; k < n; k++) {
    if (update_stats)
      MEND_RETURN_IF_ERROR(update_statistics(&editor->transforms[editor->transform_of[k]], pass.capture(*editor, k), pass.keep[k]));
    pass.append_z0(*editor, k);
  }

  // 3. Editor forward with saved activations; Ũ, D̃ and the factors of the edit.
  MEND_RETURN_IF_ERROR(pass.run(model, *editor, true));
  Edit edit = pass.factors(*editor);
  std::shared_ptr<const Overlay> ov;
  std::vector<const Edit*> one{&edit};
  MEND_RETURN_IF_ERROR(Overlay::build(model, one, &ov));

  // 4. Post-edit passes: L_edit (on editOuter when given) and the locality KL against the base.
  const Batch& eb = batches.edit_outer ? *batches.edit_outer : batches.edit;
  GradResult post, loc;
  MEND_RETURN_IF_ERROR(post_edit_passes(model, *editor, batches, ov.get(), nullptr, cedit, cloc, &post, &loc, out));
  if (!grads) return Status::OK();

  // 5. Outer gradients: low-rank through the overlay, then back through the editor layers.
  const size_t S = editor->transforms.size();
  for (size_t s = 0; s < S; s++) {
    const GradientTransform& g = editor->transforms[s];
    std::vector<float> dz(pass.z[s].size(), 0.0f);
    size_t row = 0;
    for (size_t k : pass.members[s]) {
      const int Nk = (int)pass.keep[k].size();
      std::vector<float> dU((size_t)Nk * g.d_in, 0.0f), dD((size_t)Nk * g.d_out, 0.0f);
      double dalpha = 0;
      const float alpha = editor->edit_lrs[k];
      lowrank_grads(post.captures.at(editor->inner[k]), eb.B * eb.T, pass.u[k], pass.d[k], Nk, g.d_in, g.d_out, alpha,
                    cedit, dU.data(), dD.data(), &dalpha);
      lowrank_grads(loc.captures.at(editor->inner[k]), batches.loc.B * batches.loc.T, pass.u[k], pass.d[k], Nk, g.d_in,
                    g.d_out, alpha, cloc, dU.data(), dD.data(), &dalpha);
      grads->edit_lrs[k] += (float)(dalpha * grad_scale);
      for (int i = 0; i < Nk; i++, row++) {
        float* d = dz.data() + row * g.D();
        for (int j = 0; j < g.d_in; j++) d[j] = dU[(size_t)i * g.d_in + j] * grad_scale;
        for (int j = 0; j < g.d_out; j++) d[g.d_in + j] = dD[(size_t)i * g.d_out + j] * grad_scale;
      }
    }
    if (!pass.mode[s].empty())
      transform_backward(g, dz.data(), pass.mode[s].data(), (int)pass.mode[s].size(), pass.acts[s], &grads->transforms[s]);
  }
  return Status::OK();
}

// The lifelong (MALMEN) solve of one inner param in a training step, and its adjoint.
struct SolveK {
  int n = 0, din = 0, dout = 0;
  std::vector<float> K, A, dW;   // (n, din) keys, (n, din) A = K·P0, (din, dout) ΔW
  std::vector<double> L;         // (n, n) Cholesky factor of M = I + A·Kᵀ
  std::vector<float> c;          // (n) c_i = α (k_i·ũ_i)
  std::vector<double> kdu;       // (n) k_i·ũ_i
};

Status malmen_train_step(const GPT2Model& model, MendEditor* editor, const RidgeState& prior, const TrainBatches& batches,
                         float cedit, float cloc, bool update_stats, MendGrads* grads, float grad_scale, TrainStepResult* out) {
  MEND_RETURN_IF_ERROR(check_editor(model, *editor, /*values=*/false));  // values: at trainer creation (editor.h)
  MEND_RETURN_IF_ERROR(model.check_batch(batches.loc, false));
  const size_t n = editor->inner.size();
  if (prior.params.size() != n) return Status::Error(code::kInvalidArg, "the lifelong prior does not match the editor's inner params");
  for (size_t k = 0; k < n; k++)
    if (prior.params[k].param != editor->inner[k]) return Status::Error(code::kInvalidArg, "the lifelong prior does not match the editor's inner params");

  // 1-3. Pre-edit pass on the base, statistics, editor forward with saved activations.
  GradOptions go;
  go.capture = editor->inner;
  go.per_row_mean = true;  // every row is its own edit: its gradient as if edited alone
  GradResult pre;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batches.edit, go, nullptr, &pre));
  out->pre_loss = pre.loss;
  EditorPass pass(*editor, pre, batches.edit.B * batches.edit.T);
  for (size_t k = 0; k < n; k++) {
    if (update_stats)
      MEND_RETURN_IF_ERROR(update_statistics(&editor->transforms[editor->transform_of[k]], pass.capture(*editor, k), pass.keep[k]));
    pass.append_z0(*editor, k);
  }
  MEND_RETURN_IF_ERROR(pass.run(model, *editor, true));

  // 4. The joint solve per inner param: ΔW = Aᵀ·M⁻¹·V.
  std::vector<SolveK> sol(n);
  std::map<int, std::vector<float>> merged;
  for (size_t k = 0; k < n; k++) {
    SolveK& S = sol[k];
    const RidgeParam& P0 = prior.params[k];
    S.n = (int)pass.keep[k].size();
    S.din = P0.d_in;
    S.dout = P0.d_out;
    const Capture& cap = pass.capture(*editor, k);
    const float alpha = editor->edit_lrs[k];
    S.K.resize((size_t)S.n * S.din);
    S.c.resize(S.n);
    S.kdu.resize(S.n);
    std::vector<float> Vv((size_t)S.n * S.dout);
    for (int i = 0; i < S.n; i++) {
      const float* x = cap.x.data() + (size_t)pass.keep[k][i] * S.din;
      std::memcpy(S.K.data() + (size_t)i * S.din, x, S.din * sizeof(float));
      const float* ut = pass.u[k].data() + (size_t)i * S.din;
      double dot = 0;
      for (int q = 0; q < S.din; q++) dot += (double)x[q] * ut[q];
      S.kdu[i] = dot;
      S.c[i] = (float)(alpha * dot);
      const float* dt = pass.d[k].data() + (size_t)i * S.dout;
      for (int o = 0; o < S.dout; o++) Vv[(size_t)i * S.dout + o] = S.c[i] * dt[o];
    }
    std::vector<float> P0f(P0.P.begin(), P0.P.end());
    S.A.assign((size_t)S.n * S.din, 0.0f);
    S.dW.assign((size_t)S.din * S.dout, 0.0f);
    if (S.n > 0) {
      gemm(false, false, S.n, S.din, S.din, 1.0f, S.K.data(), S.din, P0f.data(), S.din, 0.0f, S.A.data(), S.din);
      std::vector<float> Mf((size_t)S.n * S.n);
      gemm(false, true, S.n, S.n, S.din, 1.0f, S.A.data(), S.din, S.K.data(), S.din, 0.0f, Mf.data(), S.n);
      S.L.resize((size_t)S.n * S.n);
      for (int i = 0; i < S.n; i++)
        for (int j = 0; j < S.n; j++) {
          // symmetrise (A·Kᵀ = K·P0·Kᵀ is symmetric up to rounding)
          const double v = 0.5 * ((double)Mf[(size_t)i * S.n + j] + (double)Mf[(size_t)j * S.n + i]);
          S.L[(size_t)i * S.n + j] = v + (i == j ? 1.0 : 0.0);
        }
      if (!cholesky(S.L.data(), S.n)) return Status::Error(code::kNonFinite, "the lifelong solve of a training step is not positive definite");
      // X = M⁻¹·(V − K·ΔW0): the rows on top of the prior's own solution ΔW0 (zero for a bare prior;
      // a trained-on background of earlier edits otherwise).
      std::vector<double> X(Vv.begin(), Vv.end());
      for (int i = 0; i < S.n; i++) {
        double* xi = X.data() + (size_t)i * S.dout;
        const float* ki = S.K.data() + (size_t)i * S.din;
        for (int q = 0; q < S.din; q++) {
          if (ki[q] == 0) continue;
          const double* w0 = P0.dW.data() + (size_t)q * S.dout;
          for (int o = 0; o < S.dout; o++) xi[o] -= ki[q] * w0[o];
        }
      }
      cholesky_solve(S.L.data(), S.n, X.data(), S.dout);
      std::vector<float> Xf(X.begin(), X.end());
      gemm(true, false, S.din, S.dout, S.n, 1.0f, S.A.data(), S.din, Xf.data(), S.dout, 0.0f, S.dW.data(), S.dout);
    }
    for (size_t i = 0; i < S.dW.size(); i++) S.dW[i] += (float)P0.dW[i];
    std::vector<float>& m = merged[editor->inner[k]];
    m.resize(S.dW.size());
    model.copy_param(editor->inner[k], m.data());
    for (size_t i = 0; i < m.size(); i++) m[i] += S.dW[i];
    for (float x : m)
      if (!std::isfinite(x)) return Status::Error(code::kNonFinite, "the lifelong solve of a training step produced NaN or Inf");
  }
  std::shared_ptr<const Overlay> ov;
  MEND_RETURN_IF_ERROR(Overlay::from_merged(model, std::move(merged), &ov));

  // 5. Post-edit passes (as mend_train_step). The locality reference is the model before this
  // step's edits: the base plus the background log (RLEdit's KL against the model before step t), so
  // the loss measures these edits' damage.
  const Batch& eb = batches.edit_outer ? *batches.edit_outer : batches.edit;
  std::shared_ptr<const Overlay> bg;
  if (prior.n_rows > 0) MEND_RETURN_IF_ERROR(ridge_overlay(model, prior, &bg));
  GradResult post, loc;
  MEND_RETURN_IF_ERROR(post_edit_passes(model, *editor, batches, ov.get(), bg.get(), cedit, cloc, &post, &loc, out));
  if (!grads) return Status::OK();

  // 6. Outer gradients through the solve, then back through the editor layers.
  const size_t T = editor->transforms.size();
  for (size_t t = 0; t < T; t++) {
    const GradientTransform& g = editor->transforms[t];
    std::vector<float> dz(pass.z[t].size(), 0.0f);
    size_t row = 0;
    for (size_t k : pass.members[t]) {
      SolveK& S = sol[k];
      if (S.n == 0) continue;
      // G = c_edit·X'ᵀD' + c_loc·X'ᵀD' (din, dout)
      std::vector<float> G((size_t)S.din * S.dout, 0.0f);
      const Capture& ce = post.captures.at(editor->inner[k]);
      const Capture& cl = loc.captures.at(editor->inner[k]);
      gemm(true, false, S.din, S.dout, eb.B * eb.T, cedit, ce.x.data(), S.din, ce.d.data(), S.dout, 0.0f, G.data(), S.dout);
      gemm(true, false, S.din, S.dout, batches.loc.B * batches.loc.T, cloc, cl.x.data(), S.din, cl.d.data(), S.dout, 1.0f,
           G.data(), S.dout);
      // ∂V = M⁻¹·(A·G)
      std::vector<float> AG((size_t)S.n * S.dout);
      gemm(false, false, S.n, S.dout, S.din, 1.0f, S.A.data(), S.din, G.data(), S.dout, 0.0f, AG.data(), S.dout);
      std::vector<double> dV(AG.begin(), AG.end());
      cholesky_solve(S.L.data(), S.n, dV.data(), S.dout);
      const float alpha = editor->edit_lrs[k];
      double dalpha = 0;
      for (int i = 0; i < S.n; i++, row++) {
        const double* dv = dV.data() + (size_t)i * S.dout;
        const float* dt = pass.d[k].data() + (size_t)i * S.dout;
        const float* kx = S.K.data() + (size_t)i * S.din;
        double dc = 0;
        for (int o = 0; o < S.dout; o++) dc += dv[o] * dt[o];
        dalpha += S.kdu[i] * dc;
        float* d = dz.data() + row * g.D();
        for (int q = 0; q < g.d_in; q++) d[q] = (float)(alpha * dc * kx[q]) * grad_scale;
        for (int o = 0; o < g.d_out; o++) d[g.d_in + o] = (float)(S.c[i] * dv[o]) * grad_scale;
      }
      grads->edit_lrs[k] += (float)(dalpha * grad_scale);
    }
    if (!pass.mode[t].empty())
      transform_backward(g, dz.data(), pass.mode[t].data(), (int)pass.mode[t].size(), pass.acts[t], &grads->transforms[t]);
  }
  return Status::OK();
}

}  // namespace mend
