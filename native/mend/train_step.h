// train_step.h — one MEND training step (EasyEdit EditTrainer semantics, DESIGN §5): pre-edit pass,
// editor forward in training mode (Welford statistics), post-edit passes on the edit (or editOuter)
// batch and the locality batch, and the outer gradients of
//   L = c_edit · L_edit(θ') + c_loc · KL_loc
// with respect to every editor parameter and α, computed with the low-rank formulas (no dense
// d_in×d_out matrix): ∂L/∂Ũ = α D̃ Gᵀ, ∂L/∂D̃ = α Ũ G, ∂L/∂α = ⟨G, ŨᵀD̃⟩ with G = X'ᵀD'.
#pragma once
#include <vector>

#include "mend/editor.h"

namespace mend {

struct TrainBatches {
  Batch edit;                 // the edit request (labels on the target)
  const Batch* edit_outer;    // L_edit measured here when set (a rephrasing with the same target)
  Batch loc;                  // locality batch (KL over attentionMask = 1 tokens)
};

struct TrainStepResult {
  float total = 0, edit = 0, loc = 0, edit_acc = 0, pre_loss = 0;
};

// One step. update_stats: training-mode statistics (each kept row updates μ, σ before use).
// With grads non-null, ∂L/∂θ · grad_scale is added to *grads (grad_scale = 1 / accumulate_bs).
Status mend_train_step(const GPT2Model& model, MendEditor* editor, const TrainBatches& batches, float cedit,
                       float cloc, bool update_stats, MendGrads* grads, float grad_scale, TrainStepResult* out);

struct RidgeState;

// One lifelong-mode (MALMEN) training step: the edit batch's rows (every row one edit) are edited
// jointly on top of `prior` — a RidgeState (lifelong.h): the bare prior P0 = S0⁻¹ with ΔW0 = 0, or
// the state of a background log of earlier edits (P0, ΔW0), so that the editor learns to edit a
// model that already holds many edits: ΔW = ΔW0 + Aᵀ·M⁻¹·(V − K·ΔW0) with A = K·P0, M = I + A·Kᵀ,
// V the value shifts v_i = α (k_i·ũ_i) d̃_i. The locality KL is taken against the model before these
// edits (the base plus the background log), as RLEdit does. The post-edit losses are as in
// mend_train_step; the outer gradients flow through the solve: with G = ∂L/∂ΔW = Σ X'ᵀD',
// ∂L/∂V = M⁻¹·A·G, then ∂L/∂d̃_i = c_i ∂v_i, ∂L/∂ũ_i = α (∂v_i·d̃_i) k_i, ∂L/∂α = Σ (k_i·ũ_i)(∂v_i·d̃_i).
Status malmen_train_step(const GPT2Model& model, MendEditor* editor, const RidgeState& prior, const TrainBatches& batches,
                         float cedit, float cloc, bool update_stats, MendGrads* grads, float grad_scale, TrainStepResult* out);

}  // namespace mend
