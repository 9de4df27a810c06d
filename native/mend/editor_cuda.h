// editor_cuda.h — the MEND editor network (one GradientTransform: its IDMLP of LRLinear layers) on
// the GPU: the layers' parameters copied to the device once, and the forward and backward composed
// of cuda::gemm and cuda::mend_layer_* exactly as mend/editor.cc composes the CPU ops (DESIGN §5).
// z, mode and the gradients are device pointers. Not yet used by an edit or a training step (those
// still run on the CPU); checked against transform_forward / transform_backward by the op test.
#pragma once
#include <memory>
#include <vector>

#include "mend/editor.h"

namespace mend {
namespace cuda {

struct DeviceLayer {
  float* u = nullptr;      // (D, r)
  float* v = nullptr;      // (r, D)
  float* bias = nullptr;   // (D)
  float* scale = nullptr;  // (n_modes, D)
  float* shift = nullptr;  // (n_modes, D)
  bool relu = true;
};

// One transform's layers in one device allocation. Also the layout of its gradients (zeros()).
class DeviceTransform {
 public:
  static Status upload(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out);
  // Device buffers shaped like this transform's parameters, zeroed (the gradients).
  static Status zeros(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out);
  ~DeviceTransform();
  DeviceTransform(const DeviceTransform&) = delete;
  DeviceTransform& operator=(const DeviceTransform&) = delete;
  int d_in = 0, d_out = 0, rank = 0, n_modes = 0;
  std::vector<DeviceLayer> layers;
  int D() const { return d_in + d_out; }
  // Copies the buffers back into host vectors shaped as g's layers (u, v, bias, scale, shift).
  Status download(std::vector<MendGrads::Layer>* out) const;

 private:
  DeviceTransform() = default;
  static Status allocate(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out);
  float* storage_ = nullptr;
};

// Saved activations of one layer on the device: z (Ns,D), h (Ns,r), p (Ns,D); one allocation.
struct DeviceLayerActs {
  float* z = nullptr;
  float* h = nullptr;
  float* p = nullptr;
  ~DeviceLayerActs();
};

// z (Ns,D) = the layers applied in place; mode (Ns); with acts (one per layer), saves activations.
Status transform_forward(const DeviceTransform& g, float* z, const int32_t* mode, int Ns,
                         std::vector<std::unique_ptr<DeviceLayerActs>>* acts);
// dz (Ns,D): ∂L/∂z_L in, ∂L/∂z_0 out (=); the parameter gradients are added to grads (+=).
Status transform_backward(const DeviceTransform& g, float* dz, const int32_t* mode, int Ns,
                          const std::vector<std::unique_ptr<DeviceLayerActs>>& acts, DeviceTransform* grads);

}  // namespace cuda
}  // namespace mend
