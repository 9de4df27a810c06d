// lifelong.cc — see lifelong.h.
#include "mend/lifelong.h"

#include <cmath>
#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "core/threadpool.h"
#include "kernels/kernels.h"

namespace mend {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// x[0, w) -= l·y[0, w): a multiply, then a subtract, each rounded (never fused), so the AVX path
// gives the scalar path's bits; chosen at run time like the GEMM kernels (the file is built for any
// x86-64).
void sub_scaled_scalar(double* x, const double* y, double l, int w) {
  for (int c = 0; c < w; c++) x[c] -= l * y[c];
}
// sub_scaled or add_scaled, the one chosen for this CPU.
using ScaledRowOp = void (*)(double*, const double*, double, int);
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx"))) void sub_scaled_avx(double* x, const double* y, double l, int w) {
  const __m256d lv = _mm256_set1_pd(l);
  int c = 0;
  for (; c + 4 <= w; c += 4) _mm256_storeu_pd(x + c, _mm256_sub_pd(_mm256_loadu_pd(x + c), _mm256_mul_pd(lv, _mm256_loadu_pd(y + c))));
  for (; c < w; c++) x[c] -= l * y[c];
}
ScaledRowOp pick_sub_scaled() { return __builtin_cpu_supports("avx") ? sub_scaled_avx : sub_scaled_scalar; }
#else
ScaledRowOp pick_sub_scaled() { return sub_scaled_scalar; }
#endif

// x[0, w) += l·y[0, w), the same way (a multiply, then an add; the AVX path gives the scalar bits):
// the row updates of a Woodbury step.
void add_scaled_scalar(double* x, const double* y, double l, int w) {
  for (int c = 0; c < w; c++) x[c] += l * y[c];
}
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx"))) void add_scaled_avx(double* x, const double* y, double l, int w) {
  const __m256d lv = _mm256_set1_pd(l);
  int c = 0;
  for (; c + 4 <= w; c += 4) _mm256_storeu_pd(x + c, _mm256_add_pd(_mm256_loadu_pd(x + c), _mm256_mul_pd(lv, _mm256_loadu_pd(y + c))));
  for (; c < w; c++) x[c] += l * y[c];
}
ScaledRowOp pick_add_scaled() { return __builtin_cpu_supports("avx") ? add_scaled_avx : add_scaled_scalar; }
#else
ScaledRowOp pick_add_scaled() { return add_scaled_scalar; }
#endif

}  // namespace

// In-place Cholesky A = L·Lᵀ of an SPD (n, n) matrix (lower triangle written; upper left as is).
// Returns false when A is not positive definite.
bool cholesky(double* A, int n) {
  for (int j = 0; j < n; j++) {
    double* aj = A + (size_t)j * n;
    double d = aj[j];
    for (int k = 0; k < j; k++) d -= aj[k] * aj[k];
    if (!(d > 0) || !std::isfinite(d)) return false;
    d = std::sqrt(d);
    aj[j] = d;
    const double inv = 1.0 / d;
    for (int i = j + 1; i < n; i++) {
      double* ai = A + (size_t)i * n;
      double s = ai[j];
      for (int k = 0; k < j; k++) s -= ai[k] * aj[k];
      ai[j] = s * inv;
    }
  }
  return true;
}

// X (n, m) := (L·Lᵀ)⁻¹ X for the Cholesky factor L (n, n). Row-oriented substitutions (each step an
// axpy over a contiguous block of X's row), with X's columns split into blocks across threads.
// x_is_identity (X = I on entry, m = n): Y = L⁻¹ is lower triangular, so the forward pass of the
// columns [c0, c1) starts at row c0 and reads rows from c0 on; the rows and terms it skips are
// exact zeros, so the result is bit for bit the general path's, in about 3/4 of the work.
void cholesky_solve(const double* L, int n, double* X, int m, bool x_is_identity) {
  const int64_t blocks = (m + 63) / 64;
  static const ScaledRowOp sub_scaled = pick_sub_scaled();
  parallel_for(blocks, [&](int64_t b0, int64_t b1) {
    // One 64-column panel at a time (n·64 doubles stay in cache); every element sees the same
    // operations in the same order as a whole-row pass, so the bits do not depend on the split.
    for (int64_t blk = b0; blk < b1; blk++) {
      const int c0 = (int)(blk * 64), c1 = (int)std::min<int64_t>(m, (blk + 1) * 64), w = c1 - c0;
      const int first = x_is_identity ? std::min(c0, n) : 0;
      for (int i = first; i < n; i++) {  // L·Y = X
        double* xi = X + (size_t)i * m + c0;
        const double* li = L + (size_t)i * n;
        for (int k = first; k < i; k++) {
          const double l = li[k];
          if (l == 0) continue;
          sub_scaled(xi, X + (size_t)k * m + c0, l, w);
        }
        const double inv = 1.0 / li[i];
        for (int c = 0; c < w; c++) xi[c] *= inv;
      }
      for (int i = n - 1; i >= 0; i--) {  // Lᵀ·X = Y
        double* xi = X + (size_t)i * m + c0;
        for (int k = i + 1; k < n; k++) {
          const double l = L[(size_t)k * n + i];
          if (l == 0) continue;
          sub_scaled(xi, X + (size_t)k * m + c0, l, w);
        }
        const double inv = 1.0 / L[(size_t)i * n + i];
        for (int c = 0; c < w; c++) xi[c] *= inv;
      }
    }
  }, 1);
}

namespace {

std::string short_number(double v) {
  std::ostringstream o;
  o << v;  // default stream precision: 3000, -1.6
  return o.str();
}

bool all_finite(const float* x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// A block of rows of inner weight `slot` of s: a (rows, d_in) and, when given, b (rows, d_out). Its
// slot names a weight, it has its rows, and they are finite; otherwise the error with that message.
Status check_rows(const RidgeState& s, int slot, int rows, const float* a, const float* b, bool with_b, const char* no_slot,
                  const char* no_rows, const char* not_finite) {
  if (slot < 0 || slot >= (int)s.params.size()) return Status::Error(code::kInvalidArg, no_slot);
  if (rows < 0 || (rows > 0 && (!a || (with_b && !b)))) return Status::Error(code::kInvalidArg, no_rows);
  const RidgeParam& p = s.params[slot];
  if (!all_finite(a, (size_t)rows * p.d_in) || (with_b && !all_finite(b, (size_t)rows * p.d_out)))
    return Status::Error(code::kNonFinite, not_finite);
  return Status::OK();
}

// The most rows one Woodbury step takes (its (n, n) system is factored in O(n³)).
constexpr int kMaxWoodburyRows = 256;

// One Woodbury step (see lifelong.h) from src into dst (dst may be src; otherwise dst's P and ΔW
// are allocated here and written row by row, so the new state costs no separate copy pass).
Status apply_update(const RidgeParam& src, RidgeParam* dst, const RidgeUpdate& u) {
  const RidgeParam* p = &src;
  const int n = u.rows, din = p->d_in, dout = p->d_out;
  const bool fresh = dst != &src;
  if (fresh) {
    dst->param = src.param; dst->d_in = din; dst->d_out = dout;
    dst->P.resize(src.P.size());
    dst->dW.resize(src.dW.size());
  }
  if (n == 0) {
    if (fresh) { dst->P = src.P; dst->dW = src.dW; }
    return Status::OK();
  }
  const double s = u.sign;
  static const ScaledRowOp add_scaled = pick_add_scaled(), sub_scaled = pick_sub_scaled();
  // G = K·P (n, din): row i = Σ_q K[i][q] P[q][:] (P symmetric).
  std::vector<double> G((size_t)n * din, 0.0);
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      double* g = G.data() + (size_t)i * din;
      const float* k = u.k + (size_t)i * din;
      for (int q = 0; q < din; q++) {
        const double kq = k[q];
        if (kq == 0) continue;
        add_scaled(g, p->P.data() + (size_t)q * din, kq, din);
      }
    }
  }, 1);
  // M = I + s·G·Kᵀ (n, n), Cholesky.
  std::vector<double> M((size_t)n * n);
  for (int i = 0; i < n; i++)
    for (int j = 0; j <= i; j++) {
      const double* g = G.data() + (size_t)i * din;
      const float* k = u.k + (size_t)j * din;
      double acc = 0;
      for (int q = 0; q < din; q++) acc += g[q] * k[q];
      const double v = (i == j ? 1.0 : 0.0) + s * acc;
      M[(size_t)i * n + j] = v;
      M[(size_t)j * n + i] = v;
    }
  if (!cholesky(M.data(), n))
    return Status::Error(code::kInvalidArg, s < 0 ? "removing these key rows does not leave a positive definite system (they were never added)"
                                                  : "the ridge system of the edit log is not positive definite");
  // Z = M⁻¹·G (n, din).
  std::vector<double> Z = G;
  cholesky_solve(M.data(), n, Z.data(), din);
  // R = V − K·ΔW (n, dout), from src's ΔW before dst is written.
  std::vector<double> R((size_t)n * dout);
  parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      double* r = R.data() + (size_t)i * dout;
      const float* v = u.v + (size_t)i * dout;
      for (int o = 0; o < dout; o++) r[o] = v[o];
      const float* k = u.k + (size_t)i * din;
      for (int q = 0; q < din; q++) {
        const double kq = k[q];
        if (kq == 0) continue;
        sub_scaled(r, p->dW.data() + (size_t)q * dout, kq, dout);
      }
    }
  }, 1);
  // P' = P − s·Gᵀ·Z, row by row of P.
  parallel_for(din, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      double* pr = dst->P.data() + (size_t)r * din;
      if (fresh) std::memcpy(pr, src.P.data() + (size_t)r * din, din * sizeof(double));
      for (int i = 0; i < n; i++) {
        const double c = -s * G[(size_t)i * din + r];
        if (c == 0) continue;
        add_scaled(pr, Z.data() + (size_t)i * din, c, din);
      }
    }
  }, 8);
  // ΔW' = ΔW + s·Zᵀ·R.
  parallel_for(din, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; q++) {
      double* w = dst->dW.data() + (size_t)q * dout;
      if (fresh) std::memcpy(w, src.dW.data() + (size_t)q * dout, dout * sizeof(double));
      for (int i = 0; i < n; i++) {
        const double c = s * Z[(size_t)i * din + q];
        if (c == 0) continue;
        add_scaled(w, R.data() + (size_t)i * dout, c, dout);
      }
    }
  }, 8);
  return Status::OK();
}

}  // namespace

Status ridge_prior(const GPT2Model& model, const std::vector<RidgePriorSpec>& specs, std::shared_ptr<const RidgeState>* out) {
  auto st = std::make_shared<RidgeState>();
  for (const RidgePriorSpec& sp : specs) {
    if (sp.param < 0 || sp.param >= (int)model.params().size() || model.params()[sp.param].shape.size() != 2)
      return Status::Error(code::kInvalidArg, "a lifelong prior names a parameter that is not a weight matrix");
    const auto& shape = model.params()[sp.param].shape;
    const std::string& name = model.params()[sp.param].name;
    const int din = (int)shape[0], dout = (int)shape[1];
    if (!std::isfinite(sp.log_ridge) || sp.log_ridge < -30 || sp.log_ridge > 30)
      return Status::Error(code::kInvalidArg, "the log ridge of \"" + name + "\" must be a finite number in [-30, 30]");
    if (!std::isfinite(sp.mu) || sp.mu < 0) return Status::Error(code::kInvalidArg, "mu of \"" + name + "\" must be a finite number >= 0");
    if (sp.mu > 0 && sp.c0.size() != (size_t)din * din)
      return Status::Error(code::kShape, "the key covariance of \"" + name + "\" must be (" + std::to_string(din) + ", " +
                                             std::to_string(din) + ")");
    if (!all_finite(sp.c0.data(), sp.c0.size()))
      return Status::Error(code::kNonFinite, "the key covariance of \"" + name + "\" holds NaN or Inf");
    RidgeParam p;
    p.param = sp.param;
    p.d_in = din;
    p.d_out = dout;
    p.dW.assign((size_t)din * dout, 0.0);
    const double ridge = std::exp(sp.log_ridge);
    if (sp.mu == 0) {
      p.P.assign((size_t)din * din, 0.0);
      for (int i = 0; i < din; i++) p.P[(size_t)i * din + i] = 1.0 / ridge;
    } else {
      std::vector<double> S0((size_t)din * din);
      for (size_t i = 0; i < S0.size(); i++) S0[i] = sp.mu * (double)sp.c0[i];
      for (int i = 0; i < din; i++) S0[(size_t)i * din + i] += ridge;
      if (!cholesky(S0.data(), din))
        return Status::Error(code::kInvalidArg, "mu·C0 + e^λ·I of \"" + name + "\" is not positive definite in float64 (mu " +
                                 short_number(sp.mu) + ", log ridge " + short_number(sp.log_ridge) +
                                 "): C0 must be a covariance, and a rank-deficient one needs a larger ridge relative to mu");
      p.P.assign((size_t)din * din, 0.0);
      for (int i = 0; i < din; i++) p.P[(size_t)i * din + i] = 1.0;
      cholesky_solve(S0.data(), din, p.P.data(), din, /*x_is_identity=*/true);
      // symmetrise (the two triangles agree to rounding; keep P exactly symmetric)
      for (int i = 0; i < din; i++)
        for (int j = 0; j < i; j++) {
          const double v = 0.5 * (p.P[(size_t)i * din + j] + p.P[(size_t)j * din + i]);
          p.P[(size_t)i * din + j] = p.P[(size_t)j * din + i] = v;
        }
    }
    st->params.push_back(std::move(p));
  }
  *out = std::move(st);
  return Status::OK();
}

Status ridge_update(const RidgeState& prev, const std::vector<RidgeUpdate>& ups, std::shared_ptr<const RidgeState>* out) {
  for (const RidgeUpdate& u : ups) {
    if (u.sign != 1 && u.sign != -1) return Status::Error(code::kInvalidArg, "a lifelong update's sign must be +1 or -1");
    MEND_RETURN_IF_ERROR(check_rows(prev, u.slot, u.rows, u.k, u.v, true, "a lifelong update names no inner weight",
                                    "a lifelong update has no rows", "the keys or value shifts of an edit hold NaN or Inf"));
  }
  auto st = std::make_shared<RidgeState>();
  st->n_rows = prev.n_rows;
  st->params.resize(prev.params.size());
  std::vector<bool> written(prev.params.size(), false);
  for (const RidgeUpdate& whole : ups) {
    // A Woodbury step of n rows costs O(n·d_in² + n³): a block of more than kMaxWoodburyRows rows
    // (a batch of hundreds of edits) is applied as consecutive blocks of at most that many, which
    // is the same solve (each block moves the state exactly) in O(n·d_in²) instead of O(n³).
    const int d_in = prev.params[whole.slot].d_in, d_out = prev.params[whole.slot].d_out;
    int r0 = 0;
    do {
      RidgeUpdate u = whole;
      u.rows = std::min(kMaxWoodburyRows, whole.rows - r0);
      if (u.rows > 0) { u.k = whole.k + (size_t)r0 * d_in; u.v = whole.v + (size_t)r0 * d_out; }
      // The first update of a weight reads prev and writes the new state; later ones work in place.
      if (written[u.slot]) MEND_RETURN_IF_ERROR(apply_update(st->params[u.slot], &st->params[u.slot], u));
      else MEND_RETURN_IF_ERROR(apply_update(prev.params[u.slot], &st->params[u.slot], u));
      written[u.slot] = true;
      st->n_rows += u.sign * u.rows;
      r0 += u.rows;
    } while (r0 < whole.rows);
  }
  for (size_t k = 0; k < prev.params.size(); k++)
    if (!written[k]) st->params[k] = prev.params[k];
  for (const RidgeParam& p : st->params)
    for (double w : p.dW)
      if (!std::isfinite(w)) return Status::Error(code::kNonFinite, "the lifelong solve produced NaN or Inf");
  *out = std::move(st);
  return Status::OK();
}

namespace {

// X = P·G (float64, d_in x d_out) for one weight: P symmetric, so row i of X is row i of P times G.
std::vector<double> p_times(const RidgeParam& p, const float* G) {
  const int din = p.d_in, dout = p.d_out;
  std::vector<double> x((size_t)din * dout);
  parallel_for(din, [&](int64_t i0, int64_t i1) {
    std::vector<double> row(dout);
    for (int64_t i = i0; i < i1; i++) {
      std::fill(row.begin(), row.end(), 0.0);
      const double* pi = p.P.data() + (size_t)i * din;
      for (int j = 0; j < din; j++) {
        const double a = pi[j];
        const float* gj = G + (size_t)j * dout;
        for (int c = 0; c < dout; c++) row[c] += a * (double)gj[c];
      }
      std::copy(row.begin(), row.end(), x.begin() + (size_t)i * dout);
    }
  });
  return x;
}

// Rows stacked per GEMM: the products of many small blocks (an edit's ~10 rows) run as a few
// large GEMMs instead of thousands of skinny ones.
constexpr int kStackRows = 2048;
// Fewest rows of a GEMM here: gemm takes a K-split driver at M <= 8 (kernels/cpu/gemm.cc, kKSplitM),
// splitting the sums by the thread count; from 9 rows on, every thread count gives the same bits.
constexpr int kMinGemmRows = 16;

// S (d_in, d_out) += Σ_b A_bᵀ·B_b over row blocks (A_b (rows, d_in), B_b (rows, d_out)), float32
// GEMMs over up to kStackRows stacked rows at a time.
void add_at_b(const std::vector<const float*>& as, const std::vector<const float*>& bs, const std::vector<int>& rows,
              int din, int dout, float* S) {
  std::vector<float> ab, bb;
  size_t q = 0;
  while (q < as.size()) {
    int n = 0;
    size_t e = q;
    while (e < as.size() && (n == 0 || n + rows[e] <= kStackRows)) n += rows[e++];
    if (e == q + 1) {
      gemm(true, false, din, dout, rows[q], 1.0f, as[q], din, bs[q], dout, 1.0f, S, dout);
    } else if (n > 0) {
      ab.resize((size_t)n * din);
      bb.resize((size_t)n * dout);
      size_t r = 0;
      for (size_t t = q; t < e; t++) {
        std::memcpy(ab.data() + r * din, as[t], sizeof(float) * (size_t)rows[t] * din);
        std::memcpy(bb.data() + r * dout, bs[t], sizeof(float) * (size_t)rows[t] * dout);
        r += rows[t];
      }
      gemm(true, false, din, dout, n, 1.0f, ab.data(), din, bb.data(), dout, 1.0f, S, dout);
    }
    q = e;
  }
}

}  // namespace

Status ridge_value_gradients(const RidgeState& s, const std::vector<const float*>& g, const std::vector<GradFactors>& factors,
                             const std::vector<KeyBlock>& blocks, std::vector<std::vector<float>>* out) {
  const size_t n = s.params.size();
  if (g.size() != n) return Status::Error(code::kInvalidArg, "ridge_value_gradients: one G (or none) per inner weight");
  std::vector<bool> has(n);
  for (size_t q = 0; q < n; q++) has[q] = g[q] != nullptr;
  for (const GradFactors& f : factors) {
    MEND_RETURN_IF_ERROR(check_rows(s, f.slot, f.rows, f.x, f.d, true, "a gradient factor's slot names no inner weight",
                                    "a gradient factor has no rows", "a gradient factor is not finite"));
    has[f.slot] = true;
  }
  for (const KeyBlock& b : blocks) {
    MEND_RETURN_IF_ERROR(check_rows(s, b.slot, b.rows, b.k, nullptr, false, "a key block's slot names no inner weight",
                                    "a key block has no keys", "a key block is not finite"));
    if (!has[b.slot]) return Status::Error(code::kInvalidArg, "a key block's inner weight has no gradient G");
  }
  out->assign(blocks.size(), {});
  for (size_t q = 0; q < n; q++) {
    if (!has[q]) continue;
    const RidgeParam& p = s.params[q];
    const int din = p.d_in, dout = p.d_out;
    // G = the given G + Σ xᵀd of the slot's factors (float32; the factors are one backward pass's rows).
    std::vector<float> G((size_t)din * dout, 0.0f);
    if (g[q]) {
      if (!all_finite(g[q], G.size())) return Status::Error(code::kNonFinite, "a gradient G is not finite");
      std::memcpy(G.data(), g[q], sizeof(float) * G.size());
    }
    std::vector<const float*> xs, ds;
    std::vector<int> rows;
    for (const GradFactors& f : factors)
      if (f.slot == (int)q && f.rows > 0) { xs.push_back(f.x); ds.push_back(f.d); rows.push_back(f.rows); }
    add_at_b(xs, ds, rows, din, dout, G.data());
    // X = P·G in float64, then K·X per key block as float32 GEMMs over stacked keys.
    const std::vector<double> X = p_times(p, G.data());
    std::vector<float> xf(X.begin(), X.end());
    std::vector<size_t> mine;
    for (size_t bi = 0; bi < blocks.size(); bi++)
      if (blocks[bi].slot == (int)q) mine.push_back(bi);
    std::vector<float> kb, ob;
    size_t t = 0;
    while (t < mine.size()) {
      int m = 0;
      size_t e = t;
      while (e < mine.size() && (m == 0 || m + blocks[mine[e]].rows <= kStackRows)) m += blocks[mine[e++]].rows;
      // At most 8 rows would take gemm's K-split driver, whose partial sums follow the thread count:
      // such a chunk is padded with zero rows so that ∂L/∂V has the same bits on any thread count.
      const int mp = std::max(m, kMinGemmRows);
      kb.assign((size_t)mp * din, 0.0f);
      ob.resize((size_t)mp * dout);
      size_t r = 0;
      for (size_t u = t; u < e; u++) {
        const KeyBlock& b = blocks[mine[u]];
        std::memcpy(kb.data() + r * din, b.k, sizeof(float) * (size_t)b.rows * din);
        r += b.rows;
      }
      if (m > 0) gemm(false, false, mp, dout, din, 1.0f, kb.data(), din, xf.data(), dout, 0.0f, ob.data(), dout);
      r = 0;
      for (size_t u = t; u < e; u++) {
        const KeyBlock& b = blocks[mine[u]];
        (*out)[mine[u]].assign(ob.begin() + r * dout, ob.begin() + (r + b.rows) * dout);
        r += b.rows;
      }
      t = e;
    }
  }
  return Status::OK();
}

Status ridge_shift(const GPT2Model& base, const RidgeState& s, const std::vector<RidgeUpdate>& blocks, const std::vector<double>& coefs,
                   std::vector<std::shared_ptr<const RidgeState>>* states, std::vector<std::shared_ptr<const Overlay>>* overlays) {
  const size_t n = s.params.size();
  for (const RidgeUpdate& b : blocks)
    MEND_RETURN_IF_ERROR(check_rows(s, b.slot, b.rows, b.k, b.v, true, "a value block's slot names no inner weight",
                                    "a value block has no rows", "a value block is not finite"));
  for (double c : coefs)
    if (!std::isfinite(c)) return Status::Error(code::kNonFinite, "a shift coefficient is not finite");
  // Δ = P·Σ KᵀV per weight (none where no block has rows).
  std::vector<std::vector<double>> delta(n);
  for (size_t q = 0; q < n; q++) {
    const RidgeParam& p = s.params[q];
    std::vector<const float*> ks, vs;
    std::vector<int> rows;
    for (const RidgeUpdate& b : blocks)
      if (b.slot == (int)q && b.rows > 0) { ks.push_back(b.k); vs.push_back(b.v); rows.push_back(b.rows); }
    if (ks.empty()) continue;
    std::vector<float> S((size_t)p.d_in * p.d_out, 0.0f);
    add_at_b(ks, vs, rows, p.d_in, p.d_out, S.data());
    delta[q] = p_times(p, S.data());
  }
  states->clear();
  overlays->clear();
  for (double c : coefs) {
    auto next = std::make_shared<RidgeState>(s);
    for (size_t q = 0; q < n; q++) {
      if (delta[q].empty()) continue;
      double* dw = next->params[q].dW.data();
      const double* d = delta[q].data();
      parallel_for((int64_t)delta[q].size(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; i++) dw[i] += c * d[i];
      });
    }
    std::shared_ptr<const Overlay> ov;
    MEND_RETURN_IF_ERROR(ridge_overlay(base, *next, &ov));
    states->push_back(std::move(next));
    overlays->push_back(std::move(ov));
  }
  return Status::OK();
}

Status ridge_overlay(const GPT2Model& base, const RidgeState& s, std::shared_ptr<const Overlay>* out) {
  std::map<int, std::vector<float>> merged;
  for (const RidgeParam& p : s.params) {
    std::vector<float>& m = merged[p.param];
    m.resize(p.dW.size());
    base.copy_param(p.param, m.data());
    for (size_t i = 0; i < m.size(); i++) m[i] = (float)((double)m[i] + p.dW[i]);
  }
  return Overlay::from_merged(base, std::move(merged), out);
}

Status malmen_propose(const GPT2Model& model, const WeightDeltas* live, const MendEditor& editor, const Batch& batch,
                      const int32_t* key_mask, Proposal* out) {
  MEND_RETURN_IF_ERROR(check_editor(model, editor, /*values=*/false));  // values checked when the handle was made
  const size_t n = editor.inner.size();
  auto t0 = std::chrono::steady_clock::now();
  GradOptions go;
  go.capture = editor.inner;
  go.per_row_mean = true;  // a batch of B requests is B edits: every row's gradient as if alone
  GradResult gr;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(batch, go, live, &gr));
  out->loss = gr.loss;
  out->ms_pre = ms_since(t0);

  t0 = std::chrono::steady_clock::now();
  EditorPass pass(editor, gr, batch.B * batch.T);
  for (size_t k = 0; k < n; k++) pass.append_z0(editor, k);
  MEND_RETURN_IF_ERROR(pass.run(model, editor, false));
  out->rows.assign(n, 0);
  out->keys.assign(n, {});
  out->values.assign(n, {});
  for (size_t k = 0; k < n; k++) {
    const GradientTransform& g = editor.transforms[editor.transform_of[k]];
    const Capture& c = pass.capture(editor, k);
    const float alpha = editor.edit_lrs[k];
    for (size_t i = 0; i < pass.keep[k].size(); i++) {
      const int r = pass.keep[k][i];
      if (key_mask && key_mask[r] == 0) continue;
      const float* x = c.x.data() + (size_t)r * g.d_in;
      const float* ut = pass.u[k].data() + i * g.d_in;
      const float* dt = pass.d[k].data() + i * g.d_out;
      double dot = 0;
      for (int q = 0; q < g.d_in; q++) dot += (double)x[q] * ut[q];
      const float coef = (float)(alpha * dot);
      out->keys[k].insert(out->keys[k].end(), x, x + g.d_in);
      for (int o = 0; o < g.d_out; o++) out->values[k].push_back(coef * dt[o]);
      out->rows[k]++;
    }
  }
  out->ms_editor = ms_since(t0);
  return Status::OK();
}

Status key_covariance(const GPT2Model& model, const Batch& b, const std::vector<int>& params,
                      std::vector<std::vector<double>>* sums, int* count) {
  for (int p : params)
    if (p < 0 || p >= (int)model.params().size() || model.params()[p].shape.size() != 2)
      return Status::Error(code::kInvalidArg, "keyCovariance names a parameter that is not a weight matrix");
  // Labels = the tokens themselves (any loss will do: only the captured inputs are used).
  std::vector<int32_t> labels((size_t)b.B * b.T);
  for (size_t i = 0; i < labels.size(); i++) labels[i] = (!b.mask || b.mask[i]) ? b.ids[i] : -100;
  Batch lb = b;
  lb.labels = labels.data();
  GradOptions go;
  go.capture = params;
  GradResult gr;
  MEND_RETURN_IF_ERROR(model.loss_and_grad(lb, go, nullptr, &gr));
  std::vector<int> rows;
  for (int r = 0; r < b.B * b.T; r++)
    if (!b.mask || b.mask[r]) rows.push_back(r);
  sums->resize(params.size());
  for (size_t i = 0; i < params.size(); i++) {
    const int din = (int)model.params()[params[i]].shape[0];
    const Capture& c = gr.captures.at(params[i]);
    std::vector<float> X((size_t)rows.size() * din), C((size_t)din * din);
    for (size_t j = 0; j < rows.size(); j++) std::memcpy(X.data() + j * din, c.x.data() + (size_t)rows[j] * din, din * sizeof(float));
    gemm(true, false, din, din, (int)rows.size(), 1.0f, X.data(), din, X.data(), din, 0.0f, C.data(), din);
    std::vector<double>& S = (*sums)[i];
    if (S.size() != (size_t)din * din) S.assign((size_t)din * din, 0.0);
    for (size_t j = 0; j < C.size(); j++) S[j] += C[j];
  }
  *count = (int)rows.size();
  return Status::OK();
}

}  // namespace mend
