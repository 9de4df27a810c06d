// edit.h — one MEND edit: pre-edit pass with capture on the current (possibly edited) model, the
// editor pass (editor.h), cos(true gradient, pseudo-gradient) per inner param, and the new overlay
// with ΔW_k = α_k · Ũᵀ D̃ added. DESIGN §5, §6.
#pragma once
#include <memory>
#include <vector>

#include "mend/editor.h"

namespace mend {

struct EditInfo {
  float loss = 0;                      // pre-edit loss
  std::vector<int> kept;               // rows kept per inner param
  std::vector<double> cos;             // cos(true gradient, pseudo-gradient ŨᵀD̃) per inner param
  std::vector<std::vector<float>> u, d;  // Ũ (N, d_in) and D̃ (N, d_out) per inner param (before α)
  double ms_pre = 0, ms_editor = 0, ms_overlay = 0;
};

// One edit on (base + prev). On success *next is the overlay with the edit added and *edit its factors.
Status mend_edit(const GPT2Model& model, const std::shared_ptr<const Overlay>& prev, const MendEditor& editor,
                 const Batch& batch, std::shared_ptr<const Overlay>* next, Edit* edit, EditInfo* info);

}  // namespace mend
