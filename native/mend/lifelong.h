// lifelong.h — node-mend's lifelong editing mode (DESIGN §5b): MALMEN's least-squares aggregation
// of the editor's per-row value shifts, solved jointly over the whole edit log on the untouched base.
//
// For every inner weight W (d_in, d_out) the edited weight is W + ΔW with
//   ΔW = (S0 + Σ_e K_eᵀK_e)⁻¹ Σ_e K_eᵀV_e,   S0 = μ·C0 + e^λ·I,
// where K_e are the keys of edit e (its kept layer-input rows on the base model), V_e its value
// shifts v_i = α (k_i·ũ_i) d̃_i (MALMEN's coefficient times the editor's D̃ row) and C0 the
// uncentred covariance of the weight's inputs on unrelated text (MEMIT-style preservation; μ = 0
// leaves it out). Keys and value shifts are taken on the base, so the solution depends on the set
// of edits in the log, not on their order, and an edit leaves it by subtraction.
//
// A RidgeState keeps P = (S0 + ΣKᵀK)⁻¹ and ΔW per inner weight, in float64, and moves to the next
// log with the Woodbury identity: adding (s = +1) or removing (s = −1) the rows K, V of one edit is
//   G = K·P,  M = I + s·G·Kᵀ,  Z = M⁻¹·G,  P' = P − s·Gᵀ·Z,  ΔW' = ΔW + s·Zᵀ·(V − K·ΔW)
// (P'·Kᵀ = Gᵀ·M⁻¹ = Zᵀ), O(n·d_in²) for n rows instead of a d_in³ solve. Every product is
// computed in a fixed order, whatever the thread count, so replaying a log gives the same bits.
#pragma once
#include <chrono>
#include <memory>
#include <vector>

#include "mend/editor.h"
#include "model/overlay.h"

namespace mend {

// Dense float64 helpers: in-place Cholesky A = L·Lᵀ of an SPD (n, n) matrix (false when A is not
// positive definite), and X (n, m) := (L·Lᵀ)⁻¹ X with that factor.
bool cholesky(double* A, int n);
void cholesky_solve(const double* L, int n, double* X, int m, bool x_is_identity = false);

// The prior of one inner weight: S0 = mu·C0 + exp(log_ridge)·I.
struct RidgePriorSpec {
  int param = -1;
  double log_ridge = 0;
  double mu = 0;
  std::vector<float> c0;  // (d_in, d_in) or empty when mu = 0
};

// The state's buffers: an edit writes every element of its new P and ΔW row by row (tens of MB),
// so they are not zeroed first, and large ones reuse freed blocks' pages (core/common.h).
using StateBuffer = std::vector<double, UninitAllocator<double>>;

struct RidgeParam {
  int param = -1, d_in = 0, d_out = 0;
  StateBuffer P;   // (d_in, d_in) = (S0 + ΣKᵀK)⁻¹, symmetric
  StateBuffer dW;  // (d_in, d_out) = ΔW
};

struct RidgeState {
  std::vector<RidgeParam> params;  // one per inner weight, in the editor's order
  int n_rows = 0;                  // rows currently in the sums (tests, info)
};

// P0 = S0⁻¹ and ΔW = 0 for every spec (a d_in³ Cholesky inverse per weight, once per editor).
Status ridge_prior(const GPT2Model& model, const std::vector<RidgePriorSpec>& specs, std::shared_ptr<const RidgeState>* out);

// One block of rows to add (sign +1) or remove (sign −1) for one inner weight (index into
// RidgeState::params). k is (rows, d_in), v is (rows, d_out).
struct RidgeUpdate {
  int slot = -1;
  int rows = 0;
  const float* k = nullptr;
  const float* v = nullptr;
  int sign = 1;
};

// prev with the updates applied in order (prev is not changed). Fails with ERR_NON_FINITE when the
// rows are not finite and with ERR_INVALID_ARG when a removal does not leave a positive definite
// system (rows that were never added).
Status ridge_update(const RidgeState& prev, const std::vector<RidgeUpdate>& ups, std::shared_ptr<const RidgeState>* out);

// The gradient of a loss with respect to the value shifts of key blocks, through the solve: with
// ΔW = P·ΣKᵀV (P = (S0 + ΣKᵀK)⁻¹ of s) and G = ∂L/∂ΔW of a weight, ∂L/∂V of a block of keys K of
// that weight is K·(P·G) (MALMEN's adjoint). G per slot of s is g[slot] (null: none) plus Σ xᵀd of
// the factors of that slot: the rows x of the weight's input and d of the loss's gradient at its
// output, as one backward pass captures them (G = xᵀd is what it would return for the weight). A
// block may only name a slot with a G. Each block is {slot, rows, k (rows, d_in)}; out receives one
// (rows, d_out) float32 array per block. G and K·X are float32 GEMMs (over stacked rows; the same
// sums whatever the thread count), P·G is accumulated in float64.
struct GradFactors {
  int slot = -1;
  int rows = 0;
  const float* x = nullptr;  // (rows, d_in)
  const float* d = nullptr;  // (rows, d_out)
};
struct KeyBlock {
  int slot = -1;
  int rows = 0;
  const float* k = nullptr;
};
Status ridge_value_gradients(const RidgeState& s, const std::vector<const float*>& g, const std::vector<GradFactors>& factors,
                             const std::vector<KeyBlock>& blocks, std::vector<std::vector<float>>* out);

// A line search in value space without solving the log again: the keys stay, so moving the value
// shifts of blocks {slot, rows, k, v = the move} moves ΔW by Δ = P·Σ KᵀV (linear in V; sign unused).
// For each c of coefs, the state s with ΔW + c·Δ (P as s's) and its overlay. The result equals what
// ridge_update of the moved log gives up to rounding (the sums are taken in another order), so a
// caller that needs a log's exact bits solves it again once it has chosen.
Status ridge_shift(const GPT2Model& base, const RidgeState& s, const std::vector<RidgeUpdate>& blocks, const std::vector<double>& coefs,
                   std::vector<std::shared_ptr<const RidgeState>>* states, std::vector<std::shared_ptr<const Overlay>>* overlays);

// The overlay W + ΔW (float32) of every inner weight of s.
Status ridge_overlay(const GPT2Model& base, const RidgeState& s, std::shared_ptr<const Overlay>* out);

// The lifelong proposal of one edit batch, on the base model: per inner weight the keys (kept rows
// of its input, restricted to rows with key_mask != 0 when key_mask is given) and their value shifts.
struct Proposal {
  float loss = 0;                               // pre-edit loss on the base
  std::vector<int> rows;                        // key rows per inner weight
  std::vector<std::vector<float>> keys, values;  // (rows, d_in) and (rows, d_out) per inner weight
  double ms_pre = 0, ms_editor = 0;
};
// The pre-edit pass runs on model + live (null: the base). Keys are the inner weights' input rows of
// that pass: on the base for an edit, on the live model for a refinement round (MEND.refine).
Status malmen_propose(const GPT2Model& model, const WeightDeltas* live, const MendEditor& editor, const Batch& batch,
                      const int32_t* key_mask, Proposal* out);

// Σ x·xᵀ over the unmasked rows of b of every weight in params (its input rows on the base), added
// to sums[i] (d_in, d_in), and the number of rows. For the preservation covariance C0 = Σ x·xᵀ / n.
Status key_covariance(const GPT2Model& model, const Batch& b, const std::vector<int>& params,
                      std::vector<std::vector<double>>* sums, int* count);

}  // namespace mend
