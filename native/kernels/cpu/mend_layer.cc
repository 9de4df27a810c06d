// mend_layer.cc — the element-wise part of one MEND editor layer (EasyEdit's LRLinear after its two
// low-rank products): pre = (p + bias) ⊙ scale[mode] + shift[mode], z += act(pre), act the clamp
// max(·, 0) whose derivative is 1 where pre >= 0 (DESIGN §5), or the identity (legacy files).
// mend_layer_forward:  p (Ns,D) = p + bias (in place: the saved activation), z (Ns,D) +=
// mend_layer_backward: dp (Ns,D) =, dbias (D) +=, dscale (n_modes,D) +=, dshift (n_modes,D) +=
// The parameter gradients are summed row by row in row order (deterministic).
#include <cstdint>

#include "kernels/kernels.h"
#include "core/threadpool.h"

namespace mend {

void mend_layer_forward(float* z, float* p, const float* bias, const float* scale, const float* shift,
                        const int32_t* mode, int Ns, int D, bool clamp) {
  // z (Ns,D), p (Ns,D), bias (D), scale (n_modes,D), shift (n_modes,D), mode (Ns)
  parallel_for(Ns, [&](int64_t b0, int64_t e0) {
    for (int64_t i = b0; i < e0; i++) {
      const float* sc = scale + (size_t)mode[i] * D;
      const float* sh = shift + (size_t)mode[i] * D;
      float* pr = p + (size_t)i * D;
      float* zr = z + (size_t)i * D;
      for (int k = 0; k < D; k++) {
        pr[k] += bias[k];
        const float a = pr[k] * sc[k] + sh[k];
        zr[k] += clamp ? (a > 0 ? a : 0.0f) : a;
      }
    }
  });
}

void mend_layer_backward(float* dp, float* dbias, float* dscale, float* dshift, const float* dz, const float* p,
                         const float* scale, const float* shift, const int32_t* mode, int Ns, int D, bool clamp) {
  // dp (Ns,D), dbias (D), dscale/dshift (n_modes,D), dz (Ns,D), p (Ns,D) as saved by the forward,
  // scale/shift (n_modes,D), mode (Ns)
  for (int i = 0; i < Ns; i++) {
    const float* sc = scale + (size_t)mode[i] * D;
    const float* sh = shift + (size_t)mode[i] * D;
    float* gsc = dscale + (size_t)mode[i] * D;
    float* gsh = dshift + (size_t)mode[i] * D;
    const float* pr = p + (size_t)i * D;
    const float* dzr = dz + (size_t)i * D;
    float* dpr = dp + (size_t)i * D;
    for (int k = 0; k < D; k++) {
      const float pre = pr[k] * sc[k] + sh[k];
      const float da = (!clamp || pre >= 0) ? dzr[k] : 0.0f;
      gsh[k] += da;
      gsc[k] += da * pr[k];
      dpr[k] = da * sc[k];
      dbias[k] += dpr[k];
    }
  }
}

}  // namespace mend
