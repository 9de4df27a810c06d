// editor.h — the MEND editor network (EasyEdit's GradientTransform per weight shape, with an IDMLP
// of low-rank LRLinear layers): its parameters, its forward and backward (editor.cc), and the
// editor pass shared by an edit (edit.cc) and a training step (train_step.cc): rows kept from the
// pre-edit capture, normalised into z0, transformed, split into Ũ and D̃. DESIGN §5.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/gpt2.h"
#include "model/overlay.h"

namespace mend {

// LRLinear: pre = ((z · Vᵀ) · Uᵀ + bias) ⊙ scale[mode] + shift[mode]; z' = z + act(pre), where act is
// the clamp max(·, 0) on EVERY layer in EasyEdit and the original MEND (LRLinear.forward clamps
// unconditionally; the relu = idx < n_hidden argument IDMLP passes is never used). `relu = false`
// (act = identity) exists only for editor files written by node-mend before 0.2, whose last layer was
// linear; such files say so in their metadata (lib/mend/editor-file.ts).
struct MendLayer {
  std::vector<float> u;      // (D, r)   init 0
  std::vector<float> v;      // (r, D)   init N(0, 1)
  std::vector<float> bias;   // (D)
  std::vector<float> scale;  // (n_modes, D) init 1
  std::vector<float> shift;  // (n_modes, D) init 0
  bool relu = true;  // clamp (EasyEdit); false = identity (legacy node-mend files only)
  // Packed copies of u and v (kernels.h PackedMatrix: u as (D, r), v as (r, D)), or null. The GEMMs
  // of the editor then stream them in place (dh = dp·U, dz += dh·V) or by 16x16 block transposes
  // (z·Vᵀ, h·Uᵀ) instead of copying every weight per pass. A trainer keeps them (pack_editor at
  // creation and after every optimizer step: its weights change nowhere else); anything that
  // changes u or v must drop them (reset) or pack again.
  std::shared_ptr<const std::vector<float>> pu, pv;
  // Uᵀ (r, D) and Vᵀ (D, r) in the packed layout, or null: an edit handle's (its editor never changes),
  // so that z·Vᵀ and h·Uᵀ stream them (gemm_nt_prepacked, bit-identical to gemm on u and v) instead
  // of transposing u and v into panels on every edit. A second copy of u and v (236 MB for the
  // rank-1920 GPT-2 editor); pack_editor drops them.
  std::shared_ptr<const std::vector<float>> put, pvt;
};

// The most hidden layers an editor MLP may have (lib/mend/network.ts MAX_HIDDEN; EasyEdit uses 1).
constexpr int kMaxHidden = 32;

// One editor per weight shape (d_in, d_out), shared by the inner params of that shape.
struct GradientTransform {
  int d_in = 0, d_out = 0, rank = 0, n_modes = 0;
  std::vector<MendLayer> layers;
  // Normalisation statistics (buffers): means, stds and Welford sums of u (d_in) and v (d_out); k rows.
  std::vector<float> u_mean, v_mean, u_std, v_std, u_s, v_s;
  double k = 0;
  int D() const { return d_in + d_out; }
  // Sizes always; with `values`, also that every tensor is finite and bounded (a scan of every weight).
  Status validate(const std::string& what, bool values = true) const;
};

struct MendEditor {
  std::vector<int> inner;          // model parameter indices, in order
  std::vector<int> transform_of;   // per inner param: index into transforms
  std::vector<int> mode_of;        // per inner param: its index among inner params of the same shape
  std::vector<GradientTransform> transforms;
  std::vector<float> edit_lrs;     // α, one per inner param
};

// Checks that the editor fits the model: inner params are Conv1D weights whose shapes match
// transforms, modes are consistent, every tensor is of the right size and (with `values`) finite
// and bounded. The value scan reads every editor weight (236 MB for the rank-1920 GPT-2 editor, about
// as long as a forward pass), so it runs where an editor comes in (a handle is made, a trainer is
// created or given weights) and not per edit: a handle's editor is immutable, and a trainer's changes
// only by Adam steps taken with a finite gradient norm.
Status check_editor(const GPT2Model& model, const MendEditor& e, bool values = true);

// (Re)makes the packed copies of every layer's u and v (MendLayer::pu, pv) and drops put, pvt.
void pack_editor(MendEditor* e);
// Makes the packed transposes of every layer's u and v (MendLayer::put, pvt), for an edit handle.
void pack_editor_transposed(MendEditor* e);

// Gradients with the layout of a MendEditor's parameters.
struct MendGrads {
  struct Layer { std::vector<float> u, v, bias, scale, shift; };
  std::vector<std::vector<Layer>> transforms;  // [transform][layer]
  std::vector<float> edit_lrs;
  static MendGrads zeros_like(const MendEditor& e);
  void clear();
  // Every gradient array in a fixed order, paired with the editor's parameter arrays.
  std::vector<std::pair<std::vector<float>*, std::vector<float>*>> pairs(MendEditor* e);
};

// ---- the network ------------------------------------------------------------------------------

// Saved activations of one editor layer (for the backward).
struct LayerActs {
  std::vector<float> z;  // (Ns, D) layer input
  std::vector<float> h;  // (Ns, r) z·Vᵀ
  std::vector<float> p;  // (Ns, D) h·Uᵀ + bias (before scale/shift)
};
// z (Ns, D) = the layers of g applied to z in place; mode (Ns) is each row's mode. With acts, saves
// each layer's activations.
void transform_forward(const GradientTransform& g, float* z, const int* mode, int Ns, std::vector<LayerActs>* acts);
// dz (Ns, D) holds ∂L/∂z_L and becomes ∂L/∂z_0 (=); the parameter gradients are added to gl (+=).
void transform_backward(const GradientTransform& g, float* dz, const int* mode, int Ns,
                        const std::vector<LayerActs>& acts, std::vector<MendGrads::Layer>* gl);

// ---- the editor pass --------------------------------------------------------------------------

// The editor applied to the rows captured by a pre-edit pass (X_k, D_k of every inner param k).
struct EditorPass {
  std::vector<std::vector<int>> keep;        // [inner] rows where X has a nonzero and D has a nonzero
  std::vector<std::vector<size_t>> members;  // [transform] its inner params, in order
  std::vector<std::vector<float>> z;         // [transform] (Ns, D): z0 rows of its members in order
  std::vector<std::vector<int>> mode;        // [transform] (Ns)
  std::vector<std::vector<LayerActs>> acts;  // [transform] when run with saved activations
  std::vector<std::vector<float>> u, d;      // [inner] Ũ (N_k, d_in) and D̃ (N_k, d_out), before α

  // Selects the kept rows of every inner param from the captures of `pre` (rows = B*T); pre must
  // outlive the pass.
  EditorPass(const MendEditor& e, const GradResult& pre, int rows);
  // Appends inner param k's kept rows, normalised with its transform's current statistics, to z0.
  void append_z0(const MendEditor& e, size_t k);
  // Runs every transform on its z (in place; saving activations when save_acts) and splits the
  // output into u and d per inner param. Fails (code::kNonFinite) when the editor produced NaN/Inf.
  Status run(const GPT2Model& model, const MendEditor& e, bool save_acts);
  // The factors of ΔW_k = α_k · Ũᵀ D̃ for every inner param: a = α·Ũ, b = D̃.
  Edit factors(const MendEditor& e) const;
  // The captured rows of inner param k.
  const Capture& capture(const MendEditor& e, size_t k) const { return pre_.captures.at(e.inner[k]); }

 private:
  const GradResult& pre_;
};

}  // namespace mend
