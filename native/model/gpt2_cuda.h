// gpt2_cuda.h — the first piece of a device-resident GPT-2: a model's weights copied to the GPU
// once, and the forward pass (logits, loss) composed of the CUDA ops (kernels/cuda/kernels_cuda.h)
// in the same order as model/gpt2.cc's run_blocks, so the two can be compared op for op.
// Not yet: the overlay of an edited model, the KV cache, backward, and wiring into the addon
// (device: 'cuda' is still refused in TypeScript). Built only with NODE_MEND_CUDA (mend_cuda);
// checked against GPT2Model::forward by mend_cuda_ops_test.
#pragma once
#include <memory>

#include "model/gpt2.h"

namespace mend {
namespace cuda {

class CudaGPT2 {
 public:
  // Copies every parameter of m to one device allocation.
  static Status upload(const GPT2Model& m, std::unique_ptr<CudaGPT2>* out);
  ~CudaGPT2();
  CudaGPT2(const CudaGPT2&) = delete;
  CudaGPT2& operator=(const CudaGPT2&) = delete;
  // As GPT2Model::forward without deltas and with last_only = false: out->logits (B,T,V) copied to
  // the host; the loss with b.labels. The batch is checked by the host model's check_batch.
  Status forward(const Batch& b, ForwardResult* out) const;
  size_t device_bytes() const { return bytes_; }

 private:
  explicit CudaGPT2(const GPT2Model& m) : model_(m) {}
  const GPT2Model& model_;  // must outlive this (its config, batch checks)
  float* storage_ = nullptr;
  size_t bytes_ = 0;
  ParameterTensors<const float*> w_;  // device pointers into storage_
};

}  // namespace cuda
}  // namespace mend
