// optimizer.cc — see optimizer.h.
#include "mend/optimizer.h"

#include <cmath>

#include "kernels/kernels.h"

namespace mend {

double grad_global_norm(const std::vector<OptimParam>& ps) {
  double sq = 0;
  for (const OptimParam& p : ps)
    for (int64_t i = 0; i < p.n; i++) sq += (double)p.grad[i] * p.grad[i];
  return std::sqrt(sq);
}

void clip_and_adamw(const std::vector<OptimParam>& ps, double norm, double max_norm, const AdamWOptions& opt, int t) {
  const double scale = norm > max_norm ? max_norm / (norm + 1e-6) : 1.0;
  for (const OptimParam& p : ps) {
    if (scale != 1.0)
      for (int64_t i = 0; i < p.n; i++) p.grad[i] = (float)(p.grad[i] * scale);
    adamw_update(p.param, p.grad, p.m, p.v, p.n, p.lr, opt.beta1, opt.beta2, opt.eps, p.weight_decay, t);
  }
}

Status optimizer_step(const std::vector<OptimParam>& ps, double max_norm, const AdamWOptions& opt, int t,
                      double* norm) {
  *norm = grad_global_norm(ps);
  if (!std::isfinite(*norm)) return Status::Error(code::kNonFinite, "the gradient is not finite");
  clip_and_adamw(ps, *norm, max_norm, opt, t);
  return Status::OK();
}

}  // namespace mend
