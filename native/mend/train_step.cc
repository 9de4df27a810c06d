// train_step.cc — see train_step.h.
#include "mend/train_step.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
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

}  // namespace mend
