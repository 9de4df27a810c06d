// optimizer.h — the one optimizer step of native/: global-norm gradient clipping, then one AdamW
// step per parameter (kernels/cpu/adam.cc). Used by the editor trainer (trainer.cc) and, through
// the addon's optimizerStep, by the TypeScript Pretrainer. The arithmetic is fixed here, for both:
//   norm  = √(Σ over params in order, elements in order, of (double)g·g)   (double accumulation)
//   scale = max_norm / (norm + 1e-6) when norm > max_norm, else 1            (in double)
//   g     = (float)(g · scale)                                               (only when scale ≠ 1)
#pragma once
#include <cstdint>
#include <vector>

#include "core/common.h"

namespace mend {

struct OptimParam {
  float* param = nullptr;  // (n) updated in place
  float* grad = nullptr;   // (n) scaled in place when clipped
  float* m = nullptr;      // (n) first moment, updated in place
  float* v = nullptr;      // (n) second moment, updated in place
  int64_t n = 0;
  float lr = 0;
  float weight_decay = 0;  // PyTorch AdamW; 0 = Adam
};

struct AdamWOptions {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

// The global L2 norm of every grad (only grad and n are read).
double grad_global_norm(const std::vector<OptimParam>& ps);
// Clips every grad to max_norm given their global norm (max_norm = +inf: never), then AdamW step
// t (>= 1) on each param.
void clip_and_adamw(const std::vector<OptimParam>& ps, double norm, double max_norm, const AdamWOptions& opt, int t);
// Both: *norm = the global norm; when it is not finite, code::kNonFinite and nothing is written.
Status optimizer_step(const std::vector<OptimParam>& ps, double max_norm, const AdamWOptions& opt, int t,
                      double* norm);

}  // namespace mend
