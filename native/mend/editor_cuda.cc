// editor_cuda.cc — see editor_cuda.h. Host code over the mend::cuda API (kernels_cuda.h); the GEMMs
// are mend/editor.cc's, one for one.
#include "mend/editor_cuda.h"

#include "kernels/cuda/kernels_cuda.h"

namespace mend {
namespace cuda {
namespace {

// The sizes of one layer's five tensors, in storage order.
void layer_sizes(const GradientTransform& g, size_t out[5]) {
  const size_t D = (size_t)g.D(), r = (size_t)g.rank, nm = (size_t)g.n_modes;
  out[0] = D * r; out[1] = r * D; out[2] = D; out[3] = nm * D; out[4] = nm * D;
}

// Frees one device allocation at the end of a scope.
struct DeviceBlock {
  void* p = nullptr;
  ~DeviceBlock() { device_free(p); }
};

}  // namespace

Status DeviceTransform::allocate(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out) {
  std::unique_ptr<DeviceTransform> t(new DeviceTransform());
  t->d_in = g.d_in; t->d_out = g.d_out; t->rank = g.rank; t->n_modes = g.n_modes;
  size_t sz[5], total = 0;
  layer_sizes(g, sz);
  for (size_t s : sz) total += s;
  total *= g.layers.size();
  MEND_RETURN_IF_ERROR(device_alloc(reinterpret_cast<void**>(&t->storage_), total * sizeof(float)));
  float* f = t->storage_;
  for (const MendLayer& L : g.layers) {
    DeviceLayer d;
    float** slots[5] = {&d.u, &d.v, &d.bias, &d.scale, &d.shift};
    for (int i = 0; i < 5; i++) { *slots[i] = f; f += sz[i]; }
    d.relu = L.relu;
    t->layers.push_back(d);
  }
  *out = std::move(t);
  return Status::OK();
}

Status DeviceTransform::upload(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out) {
  MEND_RETURN_IF_ERROR(allocate(g, out));
  for (size_t j = 0; j < g.layers.size(); j++) {
    const MendLayer& L = g.layers[j];
    const DeviceLayer& d = (*out)->layers[j];
    const std::vector<float>* src[5] = {&L.u, &L.v, &L.bias, &L.scale, &L.shift};
    float* dst[5] = {d.u, d.v, d.bias, d.scale, d.shift};
    for (int i = 0; i < 5; i++) MEND_RETURN_IF_ERROR(copy_to_device(dst[i], src[i]->data(), src[i]->size() * sizeof(float)));
  }
  return Status::OK();
}

Status DeviceTransform::zeros(const GradientTransform& g, std::unique_ptr<DeviceTransform>* out) {
  MEND_RETURN_IF_ERROR(allocate(g, out));
  size_t sz[5], total = 0;
  layer_sizes(g, sz);
  for (size_t s : sz) total += s;
  return device_memset((*out)->storage_, 0, total * g.layers.size() * sizeof(float));
}

DeviceTransform::~DeviceTransform() { device_free(storage_); }

Status DeviceTransform::download(std::vector<MendGrads::Layer>* out) const {
  const size_t D = (size_t)this->D(), r = (size_t)rank, nm = (size_t)n_modes;
  const size_t sz[5] = {D * r, r * D, D, nm * D, nm * D};
  out->assign(layers.size(), MendGrads::Layer{});
  for (size_t j = 0; j < layers.size(); j++) {
    MendGrads::Layer& h = (*out)[j];
    std::vector<float>* dst[5] = {&h.u, &h.v, &h.bias, &h.scale, &h.shift};
    const float* src[5] = {layers[j].u, layers[j].v, layers[j].bias, layers[j].scale, layers[j].shift};
    for (int i = 0; i < 5; i++) {
      dst[i]->resize(sz[i]);
      MEND_RETURN_IF_ERROR(copy_to_host(dst[i]->data(), src[i], sz[i] * sizeof(float)));
    }
  }
  return Status::OK();
}

DeviceLayerActs::~DeviceLayerActs() { device_free(z); }  // h and p live in z's allocation

Status transform_forward(const DeviceTransform& g, float* z, const int32_t* mode, int Ns,
                         std::vector<std::unique_ptr<DeviceLayerActs>>* acts) {
  const int D = g.D(), r = g.rank;
  const size_t nz = (size_t)Ns * D, nh = (size_t)Ns * r;
  DeviceBlock scratch;  // h, pre when activations are not kept
  if (!acts) MEND_RETURN_IF_ERROR(device_alloc(&scratch.p, (nh + nz) * sizeof(float)));
  if (acts) acts->clear();
  for (const DeviceLayer& L : g.layers) {
    float *h, *pre;
    if (acts) {
      std::unique_ptr<DeviceLayerActs> a(new DeviceLayerActs());
      MEND_RETURN_IF_ERROR(device_alloc(reinterpret_cast<void**>(&a->z), (2 * nz + nh) * sizeof(float)));
      a->h = a->z + nz;
      a->p = a->h + nh;
      MEND_RETURN_IF_ERROR(copy_device(a->z, z, nz * sizeof(float)));
      h = a->h;
      pre = a->p;
      acts->push_back(std::move(a));
    } else {
      h = static_cast<float*>(scratch.p);
      pre = h + nh;
    }
    gemm(false, true, Ns, r, D, 1.0f, z, D, L.v, D, 0.0f, h, r);    // (Ns,r) = z·Vᵀ
    gemm(false, true, Ns, D, r, 1.0f, h, r, L.u, r, 0.0f, pre, D);  // (Ns,D) = h·Uᵀ
    mend_layer_forward(z, pre, L.bias, L.scale, L.shift, mode, Ns, D, L.relu);
  }
  return synchronize("editor transform_forward");
}

Status transform_backward(const DeviceTransform& g, float* dz, const int32_t* mode, int Ns,
                          const std::vector<std::unique_ptr<DeviceLayerActs>>& acts, DeviceTransform* grads) {
  const int D = g.D(), r = g.rank;
  if (acts.size() != g.layers.size()) return Status::Error(code::kInternal, "transform_backward: activations of another pass");
  DeviceBlock scratch;  // dp (Ns,D), dh (Ns,r)
  MEND_RETURN_IF_ERROR(device_alloc(&scratch.p, ((size_t)Ns * D + (size_t)Ns * r) * sizeof(float)));
  float* dp = static_cast<float*>(scratch.p);
  float* dh = dp + (size_t)Ns * D;
  for (int j = (int)g.layers.size() - 1; j >= 0; j--) {
    const DeviceLayer& L = g.layers[j];
    const DeviceLayerActs& a = *acts[j];
    DeviceLayer& G = grads->layers[j];
    mend_layer_backward(dp, G.bias, G.scale, G.shift, dz, a.p, L.scale, L.shift, mode, Ns, D, L.relu);
    gemm(true, false, D, r, Ns, 1.0f, dp, D, a.h, r, 1.0f, G.u, r);   // dU (D,r) += dpᵀ·h
    gemm(false, false, Ns, r, D, 1.0f, dp, D, L.u, r, 0.0f, dh, r);   // dh (Ns,r) = dp·U
    gemm(true, false, r, D, Ns, 1.0f, dh, r, a.z, D, 1.0f, G.v, D);   // dV (r,D) += dhᵀ·z
    gemm(false, false, Ns, D, r, 1.0f, dh, r, L.v, D, 1.0f, dz, D);   // dz += dh·V
  }
  return synchronize("editor transform_backward");
}

}  // namespace cuda
}  // namespace mend
