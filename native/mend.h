// mend.h — the MEND editor network (EasyEdit's GradientTransform per weight shape, with an IDMLP of
// low-rank LRLinear layers) and one edit: pre-edit pass with capture, row filtering, normalisation,
// the editor forward, the factors of ΔW_k = α_k · Ũᵀ D̃ and the new overlay. DESIGN §5.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "gpt2.h"
#include "overlay.h"

namespace mend {

// LRLinear: pre = ((z · Vᵀ) · Uᵀ + bias) ⊙ scale[mode] + shift[mode]; z' = z + act(pre), where act is
// the clamp max(·, 0) on EVERY layer in EasyEdit and the original MEND (LRLinear.forward clamps
// unconditionally; the relu = idx < n_hidden argument IDMLP passes is never used). `relu = false`
// (act = identity) exists only for editor files written by node-mend before 0.2, whose last layer was
// linear; such files say so in their metadata (lib/editor-file.ts).
struct MendLayer {
  std::vector<float> u;      // (D, r)   init 0
  std::vector<float> v;      // (r, D)   init N(0, 1)
  std::vector<float> bias;   // (D)
  std::vector<float> scale;  // (n_modes, D) init 1
  std::vector<float> shift;  // (n_modes, D) init 0
  bool relu = true;  // clamp (EasyEdit); false = identity (legacy node-mend files only)
};

// One editor per weight shape (d_in, d_out), shared by the inner params of that shape.
struct GradientTransform {
  int d_in = 0, d_out = 0, rank = 0, n_modes = 0;
  std::vector<MendLayer> layers;
  // Normalisation statistics (buffers): means, stds and Welford sums of u (d_in) and v (d_out); k rows.
  std::vector<float> u_mean, v_mean, u_std, v_std, u_s, v_s;
  double k = 0;
  int D() const { return d_in + d_out; }
  Status validate(const std::string& what) const;
};

struct MendEditor {
  std::vector<int> inner;          // model parameter indices, in order
  std::vector<int> transform_of;   // per inner param: index into transforms
  std::vector<int> mode_of;        // per inner param: its index among inner params of the same shape
  std::vector<GradientTransform> transforms;
  std::vector<float> edit_lrs;     // α, one per inner param
};

struct EditInfo {
  float loss = 0;                      // pre-edit loss
  std::vector<int> kept;               // rows kept per inner param
  std::vector<double> cos;             // cos(true gradient, pseudo-gradient ŨᵀD̃) per inner param
  std::vector<std::vector<float>> u, d;  // Ũ (N, d_in) and D̃ (N, d_out) per inner param (before α)
  double ms_pre = 0, ms_editor = 0, ms_overlay = 0;
};

// Saved activations of one editor layer (for the training backward).
struct LayerActs {
  std::vector<float> z;  // (Ns, D) layer input
  std::vector<float> h;  // (Ns, r) z·Vᵀ
  std::vector<float> p;  // (Ns, D) h·Uᵀ + bias (before scale/shift)
};
// z (Ns, D) = the layers of g applied to z in place; mode (Ns) is each row's mode. With acts, saves
// each layer's activations.
void transform_forward(const GradientTransform& g, float* z, const int* mode, int Ns, std::vector<LayerActs>* acts);

// Checks that the editor fits the model: inner params are Conv1D weights whose shapes match
// transforms, modes are consistent, every tensor is finite and of the right size.
Status check_editor(const GPT2Model& model, const MendEditor& e);

// One edit on (base + prev). On success *next is the overlay with the edit added and *edit its factors.
Status mend_edit(const GPT2Model& model, const std::shared_ptr<const Overlay>& prev, const MendEditor& editor,
                 const Batch& batch, std::shared_ptr<const Overlay>* next, Edit* edit, EditInfo* info);

}  // namespace mend
