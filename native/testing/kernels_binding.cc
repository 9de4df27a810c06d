// kernels_binding.cc — the testing addon's kernel functions: every CPU kernel as a synchronous
// function over typed arrays, for test/12.kernels. Outputs are written into the arrays passed in. Sizes and strides are
// checked against the array lengths (ERR_INVALID_ARG) so a wrong test cannot read or write out of
// bounds. Strided tensors (attention q/k/v) are passed as (array, elementOffset, batchStride,
// rowStride), so q, k and v may be views into one packed qkv array. Not part of the public API.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "addon/util.h"
#include "core/common.h"
#include "kernels/kernels.h"
#include "kernels/cpu/vec_math.h"
#include "testing/testing.h"

namespace mend {
namespace testing {
namespace {

using addon::is_f32;
using addon::is_i32;
using addon::make_error;

constexpr int64_t kMaxInt = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxStride = int64_t(1) << 50;  // element offsets and strides
constexpr int64_t kMaxLen = int64_t(1) << 50;     // flat lengths (gelu, adam)

// Argument errors are thrown as C++ exceptions (NAPI_CPP_EXCEPTIONS); node-addon-api turns them into
// the JavaScript Error, with `.code`, at the function boundary.
[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw make_error(env, code::kInvalidArg, msg); }

template <typename T>
struct Array {  // a typed array argument, or null
  T* data = nullptr;  // may be null for a zero-length array too
  int64_t len = 0;
  bool given = false;  // false for null
  std::string name;
};

class Args {
 public:
  Args(const Napi::CallbackInfo& info, size_t n, const char* fn) : info_(info), env_(info.Env()), fn_(fn) {
    if (info.Length() < n)
      fail(env_, "Expected " + std::to_string(n) + " arguments for testing." + fn_ + " but received " +
                     std::to_string(info.Length()));
  }
  Napi::Env env() const { return env_; }

  int64_t integer(size_t i, const char* name, int64_t lo = 0, int64_t hi = kMaxInt) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) fail(env_, expected("an integer", name, kind(v)));
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(std::floor(d) == d) || d < (double)lo || d > (double)hi)
      fail(env_, expected("an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", name,
                          std::to_string(d)));
    return (int64_t)d;
  }
  double number(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) fail(env_, expected("a number", name, kind(v)));
    return v.As<Napi::Number>().DoubleValue();
  }
  bool boolean(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsBoolean()) fail(env_, expected("a boolean", name, kind(v)));
    return v.As<Napi::Boolean>().Value();
  }
  Array<float> f32(size_t i, const char* name, bool nullable = false) const {
    Array<float> a;
    a.name = name;
    const Napi::Value v = info_[i];
    if (nullable && (v.IsNull() || v.IsUndefined())) return a;
    if (!is_f32(v)) fail(env_, expected(nullable ? "a Float32Array or null" : "a Float32Array", name, kind(v)));
    Napi::Float32Array t = v.As<Napi::Float32Array>();
    a.data = t.Data();
    a.len = (int64_t)t.ElementLength();
    a.given = true;
    return a;
  }
  Array<int32_t> i32(size_t i, const char* name, bool nullable = false) const {
    Array<int32_t> a;
    a.name = name;
    const Napi::Value v = info_[i];
    if (nullable && (v.IsNull() || v.IsUndefined())) return a;
    if (!is_i32(v)) fail(env_, expected(nullable ? "an Int32Array or null" : "an Int32Array", name, kind(v)));
    Napi::Int32Array t = v.As<Napi::Int32Array>();
    a.data = t.Data();
    a.len = (int64_t)t.ElementLength();
    a.given = true;
    return a;
  }

  // The array (when given) holds at least n elements. Sizes are products of int32 values, so they are
  // computed in double (exact below 2^53, and certainly too large above) instead of overflowing int64.
  template <typename T>
  void need(const Array<T>& a, double n) const {
    if (a.given && (double)a.len < n)
      fail(env_, expected("at least " + std::to_string((long long)std::min(n, 9e18)) + " elements", a.name,
                          std::to_string(a.len)));
  }
  // Every value of ids (first n) is in [lo, hi).
  void range(const Array<int32_t>& a, int64_t n, int64_t lo, int64_t hi, bool allow_ignore = false) const {
    for (int64_t i = 0; i < n; i++) {
      const int32_t x = a.data[i];
      if (allow_ignore && x == -100) continue;
      if (x < lo || x >= hi)
        fail(env_, expected("values in [" + std::to_string(lo) + ", " + std::to_string(hi) + ")",
                            a.name + "[" + std::to_string(i) + "]", std::to_string(x)));
    }
  }
  void check(bool cond, const std::string& msg) const {
    if (!cond) fail(env_, "testing." + fn_ + ": " + msg);
  }

 private:
  std::string expected(const std::string& what, const std::string& name, const std::string& got) const {
    return "Expected " + what + " for " + name + " (testing." + fn_ + ") but received " + got;
  }
  static std::string kind(const Napi::Value& v) {
    if (v.IsNull()) return "null";
    if (v.IsUndefined()) return "undefined";
    if (v.IsTypedArray()) return "another typed array";
    if (v.IsNumber()) return "a number";
    if (v.IsBoolean()) return "a boolean";
    if (v.IsString()) return "a string";
    return "an object";
  }
  const Napi::CallbackInfo& info_;
  Napi::Env env_;
  std::string fn_;
};

// Elements a strided (B, T, C) view touches: off + (B-1)*bs + (T-1)*rs + C.
double strided_extent(double off, double bs, double rs, double B, double T, double C) {
  if (B == 0 || T == 0 || C == 0) return 0;
  return off + (B - 1) * bs + (T - 1) * rs + C;
}
// Elements a row-major (rows, cols) matrix with leading dimension ld touches.
double matrix_extent(double rows, double cols, double ld) {
  if (rows == 0 || cols == 0) return 0;
  return (rows - 1) * ld + cols;
}
// n-element product in double (see Args::need)
double prod(double a, double b, double c = 1, double d = 1) { return a * b * c * d; }

// ---- gemm ----------------------------------------------------------------------------------
// gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Args a(info, 13, "gemm");
  const bool ta = a.boolean(0, "transA"), tb = a.boolean(1, "transB");
  const int64_t M = a.integer(2, "M"), N = a.integer(3, "N"), K = a.integer(4, "K");
  const double alpha = a.number(5, "alpha");
  auto A = a.f32(6, "A");
  const int64_t lda = a.integer(7, "lda", 1);
  auto B = a.f32(8, "B");
  const int64_t ldb = a.integer(9, "ldb", 1);
  const double beta = a.number(10, "beta");
  auto Cm = a.f32(11, "C");
  const int64_t ldc = a.integer(12, "ldc", 1);
  const int64_t arows = ta ? K : M, acols = ta ? M : K;
  const int64_t brows = tb ? N : K, bcols = tb ? K : N;
  a.check(lda >= acols, "lda must be >= " + std::to_string(acols));
  a.check(ldb >= bcols, "ldb must be >= " + std::to_string(bcols));
  a.check(ldc >= N, "ldc must be >= N");
  a.need(A, matrix_extent(arows, acols, lda));
  a.need(B, matrix_extent(brows, bcols, ldb));
  a.need(Cm, matrix_extent(M, N, ldc));
  gemm(ta, tb, (int)M, (int)N, (int)K, (float)alpha, A.data, (int)lda, B.data, (int)ldb, (float)beta, Cm.data,
       (int)ldc);
  return a.env().Undefined();
}

Napi::Value GemmForcePortable(const Napi::CallbackInfo& info) {
  Args a(info, 1, "gemmForcePortable");
  return Napi::Boolean::New(a.env(), gemm_force_portable(a.boolean(0, "on")));
}

// forceBaselineClones(on): the element-wise kernels' baseline code instead of their AVX2 clones
// (vec_math.h; bit-identical by construction, which the tests check); returns the previous setting.
Napi::Value ForceBaselineClones(const Napi::CallbackInfo& info) {
  Args a(info, 1, "forceBaselineClones");
  return Napi::Boolean::New(a.env(), g_force_baseline_clones.exchange(a.boolean(0, "on")));
}

Napi::Value Avx2Clones(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), avx2_clones()); }

Napi::Value GemmBackend(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), gemm_backend());
}

// ---- encoder -------------------------------------------------------------------------------
// encoderForward(out, ids, pos|null, wte, wpe, B, T, C, pos0)
Napi::Value EncoderForward(const Napi::CallbackInfo& info) {
  Args a(info, 9, "encoderForward");
  auto out = a.f32(0, "out");
  auto ids = a.i32(1, "ids");
  auto pos = a.i32(2, "pos", true);
  auto wte = a.f32(3, "wte"), wpe = a.f32(4, "wpe");
  const int64_t B = a.integer(5, "B"), T = a.integer(6, "T"), C = a.integer(7, "C", 1);
  const int64_t pos0 = a.integer(8, "pos0");
  const int64_t V = wte.len / C, maxT = wpe.len / C;
  a.need(out, prod(B, T, C));
  a.need(ids, prod(B, T));
  a.need(pos, prod(B, T));
  a.range(ids, B * T, 0, V);
  if (pos.given) a.range(pos, B * T, 0, maxT);
  else a.check(T == 0 || pos0 + T <= maxT, "pos0 + T exceeds the rows of wpe");
  encoder_forward(out.data, ids.data, pos.data, wte.data, wpe.data, (int)B, (int)T, (int)C, (int)pos0);
  return a.env().Undefined();
}

// encoderBackward(dwte|null, dwpe|null, dout, ids, pos|null, B, T, C)
Napi::Value EncoderBackward(const Napi::CallbackInfo& info) {
  Args a(info, 8, "encoderBackward");
  auto dwte = a.f32(0, "dwte", true), dwpe = a.f32(1, "dwpe", true);
  auto dout = a.f32(2, "dout");
  auto ids = a.i32(3, "ids");
  auto pos = a.i32(4, "pos", true);
  const int64_t B = a.integer(5, "B"), T = a.integer(6, "T"), C = a.integer(7, "C", 1);
  a.need(dout, prod(B, T, C));
  a.need(ids, prod(B, T));
  a.need(pos, prod(B, T));
  if (dwte.given) a.range(ids, B * T, 0, dwte.len / C);
  if (dwpe.given) {
    if (pos.given) a.range(pos, B * T, 0, dwpe.len / C);
    else a.check(T <= dwpe.len / C, "T exceeds the rows of dwpe");
  }
  encoder_backward(dwte.data, dwpe.data, dout.data, ids.data, pos.data, (int)B, (int)T, (int)C);
  return a.env().Undefined();
}

// ---- layernorm -----------------------------------------------------------------------------
// layernormForward(out, mean|null, rstd|null, inp, weight, bias, N, C, eps)
Napi::Value LayernormForward(const Napi::CallbackInfo& info) {
  Args a(info, 9, "layernormForward");
  auto out = a.f32(0, "out");
  auto mean = a.f32(1, "mean", true), rstd = a.f32(2, "rstd", true);
  auto inp = a.f32(3, "inp"), w = a.f32(4, "weight"), b = a.f32(5, "bias");
  const int64_t N = a.integer(6, "N"), C = a.integer(7, "C", 1);
  const double eps = a.number(8, "eps");
  a.need(out, prod(N, C)); a.need(mean, N); a.need(rstd, N); a.need(inp, prod(N, C)); a.need(w, C); a.need(b, C);
  layernorm_forward(out.data, mean.data, rstd.data, inp.data, w.data, b.data, (int)N, (int)C, (float)eps);
  return a.env().Undefined();
}

// layernormBackward(dinp|null, dweight|null, dbias|null, dout, inp, weight, mean, rstd, N, C)
Napi::Value LayernormBackward(const Napi::CallbackInfo& info) {
  Args a(info, 10, "layernormBackward");
  auto dinp = a.f32(0, "dinp", true), dw = a.f32(1, "dweight", true), db = a.f32(2, "dbias", true);
  auto dout = a.f32(3, "dout"), inp = a.f32(4, "inp"), w = a.f32(5, "weight");
  auto mean = a.f32(6, "mean"), rstd = a.f32(7, "rstd");
  const int64_t N = a.integer(8, "N"), C = a.integer(9, "C", 1);
  a.need(dinp, prod(N, C)); a.need(dw, C); a.need(db, C); a.need(dout, prod(N, C)); a.need(inp, prod(N, C));
  a.need(w, C); a.need(mean, N); a.need(rstd, N);
  layernorm_backward(dinp.data, dw.data, db.data, dout.data, inp.data, w.data, mean.data, rstd.data, (int)N,
                     (int)C);
  return a.env().Undefined();
}

// ---- gelu ----------------------------------------------------------------------------------
// geluForward(out, inp, N)   (out may be inp)
Napi::Value GeluForward(const Napi::CallbackInfo& info) {
  Args a(info, 3, "geluForward");
  auto out = a.f32(0, "out"), inp = a.f32(1, "inp");
  const int64_t N = a.integer(2, "N", 0, kMaxLen);
  a.need(out, N); a.need(inp, N);
  gelu_forward(out.data, inp.data, N);
  return a.env().Undefined();
}

// geluBackward(dinp, inp, dout, N)   (dinp may be dout)
Napi::Value GeluBackward(const Napi::CallbackInfo& info) {
  Args a(info, 4, "geluBackward");
  auto dinp = a.f32(0, "dinp"), inp = a.f32(1, "inp"), dout = a.f32(2, "dout");
  const int64_t N = a.integer(3, "N", 0, kMaxLen);
  a.need(dinp, N); a.need(inp, N); a.need(dout, N);
  gelu_backward(dinp.data, inp.data, dout.data, N);
  return a.env().Undefined();
}

// ---- bias ----------------------------------------------------------------------------------
// biasForward(out, bias, N, C)
Napi::Value BiasForward(const Napi::CallbackInfo& info) {
  Args a(info, 4, "biasForward");
  auto out = a.f32(0, "out"), bias = a.f32(1, "bias");
  const int64_t N = a.integer(2, "N"), C = a.integer(3, "C");
  a.need(out, prod(N, C)); a.need(bias, C);
  bias_forward(out.data, bias.data, (int)N, (int)C);
  return a.env().Undefined();
}

// biasBackward(dbias, dout, N, C)
Napi::Value BiasBackward(const Napi::CallbackInfo& info) {
  Args a(info, 4, "biasBackward");
  auto dbias = a.f32(0, "dbias"), dout = a.f32(1, "dout");
  const int64_t N = a.integer(2, "N"), C = a.integer(3, "C");
  a.need(dbias, C); a.need(dout, prod(N, C));
  bias_backward(dbias.data, dout.data, (int)N, (int)C);
  return a.env().Undefined();
}

// ---- attention -----------------------------------------------------------------------------
// attentionForward(out, att|null, q, qOffset, qBs, qRs, k, kOffset, kBs, kRs, v, vOffset, vBs, vRs,
//                  mask|null, B, Tq, Tk, C, NH, qOff)
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Args a(info, 21, "attentionForward");
  auto out = a.f32(0, "out"), att = a.f32(1, "att", true);
  auto q = a.f32(2, "q");
  const int64_t qo = a.integer(3, "qOffset", 0, kMaxStride), qbs = a.integer(4, "qBs", 0, kMaxStride),
                qrs = a.integer(5, "qRs", 0, kMaxStride);
  auto k = a.f32(6, "k");
  const int64_t ko = a.integer(7, "kOffset", 0, kMaxStride), kbs = a.integer(8, "kBs", 0, kMaxStride),
                krs = a.integer(9, "kRs", 0, kMaxStride);
  auto v = a.f32(10, "v");
  const int64_t vo = a.integer(11, "vOffset", 0, kMaxStride), vbs = a.integer(12, "vBs", 0, kMaxStride),
                vrs = a.integer(13, "vRs", 0, kMaxStride);
  auto mask = a.i32(14, "mask", true);
  const int64_t B = a.integer(15, "B"), Tq = a.integer(16, "Tq"), Tk = a.integer(17, "Tk");
  const int64_t C = a.integer(18, "C", 1), NH = a.integer(19, "NH", 1), qoff = a.integer(20, "qOff");
  a.check(C % NH == 0, "C must be a multiple of NH");
  a.need(out, prod(B, Tq, C));
  a.need(att, prod(B, NH, Tq, Tk));
  a.need(q, strided_extent(qo, qbs, qrs, B, Tq, C));
  a.need(k, strided_extent(ko, kbs, krs, B, Tk, C));
  a.need(v, strided_extent(vo, vbs, vrs, B, Tk, C));
  a.need(mask, prod(B, Tk));
  attention_forward(out.data, att.data, q.data + qo, qbs, qrs, k.data + ko, kbs, krs, v.data + vo, vbs, vrs,
                    mask.data, (int)B, (int)Tq, (int)Tk, (int)C, (int)NH, (int)qoff);
  return a.env().Undefined();
}

// attentionBackward(dqkv, dout, qkv, att, mask|null, B, T, C, NH)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a(info, 9, "attentionBackward");
  auto dqkv = a.f32(0, "dqkv"), dout = a.f32(1, "dout"), qkv = a.f32(2, "qkv"), att = a.f32(3, "att");
  auto mask = a.i32(4, "mask", true);
  const int64_t B = a.integer(5, "B"), T = a.integer(6, "T"), C = a.integer(7, "C", 1), NH = a.integer(8, "NH", 1);
  a.check(C % NH == 0, "C must be a multiple of NH");
  a.need(dqkv, prod(B, T, 3, C)); a.need(dout, prod(B, T, C)); a.need(qkv, prod(B, T, 3, C));
  a.need(att, prod(B, NH, T, T)); a.need(mask, prod(B, T));
  attention_backward(dqkv.data, dout.data, qkv.data, att.data, mask.data, (int)B, (int)T, (int)C, (int)NH);
  return a.env().Undefined();
}

// ---- crossentropy --------------------------------------------------------------------------
// crossentropyForward(losses, logits, targets, N, V) -> number of non-ignored rows
Napi::Value CrossentropyForward(const Napi::CallbackInfo& info) {
  Args a(info, 5, "crossentropyForward");
  auto losses = a.f32(0, "losses"), logits = a.f32(1, "logits");
  auto targets = a.i32(2, "targets");
  const int64_t N = a.integer(3, "N"), V = a.integer(4, "V", 1);
  a.need(losses, N); a.need(logits, prod(N, V)); a.need(targets, N);
  a.range(targets, N, 0, V, true);
  const int count = crossentropy_forward(losses.data, logits.data, targets.data, (int)N, (int)V);
  return Napi::Number::New(a.env(), count);
}

// crossentropyBackward(dlogits, logits, targets, scale, N, V)   (dlogits may be logits)
Napi::Value CrossentropyBackward(const Napi::CallbackInfo& info) {
  Args a(info, 6, "crossentropyBackward");
  auto dlogits = a.f32(0, "dlogits"), logits = a.f32(1, "logits");
  auto targets = a.i32(2, "targets");
  const double scale = a.number(3, "scale");
  const int64_t N = a.integer(4, "N"), V = a.integer(5, "V", 1);
  a.need(dlogits, prod(N, V)); a.need(logits, prod(N, V)); a.need(targets, N);
  a.range(targets, N, 0, V, true);
  crossentropy_backward(dlogits.data, logits.data, targets.data, (float)scale, (int)N, (int)V);
  return a.env().Undefined();
}

// ---- adam ----------------------------------------------------------------------------------
// adamwUpdate(param, grad, m, v, n, lr, beta1, beta2, eps, weightDecay, t)
Napi::Value AdamwUpdate(const Napi::CallbackInfo& info) {
  Args a(info, 11, "adamwUpdate");
  auto p = a.f32(0, "param"), g = a.f32(1, "grad"), m = a.f32(2, "m"), v = a.f32(3, "v");
  const int64_t n = a.integer(4, "n", 0, kMaxLen);
  const double lr = a.number(5, "lr"), b1 = a.number(6, "beta1"), b2 = a.number(7, "beta2");
  const double eps = a.number(8, "eps"), wd = a.number(9, "weightDecay");
  const int64_t t = a.integer(10, "t", 1);
  a.need(p, n); a.need(g, n); a.need(m, n); a.need(v, n);
  adamw_update(p.data, g.data, m.data, v.data, n, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, (int)t);
  return a.env().Undefined();
}

}  // namespace

void init_kernels(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Value (*f)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, f, name));
  };
  fn("gemm", Gemm);
  fn("gemmForcePortable", GemmForcePortable);
  fn("gemmBackend", GemmBackend);
  fn("forceBaselineClones", ForceBaselineClones);
  fn("avx2Clones", Avx2Clones);
  fn("encoderForward", EncoderForward);
  fn("encoderBackward", EncoderBackward);
  fn("layernormForward", LayernormForward);
  fn("layernormBackward", LayernormBackward);
  fn("geluForward", GeluForward);
  fn("geluBackward", GeluBackward);
  fn("biasForward", BiasForward);
  fn("biasBackward", BiasBackward);
  fn("attentionForward", AttentionForward);
  fn("attentionBackward", AttentionBackward);
  fn("crossentropyForward", CrossentropyForward);
  fn("crossentropyBackward", CrossentropyBackward);
  fn("adamwUpdate", AdamwUpdate);
}

}  // namespace testing
}  // namespace mend
