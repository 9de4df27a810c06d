// trainer.h — an editor being trained (EasyEdit EditTrainer, DESIGN §5): the editor (a mutable copy
// owned here), its accumulated gradients, and two Adam optimizers (editor parameters: lr; α: lr_lr)
// with their state. step() runs one training step (train_step.h) and, every accumulate_bs steps,
// clips the global gradient norm at grad_clip and steps Adam (optimizer.h). Not thread-safe: one
// call at a time (the addon refuses a call while a step is running).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "mend/lifelong.h"
#include "mend/train_step.h"

namespace mend {

struct TrainerOptions {
  float lr = 1e-6f, lr_lr = 1e-4f, cedit = 0.1f, cloc = 1.0f;
  float grad_clip = 100.0f;  // clips at this norm; 0 clips every gradient to zero (as torch's clip_grad_norm_)
  int accumulate_bs = 10;
  // Lifelong mode (editor kind "malmen"): the solve's prior P0 per inner param; null = classic MEND.
  std::shared_ptr<const RidgeState> malmen_prior;
};

struct AdamState {
  std::vector<std::vector<float>> m, v;  // per parameter array, in MendGrads::pairs order; empty before the first step
  int t = 0;
};

struct TrainerStepResult {
  TrainStepResult losses;
  bool stepped = false;  // the optimizers stepped (or were skipped on a non-finite norm)
  double grad_norm = 0;  // when stepped
};

class EditorTrainer {
 public:
  // Checks the editor against the model (and the options).
  static Status create(std::shared_ptr<GPT2Model> model, MendEditor editor, const TrainerOptions& opt,
                       std::shared_ptr<EditorTrainer>* out);

  // One step on an edit batch (editOuter optional) and a locality batch. train = false: losses only
  // (no statistics update, no gradients). On failure the statistics are as before the call.
  Status step(const TrainBatches& b, bool update_stats, bool train, TrainerStepResult* out);

  // Lifelong mode: the state the training edits are solved on top of (the bare prior, or the state
  // of a background log of edits); it must have the editor's inner params.
  Status set_malmen_prior(std::shared_ptr<const RidgeState> prior);

  const MendEditor& editor() const { return editor_; }
  // The accumulated gradients, laid out like the editor.
  MendEditor grads() const;
  // Restores accumulated gradients (a checkpoint taken mid-accumulation); g is laid out like the editor.
  Status set_grads(MendEditor g);
  const AdamState& adam() const { return adam_; }
  int64_t steps() const { return steps_; }
  Status set_optimizer_state(AdamState a, int64_t steps);

 private:
  EditorTrainer() = default;
  void apply_gradients(TrainerStepResult* out);
  std::shared_ptr<GPT2Model> model_;
  MendEditor editor_;
  MendGrads grads_;
  AdamState adam_;
  TrainerOptions opt_;
  int64_t steps_ = 0;  // training steps taken (gradient contributions)
};

}  // namespace mend
