// overlay.h — the low-rank overlay of an edited model (DESIGN §6). For each edited Conv1D weight W
// it holds the factors of its edits, A = α·Ũ (R, d_in) and B = D̃ (R, d_out), and applies
// y = x·W + b + (x·Aᵀ)·B: N·(d_in + d_out) per token instead of a dense copy. When the summed rank R
// passes the break-even point d_in·d_out / (d_in + d_out), the factors fold into a merged copy
// W + AᵀB (still separate from the base, which is never written). An Overlay is immutable; a
// sequential edit makes a new one (extend) that shares nothing mutable with the old.
#pragma once
#include <map>
#include <memory>
#include <vector>

#include "model/gpt2.h"

namespace mend {

// One edit's factors for one weight.
struct EditFactors {
  int param = -1;
  int rows = 0;
  std::shared_ptr<const std::vector<float>> a;  // (rows, d_in) = α·Ũ
  std::shared_ptr<const std::vector<float>> b;  // (rows, d_out) = D̃
};
using Edit = std::vector<EditFactors>;

class Overlay : public WeightDeltas {
 public:
  // The overlay of `edits`, oldest first, on `base` (folding wherever the summed rank passes
  // break-even). Checks every factor's shape against the base.
  static Status build(const GPT2Model& base, const std::vector<const Edit*>& edits,
                      std::shared_ptr<const Overlay>* out);
  // prev (may be null) plus one more edit; reuses prev's merged weights.
  static Status extend(const GPT2Model& base, const std::shared_ptr<const Overlay>& prev, const Edit& edit,
                       std::shared_ptr<const Overlay>* out);
  // An overlay of whole edited weights (param -> W + ΔW, each of the param's size): the lifelong
  // mode's dense solution (mend/lifelong.h). Counts as one edit.
  static Status from_merged(const GPT2Model& base, std::map<int, std::vector<float>> merged,
                            std::shared_ptr<const Overlay>* out);
  // Every edited weight as W + Δ (for materialize()).
  std::map<int, std::vector<float>> merged_weights(const GPT2Model& base) const;

  const float* weight(int param, const float* base) const override;
  bool has_lowrank(int param) const override;
  void forward(int param, const float* inp, int M, float* out) const override;
  void backward_input(int param, const float* dout, int M, float* dinp) const override;

  size_t bytes() const;  // memory the overlay holds (factors and merged copies)
  int n_edits() const { return n_edits_; }
  // Summed rank still held as factors, and whether the weight is folded (tests, benchmarks).
  int lowrank_rows(int param) const;
  bool folded(int param) const;

 private:
  struct Entry {
    int d_in = 0, d_out = 0, R = 0;
    double bound = 0;  // bound on |Δ| per element of every edit so far (folded or not)
    std::shared_ptr<const std::vector<float>> merged;  // W + folded Δ (d_in, d_out), or null
    std::vector<float> a;                              // (R, d_in)
    std::vector<float> b;                              // (R, d_out)
  };
  static Status add_edit(const GPT2Model& base, const Edit& edit, std::map<int, Entry>* entries);
  static void fold(const GPT2Model& base, int param, Entry* e);
  std::map<int, Entry> entries_;
  int n_edits_ = 0;
};

}  // namespace mend
