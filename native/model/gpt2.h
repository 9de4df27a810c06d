// gpt2.h — GPT-2 (Hugging Face GPT2LMHeadModel, eval mode) over an immutable parameter set:
// forward, loss, backward to requested parameters with activation capture, and KV-cache generation
// (model/gpt2.cc); loading, initialising and saving the weights (model/weights.cc). The tensors and
// their numbering come from model/tensors.h. A GPT2Model is never written after construction, so
// any number of calls may run concurrently; every call allocates its own activations.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/common.h"
#include "kernels/kernels.h"
#include "model/tensors.h"

namespace mend {

class SafetensorsFile;

// Per-weight changes used by edited models (the MEND overlay, model/overlay.h): for Conv1D weight p the
// model computes y = x · W_p' + b + x · Δ_p where W_p' = weight(p, W_p) (a merged copy once the
// overlay has folded its factors, else the base W_p) and Δ_p is the low-rank part.
class WeightDeltas {
 public:
  virtual ~WeightDeltas() = default;
  virtual const float* weight(int param, const float* base) const = 0;
  virtual bool has_lowrank(int param) const = 0;
  // out (M, d_out) += inp (M, d_in) · Δ
  virtual void forward(int param, const float* inp, int M, float* out) const = 0;
  // dinp (M, d_in) += dout (M, d_out) · Δᵀ
  virtual void backward_input(int param, const float* dout, int M, float* dinp) const = 0;
};

struct Batch {
  const int32_t* ids = nullptr;     // (B,T)
  const int32_t* mask = nullptr;    // (B,T) 0/1, or null = all ones
  const int32_t* labels = nullptr;  // (B,T) or null; -100 = ignore; logits[t] predicts labels[t+1]
  int B = 0, T = 0;
};

struct ForwardOptions {
  bool last_only = false;  // logits only for position T-1 of each row: (B,V) instead of (B,T,V)
  bool want_logits = true;
};
struct ForwardResult {
  FloatBuf logits;            // (B,T,V) or (B,V)
  bool has_loss = false;
  float loss = 0;             // mean over target tokens
  int n_targets = 0;
};

struct GradOptions {
  std::vector<int> params;   // parameters whose gradient is wanted
  std::vector<int> capture;  // Conv1D weights whose input rows X and output gradient rows D are wanted
  bool want_logits = false;
  // Locality mode (MEND training): when set, the loss is the mean over tokens with mask = 1 of
  // KL(softmax(kl_target) ‖ softmax(logits)) with kl_target (B,T,V) the unedited model's logits,
  // and labels are not used.
  const float* kl_target = nullptr;
  // Cross-entropy mode: the gradient of Σ_rows (mean CE of the row) instead of the mean over all
  // target tokens, so that every row's gradient is the one it would have alone (a batch of
  // independent edits: the lifelong mode's training step, as MALMEN's per-edit backward).
  bool per_row_mean = false;
  // Cross-entropy mode: also count the target tokens the logits' argmax predicts (GradResult::n_correct;
  // teacher-forced token accuracy without returning the logits).
  bool want_accuracy = false;
};
struct Capture {
  std::vector<float> x;  // (B*T, d_in)  layer input rows
  std::vector<float> d;  // (B*T, d_out) dL/dy rows
};
struct GradResult {
  float loss = 0;
  int n_targets = 0;
  int n_correct = 0;                        // with want_accuracy
  std::map<int, ZeroBuf> grads;             // param index -> gradient, same shape as the param
  std::map<int, Capture> captures;
  FloatBuf logits;                          // (B,T,V) when want_logits
};

struct GenerateOptions {
  int max_new_tokens = 16;
  float temperature = 0;  // 0 = greedy
  int top_k = 0;          // 0 = all
  float top_p = 1.0f;     // nucleus sampling; 1 = off
  float repetition_penalty = 1.0f;  // Hugging Face's; 1 = off
  int eos_token_id = -1;  // -1 = none
  uint64_t seed = 0;
  bool use_cache = true;
};

class GPT2Model {
 public:
  // Maps `path` (model.safetensors) and resolves every parameter under either name style.
  // map_file: memory-map F32 weights instead of reading them (the file must not change while loaded).
  static Status load(const std::string& path, const GPT2Config& cfg, std::shared_ptr<GPT2Model>* out, bool map_file = false);
  // HF-style initialisation N(0, 0.02), c_proj weights N(0, 0.02/sqrt(2 n_layer)), deterministic.
  static Status random(const GPT2Config& cfg, uint64_t seed, std::shared_ptr<GPT2Model>* out);
  // A model owning the given parameters (canonical names, float32, every parameter required).
  static Status from_tensors(const GPT2Config& cfg, std::map<std::string, std::vector<float>>&& tensors,
                             std::shared_ptr<GPT2Model>* out);
  // A model sharing this model's storage except the replaced parameters (used by materialize()).
  Status with_replaced(std::map<int, std::vector<float>>&& replaced, std::shared_ptr<GPT2Model>* out) const;

  const GPT2Config& config() const { return cfg_; }
  const std::vector<ParamInfo>& params() const { return info_; }
  int param_index(const std::string& name) const;  // accepts "h.0…", "transformer.h.0…", "lm_head.weight"; -1 if none
  // Row-major data of parameter i, or null for a weight kept only packed (packed(i)); copy_param
  // gives every parameter row-major.
  const float* param(int i) const { return ptr_[i]; }
  // The packed form (kernels.h PackedMatrix) of Conv1D weight i, or null. Every Conv1D weight of a
  // model is packed once, when the model is made: in place where the model's storage is its own (one
  // copy of the weights), next to a read-only file mapping otherwise. wte is packed transposed
  // (wteᵀ, C x V: the LM head's B), its row-major copy given up unless it lies in a file mapping.
  const PackedMatrix* packed(int i) const { return packed_[i].data ? &packed_[i] : nullptr; }
  void copy_param(int i, float* dst) const;  // numel floats, row-major
  size_t param_bytes() const;
  size_t owned_bytes() const;  // heap storage this model holds (generated, converted or replaced weights)

  Status check_batch(const Batch& b, bool need_labels) const;
  Status forward(const Batch& b, const ForwardOptions& opt, const WeightDeltas* deltas, ForwardResult* out) const;
  Status loss_and_grad(const Batch& b, const GradOptions& opt, const WeightDeltas* deltas, GradResult* out) const;
  // out: (B, n) generated tokens, n <= max_new_tokens (stops early when every row has emitted eos)
  Status generate(const Batch& b, const GenerateOptions& opt, const WeightDeltas* deltas,
                  std::vector<int32_t>* out, int* n_generated) const;
  Status save(const std::string& path, const std::map<std::string, std::string>& metadata) const;

  // The named views of the parameters (tensors.h): weights, and each parameter's index.
  ParameterTensors<const float*> weights() const { return point_params(ptr_, cfg_.n_layer); }
  const ParameterTensors<int>& ids() const { return ids_; }

 private:
  explicit GPT2Model(const GPT2Config& cfg);  // the parameter table for cfg, no storage yet
  // Packs every Conv1D weight not packed yet: in place where `writable` (the storage is this model's own).
  void pack_weights(bool writable);
  void pack_wte(bool writable);  // wte as wteᵀ packed (C, V); the row-major copy given up where writable
  GPT2Config cfg_;
  std::vector<ParamInfo> info_;
  ParameterTensors<int> ids_;
  std::vector<const float*> ptr_;
  std::vector<PackedMatrix> packed_;                             // per parameter; data null = not packed
  std::shared_ptr<SafetensorsFile> file_;                       // mapping the pointers may refer to
  std::vector<std::shared_ptr<std::vector<float>>> owned_;      // converted or generated storage
};

}  // namespace mend
