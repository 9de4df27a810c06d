// optimizer_binding.cc — the optimizer for TypeScript training loops (the Pretrainer):
//   optimizerStep(params, grads, m, v, {lr, beta1, beta2, eps, weightDecay: number[], t, gradClip})
//     → {gradNorm}: global-norm clipping then one AdamW step per parameter, in place
//     (mend/optimizer.h; gradClip <= 0: no clipping); throws ERR_NON_FINITE, writing nothing, when
//     the gradient norm is not finite.
//   adamwUpdate(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, t): one AdamW step in place.
// Both run synchronously on the caller's thread over the caller's Float32Arrays.
#include <napi.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "addon/bindings.h"
#include "addon/util.h"
#include "kernels/kernels.h"
#include "mend/optimizer.h"

namespace mend {
namespace addon {
namespace {

Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  MEND_CHECK_ARG(env, info.Length() >= 10, "Expected (param, grad, m, v, lr, beta1, beta2, eps, weightDecay, t) for adamwUpdate");
  for (int i = 0; i < 4; i++) MEND_CHECK_ARG(env, is_f32(info[i]), "Expected Float32Arrays for param, grad, m and v");
  for (int i = 4; i < 10; i++)
    MEND_CHECK_ARG(env, info[i].IsNumber(), "Expected numbers for lr, beta1, beta2, eps, weightDecay and t");
  auto p = info[0].As<Napi::Float32Array>(), g = info[1].As<Napi::Float32Array>(), m = info[2].As<Napi::Float32Array>(),
       v = info[3].As<Napi::Float32Array>();
  const size_t n = p.ElementLength();
  MEND_CHECK_ARG(env, g.ElementLength() == n && m.ElementLength() == n && v.ElementLength() == n,
                 "param, grad, m and v must have the same length");
  const int t = info[9].As<Napi::Number>().Int32Value();
  MEND_CHECK_ARG(env, t >= 1, "t (the step number) must be >= 1");
  adamw_update(p.Data(), g.Data(), m.Data(), v.Data(), (int64_t)n, info[4].As<Napi::Number>().FloatValue(),
               info[5].As<Napi::Number>().FloatValue(), info[6].As<Napi::Number>().FloatValue(),
               info[7].As<Napi::Number>().FloatValue(), info[8].As<Napi::Number>().FloatValue(), t);
  return env.Undefined();
}

Napi::Value OptimizerStep(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* names[4] = {"params", "grads", "m", "v"};
  for (int k = 0; k < 4; k++)
    MEND_CHECK_ARG(env, info[k].IsArray(), std::string("Expected an array of Float32Arrays for ") + names[k] + " (optimizerStep)");
  MEND_CHECK_ARG(env, info[4].IsObject(), "Expected an options object {lr, beta1, beta2, eps, weightDecay, t, gradClip} for optimizerStep");
  Napi::Array arrays[4] = {info[0].As<Napi::Array>(), info[1].As<Napi::Array>(), info[2].As<Napi::Array>(),
                           info[3].As<Napi::Array>()};
  const uint32_t count = arrays[0].Length();
  for (int k = 1; k < 4; k++)
    MEND_CHECK_ARG(env, arrays[k].Length() == count,
                   std::string("Expected ") + std::to_string(count) + " arrays for " + names[k] + " (one per param)");
  Napi::Object o = info[4].As<Napi::Object>();
  for (const char* k : {"lr", "beta1", "beta2", "eps", "t", "gradClip"})
    MEND_CHECK_ARG(env, o.Get(k).IsNumber(), std::string("Expected a number for optimizerStep options.") + k);
  MEND_CHECK_ARG(env, o.Get("weightDecay").IsArray() && o.Get("weightDecay").As<Napi::Array>().Length() == count,
                 "Expected one number per param for optimizerStep options.weightDecay");
  Napi::Array wd = o.Get("weightDecay").As<Napi::Array>();
  const int t = o.Get("t").As<Napi::Number>().Int32Value();
  MEND_CHECK_ARG(env, t >= 1, "t (the step number) must be >= 1");
  const float lr = o.Get("lr").As<Napi::Number>().FloatValue();
  AdamWOptions adam;
  adam.beta1 = o.Get("beta1").As<Napi::Number>().FloatValue();
  adam.beta2 = o.Get("beta2").As<Napi::Number>().FloatValue();
  adam.eps = o.Get("eps").As<Napi::Number>().FloatValue();
  const double clip = o.Get("gradClip").As<Napi::Number>().DoubleValue();

  std::vector<OptimParam> ps(count);
  for (uint32_t i = 0; i < count; i++) {
    float* data[4];
    size_t n = 0;
    for (int k = 0; k < 4; k++) {
      Napi::Value a = arrays[k].Get(i);
      MEND_CHECK_ARG(env, is_f32(a), std::string("Expected a Float32Array for ") + names[k] + "[" + std::to_string(i) + "]");
      Napi::Float32Array f = a.As<Napi::Float32Array>();
      if (k == 0) n = f.ElementLength();
      MEND_CHECK_ARG(env, f.ElementLength() == n,
                     std::string(names[k]) + "[" + std::to_string(i) + "] has " + std::to_string(f.ElementLength()) +
                         " elements, expected " + std::to_string(n) + " (as params[" + std::to_string(i) + "])");
      data[k] = f.Data();
    }
    MEND_CHECK_ARG(env, wd.Get(i).IsNumber(), "Expected one number per param for optimizerStep options.weightDecay");
    ps[i].param = data[0]; ps[i].grad = data[1]; ps[i].m = data[2]; ps[i].v = data[3];
    ps[i].n = (int64_t)n;
    ps[i].lr = lr;
    ps[i].weight_decay = wd.Get(i).As<Napi::Number>().FloatValue();
  }
  double norm = 0;
  MEND_THROW_IF_ERROR(env, optimizer_step(ps, clip > 0 ? clip : std::numeric_limits<double>::infinity(), adam, t, &norm));
  Napi::Object r = Napi::Object::New(env);
  r.Set("gradNorm", norm);
  return r;
}

}  // namespace

void init_optimizer(Napi::Env env, Napi::Object exports) {
  exports.Set("adamwUpdate", Napi::Function::New(env, guard_fn<AdamwUpdate>, "adamwUpdate"));
  exports.Set("optimizerStep", Napi::Function::New(env, guard_fn<OptimizerStep>, "optimizerStep"));
}

}  // namespace addon
}  // namespace mend
