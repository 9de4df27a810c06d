// cuda_ops_test.cc — the CUDA backend against the CPU backend, op by op (ggml's test-backend-ops):
// every op of kernels/kernels.h, forward and backward, at odd sizes, on the same random inputs; the
// result is compared by normalised MSE, Σ(cuda − cpu)² / Σ cpu², with a tolerance per case, and the
// largest absolute difference is printed. "+=" outputs start from the same random values on both
// sides (so accumulation is checked), "=" outputs start as NaN on the device (so every element must
// be written). Built by CMake when NODE_MEND_CUDA is on (target mend_cuda_ops_test).
//   mend_cuda_ops_test [--filter SUBSTRING] [--skip SUBSTRING] [--bench]   (cases by name)
// Exit 0 when every case passes, 1 when any fails; "SKIP: no CUDA device (why)" and exit 0 where the
// runtime finds no GPU, so CI machines without one stay green but say so.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cuda/kernels_cuda.h"
#include "kernels/kernels.h"
#include "kernels/rng.h"
#include "model/gpt2.h"
#include "model/gpt2_cuda.h"
#include "mend/editor.h"
#include "mend/editor_cuda.h"

namespace {

using namespace mend;
using Vec = std::vector<float>;

int g_failed = 0, g_passed = 0;
const char* g_filter = nullptr;
const char* g_skip = nullptr;

// ---- device buffers ------------------------------------------------------------------------------

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    check(cuda::device_alloc(reinterpret_cast<void**>(&p), n * sizeof(T)), "alloc");
    check(cuda::copy_to_device(p, h.data(), n * sizeof(T)), "copy to device");
  }
  ~Dev() { cuda::device_free(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> host() const {
    std::vector<T> h(n);
    check(cuda::copy_to_host(h.data(), p, n * sizeof(T)), "copy to host");
    return h;
  }
  static void check(const Status& s, const char* what) {
    if (!s.ok()) {
      std::fprintf(stderr, "FATAL: %s: %s\n", what, s.message.c_str());
      std::exit(1);
    }
  }
};

Vec randn(Rng& rng, size_t n, float scale = 1.0f) {
  Vec v(n);
  for (auto& x : v) x = (float)(rng.normal() * scale);
  return v;
}
Vec nans(size_t n) { return Vec(n, std::numeric_limits<float>::quiet_NaN()); }

bool selected(const std::string& name) {
  return (!g_filter || name.find(g_filter) != std::string::npos) && (!g_skip || name.find(g_skip) == std::string::npos);
}

// Compares one output tensor; prints a line; counts it.
void expect(const std::string& name, const Vec& got, const Vec& want, double tol = 1e-7) {
  double num = 0, den = 0, maxd = 0;
  bool finite = got.size() == want.size();
  for (size_t i = 0; i < want.size() && finite; i++) {
    if (std::isnan(got[i]) != std::isnan(want[i])) { finite = false; break; }
    if (std::isnan(want[i])) continue;
    const double d = (double)got[i] - want[i];
    num += d * d;
    den += (double)want[i] * want[i];
    maxd = std::max(maxd, std::fabs(d));
  }
  const double nmse = den > 0 ? num / den : num;
  const bool ok = finite && nmse <= tol;
  std::printf("  %-58s nmse=%.2e max|diff|=%.2e %s\n", name.c_str(), nmse, maxd,
              ok ? "OK" : (finite ? "FAIL" : "FAIL (size or NaN mismatch)"));
  (ok ? g_passed : g_failed)++;
}
void expect_int(const std::string& name, long got, long want) {
  const bool ok = got == want;
  std::printf("  %-58s got=%ld want=%ld %s\n", name.c_str(), got, want, ok ? "OK" : "FAIL");
  (ok ? g_passed : g_failed)++;
}
template <typename T>
void expect_exact(const std::string& name, const std::vector<T>& got, const std::vector<T>& want) {
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); i++) bad += got[i] != want[i];
  const bool ok = got.size() == want.size() && bad == 0;
  std::printf("  %-58s %zu of %zu differ %s\n", name.c_str(), bad, want.size(), ok ? "OK" : "FAIL");
  (ok ? g_passed : g_failed)++;
}

void sync(const char* what) {
  const Status s = cuda::synchronize(what);
  if (!s.ok()) {
    std::printf("  %-58s %s FAIL\n", what, s.message.c_str());
    g_failed++;
  }
}

std::string sz(std::initializer_list<long> v) {
  std::string s;
  for (long x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return "(" + s + ")";
}

// ---- cases ---------------------------------------------------------------------------------------

void test_gemm(Rng& rng, bool use_cublas) {
  struct C { int M, N, K; };
  const C cases[] = {{1, 1, 1}, {17, 33, 45}, {64, 64, 64}, {130, 67, 259}, {5, 1003, 37}, {257, 3, 129}};
  const std::string which = use_cublas ? "gemm cublas " : "gemm ";
  for (const C& c : cases)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (float beta : {0.0f, 1.0f, 0.3f}) {
          const std::string name = which + sz({c.M, c.N, c.K}) + (ta ? " Aᵀ" : " A") + (tb ? " Bᵀ" : " B") +
                                   " beta=" + std::to_string(beta).substr(0, 3);
          if (!selected(name)) continue;
          const int lda = (ta ? c.M : c.K) + 3, ldb = (tb ? c.K : c.N) + 1, ldc = c.N + 2;
          const Vec A = randn(rng, (size_t)(ta ? c.K : c.M) * lda), B = randn(rng, (size_t)(tb ? c.N : c.K) * ldb);
          Vec Cc = beta == 0 ? nans((size_t)c.M * ldc) : randn(rng, (size_t)c.M * ldc);
          Dev<float> dA(A), dB(B), dC(Cc);
          gemm(ta, tb, c.M, c.N, c.K, 0.7f, A.data(), lda, B.data(), ldb, beta, Cc.data(), ldc);
          if (use_cublas) {
            if (!cuda::gemm_cublas(ta, tb, c.M, c.N, c.K, 0.7f, dA.p, lda, dB.p, ldb, beta, dC.p, ldc)) {
              std::printf("  %-58s cublasSgemm failed FAIL\n", name.c_str());
              g_failed++;
              continue;
            }
          } else {
            cuda::gemm_tiled(ta, tb, c.M, c.N, c.K, 0.7f, dA.p, lda, dB.p, ldb, beta, dC.p, ldc);
          }
          sync(name.c_str());
          // the padding columns of C are never written: compare them too (NaN == NaN there)
          expect(name, dC.host(), Cc);
        }
}

void test_encoder(Rng& rng) {
  const int B = 3, T = 13, C = 37, V = 11, maxT = 20;
  if (!selected("encoder")) return;
  std::vector<int32_t> ids(B * T), mask(B * T, 1);
  for (auto& i : ids) i = (int32_t)(rng.next() % V);
  for (int t = 0; t < 4; t++) mask[1 * T + t] = 0;  // left padding in row 1
  mask[2 * T + 5] = 0;                               // a hole in row 2
  std::vector<int32_t> pos(B * T), nreal(B);
  encoder_positions(pos.data(), nreal.data(), mask.data(), B, T);
  Dev<int32_t> dmask(mask), dpos(std::vector<int32_t>(B * T, -1)), dnreal(std::vector<int32_t>(B, -1)), dids(ids);
  cuda::encoder_positions(dpos.p, dnreal.p, dmask.p, B, T);
  sync("encoder_positions");
  expect_exact("encoder_positions pos " + sz({B, T}), dpos.host(), pos);
  expect_exact("encoder_positions n_real", dnreal.host(), nreal);
  const Vec wte = randn(rng, (size_t)V * C), wpe = randn(rng, (size_t)maxT * C);
  Dev<float> dwte(wte), dwpe(wpe);
  for (int with_pos = 0; with_pos < 2; with_pos++) {
    Vec out = nans((size_t)B * T * C);
    Dev<float> dout(out);
    encoder_forward(out.data(), ids.data(), with_pos ? pos.data() : nullptr, wte.data(), wpe.data(), B, T, C, with_pos ? 0 : 5);
    cuda::encoder_forward(dout.p, dids.p, with_pos ? dpos.p : nullptr, dwte.p, dwpe.p, B, T, C, with_pos ? 0 : 5);
    sync("encoder_forward");
    expect(std::string("encoder_forward ") + sz({B, T, C}) + (with_pos ? " pos" : " pos0=5"), dout.host(), out, 0);
    const Vec dy = randn(rng, (size_t)B * T * C);
    Vec gte = randn(rng, wte.size()), gpe = randn(rng, wpe.size());
    Dev<float> ddy(dy), dgte(gte), dgpe(gpe);
    encoder_backward(gte.data(), gpe.data(), dy.data(), ids.data(), with_pos ? pos.data() : nullptr, B, T, C);
    cuda::encoder_backward(dgte.p, dgpe.p, ddy.p, dids.p, with_pos ? dpos.p : nullptr, B, T, C);
    sync("encoder_backward");
    expect(std::string("encoder_backward dwte +=") + (with_pos ? " pos" : ""), dgte.host(), gte);
    expect(std::string("encoder_backward dwpe +=") + (with_pos ? " pos" : ""), dgpe.host(), gpe);
  }
}

void test_layernorm(Rng& rng) {
  for (int C : {1, 77, 1600}) {
    const int N = 7;
    const std::string name = "layernorm " + sz({N, C});
    if (!selected(name)) continue;
    Vec x = randn(rng, (size_t)N * C, 2.0f);
    for (auto& v : x) v += 0.5f;
    const Vec w = randn(rng, C), b = randn(rng, C), dy = randn(rng, (size_t)N * C);
    Vec out = nans(x.size()), mean(N), rstd(N);
    Dev<float> dx(x), dw(w), db(b), dout(out), dmean(nans(N)), drstd(nans(N)), ddy(dy);
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C, 1e-5f);
    cuda::layernorm_forward(dout.p, dmean.p, drstd.p, dx.p, dw.p, db.p, N, C, 1e-5f);
    sync("layernorm_forward");
    expect(name + " forward out", dout.host(), out);
    expect(name + " forward mean", dmean.host(), mean);
    expect(name + " forward rstd", drstd.host(), rstd);
    Vec gx = randn(rng, x.size()), gw = randn(rng, C), gb = randn(rng, C);
    Dev<float> dgx(gx), dgw(gw), dgb(gb);
    layernorm_backward(gx.data(), gw.data(), gb.data(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
    cuda::layernorm_backward(dgx.p, dgw.p, dgb.p, ddy.p, dx.p, dw.p, dmean.p, drstd.p, N, C);
    sync("layernorm_backward");
    expect(name + " backward dinp +=", dgx.host(), gx);
    expect(name + " backward dweight +=", dgw.host(), gw);
    expect(name + " backward dbias +=", dgb.host(), gb);
  }
}

void test_linear(Rng& rng) {
  const int M = 19, C = 45, OC = 131, V = 203;
  if (selected("linear")) {
    const Vec x = randn(rng, (size_t)M * C), w = randn(rng, (size_t)C * OC, 0.1f), b = randn(rng, OC), dy = randn(rng, (size_t)M * OC);
    Vec out = nans((size_t)M * OC);
    Dev<float> dx(x), dw(w), db(b), dout(out), ddy(dy);
    linear_forward(out.data(), x.data(), w.data(), b.data(), M, C, OC);
    cuda::linear_forward(dout.p, dx.p, dw.p, db.p, M, C, OC);
    sync("linear_forward");
    expect("linear_forward " + sz({M, C, OC}), dout.host(), out);
    Vec gx = nans(x.size()), gw = randn(rng, w.size()), gb = randn(rng, OC);
    Dev<float> dgx(gx), dgw(gw), dgb(gb);
    linear_backward(gx.data(), gw.data(), gb.data(), dy.data(), x.data(), w.data(), M, C, OC);
    cuda::linear_backward(dgx.p, dgw.p, dgb.p, ddy.p, dx.p, dw.p, M, C, OC);
    sync("linear_backward");
    expect("linear_backward dinp =", dgx.host(), gx);
    expect("linear_backward dweight +=", dgw.host(), gw);
    expect("linear_backward dbias +=", dgb.host(), gb);
  }
  if (selected("lm_head")) {
    const Vec x = randn(rng, (size_t)M * C), wte = randn(rng, (size_t)V * C, 0.1f), dl = randn(rng, (size_t)M * V);
    Vec logits = nans((size_t)M * V);
    Dev<float> dx(x), dwte(wte), dlog(logits), ddl(dl);
    lm_head_forward(logits.data(), x.data(), wte.data(), M, C, V);
    cuda::lm_head_forward(dlog.p, dx.p, dwte.p, M, C, V);
    sync("lm_head_forward");
    expect("lm_head_forward " + sz({M, C, V}), dlog.host(), logits);
    Vec gx = nans(x.size()), gw = randn(rng, wte.size());
    Dev<float> dgx(gx), dgw(gw);
    lm_head_backward(gx.data(), gw.data(), dl.data(), x.data(), wte.data(), M, C, V);
    cuda::lm_head_backward(dgx.p, dgw.p, ddl.p, dx.p, dwte.p, M, C, V);
    sync("lm_head_backward");
    expect("lm_head_backward dinp =", dgx.host(), gx);
    expect("lm_head_backward dwte +=", dgw.host(), gw);
  }
  for (int R : {1, 5, 37}) {
    const std::string name = "lowrank (overlay) " + sz({M, C, OC, R});
    if (!selected(name)) continue;
    const Vec x = randn(rng, (size_t)M * C), a = randn(rng, (size_t)R * C), b = randn(rng, (size_t)R * OC), dy = randn(rng, (size_t)M * OC);
    Vec out = randn(rng, (size_t)M * OC), gx = randn(rng, x.size());
    Dev<float> dx(x), da(a), db(b), dout(out), ddy(dy), dgx(gx);
    lowrank_forward(out.data(), x.data(), a.data(), b.data(), M, C, OC, R);
    cuda::lowrank_forward(dout.p, dx.p, da.p, db.p, M, C, OC, R);
    lowrank_backward(gx.data(), dy.data(), a.data(), b.data(), M, C, OC, R);
    cuda::lowrank_backward(dgx.p, ddy.p, da.p, db.p, M, C, OC, R);
    sync("lowrank");
    expect(name + " forward out +=", dout.host(), out);
    expect(name + " backward dinp +=", dgx.host(), gx);
  }
}

void test_elementwise(Rng& rng) {
  const int64_t N = 100003;
  if (selected("residual")) {
    const Vec a = randn(rng, N), b = randn(rng, N);
    Vec out = nans(N);
    Dev<float> da(a), db(b), dout(out);
    residual_forward(out.data(), a.data(), b.data(), N);
    cuda::residual_forward(dout.p, da.p, db.p, N);
    cuda::residual_forward(da.p, da.p, db.p, N);  // aliased
    sync("residual_forward");
    expect("residual_forward " + sz({(long)N}), dout.host(), out, 0);
    expect("residual_forward out aliasing inp1", da.host(), out, 0);
  }
  if (selected("gelu")) {
    const Vec x = randn(rng, N, 3.0f), dy = randn(rng, N);
    Vec out = nans(N), gx = nans(N);
    Dev<float> dx(x), ddy(dy), dout(out), dgx(gx);
    gelu_forward(out.data(), x.data(), N);
    gelu_backward(gx.data(), x.data(), dy.data(), N);
    cuda::gelu_forward(dout.p, dx.p, N);
    cuda::gelu_backward(dgx.p, dx.p, ddy.p, N);
    sync("gelu");
    expect("gelu_forward " + sz({(long)N}), dout.host(), out);
    expect("gelu_backward dinp =", dgx.host(), gx);
  }
  if (selected("bias")) {
    const int R = 301, C = 77;
    const Vec b = randn(rng, C), dy = randn(rng, (size_t)R * C);
    Vec out = randn(rng, (size_t)R * C), gb = randn(rng, C);
    Dev<float> db(b), ddy(dy), dout(out), dgb(gb);
    bias_forward(out.data(), b.data(), R, C);
    bias_backward(gb.data(), dy.data(), R, C);
    cuda::bias_forward(dout.p, db.p, R, C);
    cuda::bias_backward(dgb.p, ddy.p, R, C);
    sync("bias");
    expect("bias_forward out += " + sz({R, C}), dout.host(), out, 0);
    expect("bias_backward dbias +=", dgb.host(), gb);
  }
  if (selected("adamw")) {
    const int64_t n = 10007;
    for (float wd : {0.0f, 0.01f}) {
      Vec p = randn(rng, n), g = randn(rng, n), m = randn(rng, n, 0.1f), v(n);
      for (auto& x : v) x = (float)std::fabs(rng.normal());
      Dev<float> dp(p), dg(g), dm(m), dv(v);
      adamw_update(p.data(), g.data(), m.data(), v.data(), n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, 7);
      cuda::adamw_update(dp.p, dg.p, dm.p, dv.p, n, 1e-3f, 0.9f, 0.999f, 1e-8f, wd, 7);
      sync("adamw_update");
      const std::string w = " wd=" + std::to_string(wd).substr(0, 4);
      expect("adamw_update param" + w, dp.host(), p);
      expect("adamw_update m" + w, dm.host(), m);
      expect("adamw_update v" + w, dv.host(), v);
    }
  }
}

// attention over packed qkv (B,T,3C), the model's layout
void test_attention(Rng& rng) {
  struct A { int B, T, C, NH; bool mask; };
  const A cases[] = {{2, 37, 48, 3, true}, {1, 1, 16, 2, false}, {3, 130, 64, 4, true}, {1, 1024, 128, 2, false}};
  for (const A& c : cases) {
    const std::string name = "attention " + sz({c.B, c.T, c.C, c.NH}) + (c.mask ? " mask" : "");
    if (!selected(name)) continue;
    const int64_t C3 = 3 * (int64_t)c.C;
    const Vec qkv = randn(rng, (size_t)c.B * c.T * C3), dy = randn(rng, (size_t)c.B * c.T * c.C);
    std::vector<int32_t> mask(c.B * c.T, 1);
    if (c.mask) {
      for (int t = 0; t < c.T / 3; t++) mask[t] = 0;  // row 0: left padding (its first queries see no key)
      if (c.B > 1) mask[1 * c.T + c.T / 2] = 0;       // row 1: a hole
    }
    const int32_t* m = c.mask ? mask.data() : nullptr;
    Vec out = nans((size_t)c.B * c.T * c.C), att = nans((size_t)c.B * c.NH * c.T * c.T);
    Dev<float> dqkv_in(qkv), ddy(dy), dout(out), datt(att);
    Dev<int32_t> dmask(mask);
    const int64_t bs = c.T * C3;
    attention_forward(out.data(), att.data(), qkv.data(), bs, C3, qkv.data() + c.C, bs, C3, qkv.data() + 2 * c.C, bs, C3, m,
                      c.B, c.T, c.T, c.C, c.NH, 0);
    cuda::attention_forward(dout.p, datt.p, dqkv_in.p, bs, C3, dqkv_in.p + c.C, bs, C3, dqkv_in.p + 2 * c.C, bs, C3,
                            c.mask ? dmask.p : nullptr, c.B, c.T, c.T, c.C, c.NH, 0);
    sync("attention_forward");
    expect(name + " forward out =", dout.host(), out);
    expect(name + " forward att =", datt.host(), att);
    Vec g = nans(qkv.size());
    Dev<float> dg(g);
    attention_backward(g.data(), dy.data(), qkv.data(), att.data(), m, c.B, c.T, c.C, c.NH);
    cuda::attention_backward(dg.p, ddy.p, dqkv_in.p, datt.p, c.mask ? dmask.p : nullptr, c.B, c.T, c.C, c.NH);
    sync("attention_backward");
    expect(name + " backward dqkv =", dg.host(), g);
  }
  // the KV-cache step: a few queries at q_off against a separate cache (B, maxT, C) with its own strides
  if (selected("attention kv-cache")) {
    const int B = 2, Tq = 3, Tk = 21, C = 48, NH = 4, q_off = 18, maxT = 32;
    const Vec q = randn(rng, (size_t)B * Tq * C), kc = randn(rng, (size_t)B * maxT * C), vc = randn(rng, (size_t)B * maxT * C);
    std::vector<int32_t> mask(B * Tk, 1);
    mask[0] = mask[1] = 0;
    Vec out = nans((size_t)B * Tq * C), att = nans((size_t)B * NH * Tq * Tk);
    Dev<float> dq(q), dk(kc), dv(vc), dout(out), datt(att);
    Dev<int32_t> dmask(mask);
    attention_forward(out.data(), att.data(), q.data(), Tq * C, C, kc.data(), maxT * C, C, vc.data(), maxT * C, C,
                      mask.data(), B, Tq, Tk, C, NH, q_off);
    cuda::attention_forward(dout.p, datt.p, dq.p, Tq * C, C, dk.p, maxT * C, C, dv.p, maxT * C, C, dmask.p, B, Tq, Tk,
                            C, NH, q_off);
    sync("attention_forward kv-cache");
    expect("attention kv-cache " + sz({B, Tq, Tk, C, NH}) + " q_off=18 out", dout.host(), out);
    expect("attention kv-cache att", datt.host(), att);
  }
  // long keys: 20000 scores per row need more than the default 48 KB of shared memory
  if (selected("attention long-kv")) {
    const int B = 1, Tq = 2, Tk = 20000, C = 32, NH = 2, q_off = Tk - Tq;
    const Vec q = randn(rng, (size_t)B * Tq * C), kc = randn(rng, (size_t)B * Tk * C), vc = randn(rng, (size_t)B * Tk * C);
    Vec out = nans((size_t)B * Tq * C), att = nans((size_t)B * NH * Tq * Tk);
    Dev<float> dq(q), dk(kc), dv(vc), dout(out), datt(att);
    attention_forward(out.data(), att.data(), q.data(), Tq * C, C, kc.data(), Tk * C, C, vc.data(), Tk * C, C, nullptr, B,
                      Tq, Tk, C, NH, q_off);
    cuda::attention_forward(dout.p, datt.p, dq.p, Tq * C, C, dk.p, Tk * C, C, dv.p, Tk * C, C, nullptr, B, Tq, Tk, C, NH,
                            q_off);
    sync("attention_forward long-kv");
    expect("attention long-kv " + sz({B, Tq, Tk, C, NH}) + " out", dout.host(), out);
    expect("attention long-kv att", datt.host(), att);
  }
}

void test_losses(Rng& rng) {
  const int N = 6, V = 50257;
  std::vector<int32_t> tg(N);
  for (auto& t : tg) t = (int32_t)(rng.next() % V);
  tg[2] = -100;
  tg[4] = V;  // out of range: ignored, as on the CPU
  const Vec logits = randn(rng, (size_t)N * V, 3.0f), target = randn(rng, (size_t)N * V, 3.0f);
  Dev<float> dlog(logits), dtarget(target);
  Dev<int32_t> dtg(tg);
  if (selected("crossentropy")) {
    Vec losses = nans(N);
    Dev<float> dl(losses);
    const int n = crossentropy_forward(losses.data(), logits.data(), tg.data(), N, V);
    const int dn = cuda::crossentropy_forward(dl.p, dlog.p, dtg.p, N, V);
    sync("crossentropy_forward");
    expect_int("crossentropy_forward count " + sz({N, V}), dn, n);
    expect("crossentropy_forward losses =", dl.host(), losses);
    Vec g = nans(logits.size());
    Dev<float> dg(g), dinplace(logits);
    crossentropy_backward(g.data(), logits.data(), tg.data(), 0.25f, N, V);
    cuda::crossentropy_backward(dg.p, dlog.p, dtg.p, 0.25f, N, V);
    cuda::crossentropy_backward(dinplace.p, dinplace.p, dtg.p, 0.25f, N, V);
    sync("crossentropy_backward");
    expect("crossentropy_backward dlogits =", dg.host(), g);
    expect("crossentropy_backward in place", dinplace.host(), g);
  }
  if (selected("kl")) {
    std::vector<int32_t> mask = {1, 0, 1, 1, 0, 1};
    Dev<int32_t> dmask(mask);
    for (int masked = 0; masked < 2; masked++) {
      float loss = NAN;
      std::vector<double> lse(2 * N, 0.0);
      Dev<float> dloss(Vec(1, NAN));
      Dev<double> dlse(lse);
      const int32_t* m = masked ? mask.data() : nullptr;
      const int n = kl_forward(&loss, lse.data(), logits.data(), target.data(), m, N, V);
      const int dn = cuda::kl_forward(dloss.p, dlse.p, dlog.p, dtarget.p, masked ? dmask.p : nullptr, N, V);
      sync("kl_forward");
      const std::string w = masked ? " mask" : "";
      expect_int("kl_forward count" + w, dn, n);
      expect("kl_forward loss" + w, dloss.host(), Vec{loss});
      const std::vector<double> glse = dlse.host();
      Vec a(glse.begin(), glse.end()), b(lse.begin(), lse.end());
      if (masked) for (int i = 0; i < N; i++) if (!mask[i]) a[2 * i] = b[2 * i] = a[2 * i + 1] = b[2 * i + 1] = 0;
      expect("kl_forward lse" + w, a, b);
      Vec g = nans(logits.size());
      Dev<float> dg(g);
      kl_backward(g.data(), logits.data(), target.data(), lse.data(), m, n, N, V);
      cuda::kl_backward(dg.p, dlog.p, dtarget.p, dlse.p, masked ? dmask.p : nullptr, dn, N, V);
      sync("kl_backward");
      expect("kl_backward dlogits =" + w, dg.host(), g);
    }
  }
}

void test_mend_layer(Rng& rng) {
  const int Ns = 29, D = 3 + 5, n_modes = 2;
  for (int D_ : {D, 2307}) {
    for (int clamp = 0; clamp < 2; clamp++) {
      const std::string name = "mend_layer " + sz({Ns, D_}) + (clamp ? " clamp" : " identity");
      if (!selected(name)) continue;
      const Vec bias = randn(rng, D_), scale = randn(rng, (size_t)n_modes * D_), shift = randn(rng, (size_t)n_modes * D_),
                dz = randn(rng, (size_t)Ns * D_);
      std::vector<int32_t> mode(Ns);
      for (auto& m : mode) m = (int32_t)(rng.next() % n_modes);
      Vec z = randn(rng, (size_t)Ns * D_), p = randn(rng, (size_t)Ns * D_);
      Dev<float> dbias_(bias), dscale(scale), dshift(shift), dz_(z), dp_(p), ddz(dz);
      Dev<int32_t> dmode(mode);
      mend_layer_forward(z.data(), p.data(), bias.data(), scale.data(), shift.data(), mode.data(), Ns, D_, clamp);
      cuda::mend_layer_forward(dz_.p, dp_.p, dbias_.p, dscale.p, dshift.p, dmode.p, Ns, D_, clamp);
      sync("mend_layer_forward");
      expect(name + " forward z +=", dz_.host(), z);
      expect(name + " forward p = p + bias", dp_.host(), p, 0);
      Vec gp = nans(p.size()), gb = randn(rng, D_), gsc = randn(rng, scale.size()), gsh = randn(rng, shift.size());
      Dev<float> dgp(gp), dgb(gb), dgsc(gsc), dgsh(gsh);
      mend_layer_backward(gp.data(), gb.data(), gsc.data(), gsh.data(), dz.data(), p.data(), scale.data(), shift.data(),
                          mode.data(), Ns, D_, clamp);
      cuda::mend_layer_backward(dgp.p, dgb.p, dgsc.p, dgsh.p, ddz.p, dp_.p, dscale.p, dshift.p, dmode.p, Ns, D_, clamp);
      sync("mend_layer_backward");
      expect(name + " backward dp =", dgp.host(), gp);
      expect(name + " backward dbias +=", dgb.host(), gb);
      expect(name + " backward dscale +=", dgsc.host(), gsc);
      expect(name + " backward dshift +=", dgsh.host(), gsh);
    }
  }
}

void test_sampling(Rng& rng) {
  if (!selected("sampling")) return;
  const int B = 4, V = 50257, T = 9;
  Vec logits = randn(rng, (size_t)B * V);
  logits[(size_t)2 * V + 77] = logits[(size_t)2 * V + 78] = 100.f;  // a tie: the first maximum wins
  std::vector<uint8_t> done = {0, 1, 0, 0};
  std::vector<int32_t> ids(B * T), mask(B * T, 1);
  for (auto& i : ids) i = (int32_t)(rng.next() % 20);
  mask[3] = 0;
  Dev<float> dlog(logits);
  Dev<uint8_t> ddone(done);
  Dev<int32_t> dids(ids), dmask(mask);
  std::vector<int32_t> out(B, -7);
  Dev<int32_t> dout(out);
  sample_forward(out.data(), logits.data(), done.data(), B, V, 0.0f, 0, 1.0f, nullptr);
  cuda::sample_forward(dout.p, dlog.p, ddone.p, B, V, 0.0f, 0, 1.0f, nullptr);
  sync("sample_forward greedy");
  expect_exact("sample_forward greedy (argmax, done rows untouched)", dout.host(), out);
  Rng r1(5), r2(5);
  std::vector<int32_t> o1(B, -7);
  Dev<int32_t> do1(o1);
  sample_forward(o1.data(), logits.data(), done.data(), B, V, 0.8f, 50, 0.9f, &r1);
  cuda::sample_forward(do1.p, dlog.p, ddone.p, B, V, 0.8f, 50, 0.9f, &r2);
  sync("sample_forward draw");
  expect_exact("sample_forward draw (same seed, same tokens)", do1.host(), o1);
  repetition_penalty_forward(logits.data(), ids.data(), mask.data(), B, T, T, V, 1.3f);
  cuda::repetition_penalty_forward(dlog.p, dids.p, dmask.p, B, T, T, V, 1.3f);
  sync("repetition_penalty_forward");
  expect("repetition_penalty_forward logits", dlog.host(), logits, 0);
}

// The whole forward: GPT2Model::forward (CPU) against CudaGPT2::forward on the same random model and a
// padded batch with labels: logits where the mask is 1 (padding queries see no key on both, but
// compare them too: both give output 0 there) and the loss.
void test_model(Rng& rng) {
  if (!selected("model")) return;
  GPT2Config cfg;
  cfg.n_layer = 3; cfg.n_head = 3; cfg.n_embd = 96; cfg.n_inner = 200; cfg.vocab_size = 1001; cfg.n_positions = 40;
  cfg.layer_norm_eps = 1e-6f;
  std::shared_ptr<GPT2Model> m;
  Status s = GPT2Model::random(cfg, 7, &m);
  std::unique_ptr<cuda::CudaGPT2> g;
  if (s.ok()) s = cuda::CudaGPT2::upload(*m, &g);
  if (!s.ok()) {
    std::printf("  %-58s %s FAIL\n", "model upload", s.message.c_str());
    g_failed++;
    return;
  }
  const int B = 3, T = 17;
  std::vector<int32_t> ids(B * T), mask(B * T, 1), labels(B * T);
  for (auto& i : ids) i = (int32_t)(rng.next() % cfg.vocab_size);
  for (int t = 0; t < 4; t++) mask[1 * T + t] = 0;          // row 1: left padding
  for (int t = T - 3; t < T; t++) mask[2 * T + t] = 0;      // row 2: right padding
  for (int i = 0; i < B * T; i++) labels[i] = mask[i] ? ids[i] : -100;
  Batch b;
  b.ids = ids.data(); b.mask = mask.data(); b.labels = labels.data(); b.B = B; b.T = T;
  ForwardResult cpu, gpu;
  s = m->forward(b, ForwardOptions{}, nullptr, &cpu);
  if (s.ok()) s = g->forward(b, &gpu);
  if (!s.ok()) {
    std::printf("  %-58s %s FAIL\n", "model forward", s.message.c_str());
    g_failed++;
    return;
  }
  const std::string name = "model gpt2 forward " + sz({cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size}) + " B,T=" + sz({B, T});
  expect(name + " logits", Vec(gpu.logits.begin(), gpu.logits.end()), Vec(cpu.logits.begin(), cpu.logits.end()));
  expect(name + " loss", Vec{gpu.loss}, Vec{cpu.loss});
  expect_int(name + " targets", gpu.n_targets, cpu.n_targets);
}

// The editor network (one GradientTransform, two LRLinear layers, two modes): transform_forward and
// transform_backward on the device against mend/editor.cc's on the CPU.
void test_editor(Rng& rng) {
  for (int relu = 0; relu < 2; relu++) {
    const std::string name = std::string("editor transform (37,23) rank 11, 2 modes") + (relu ? " clamp" : " identity");
    if (!selected(name)) continue;
    GradientTransform g;
    g.d_in = 37; g.d_out = 23; g.rank = 11; g.n_modes = 2;
    const int D = g.D(), Ns = 19;
    for (int j = 0; j < 2; j++) {
      MendLayer L;
      L.u = randn(rng, (size_t)D * g.rank, 0.3f);  // nonzero, so the layers do something
      L.v = randn(rng, (size_t)g.rank * D);
      L.bias = randn(rng, D, 0.1f);
      L.scale = randn(rng, (size_t)g.n_modes * D);
      L.shift = randn(rng, (size_t)g.n_modes * D, 0.1f);
      L.relu = relu;
      g.layers.push_back(L);
    }
    std::vector<int> mode(Ns);
    for (auto& m : mode) m = (int)(rng.next() % g.n_modes);
    Vec z = randn(rng, (size_t)Ns * D), dz = randn(rng, (size_t)Ns * D);
    std::unique_ptr<cuda::DeviceTransform> dg, dgrad;
    Status s = cuda::DeviceTransform::upload(g, &dg);
    if (s.ok()) s = cuda::DeviceTransform::zeros(g, &dgrad);
    Dev<float> dz_(z), ddz(dz);
    Dev<int32_t> dmode(std::vector<int32_t>(mode.begin(), mode.end()));
    std::vector<std::unique_ptr<cuda::DeviceLayerActs>> dacts;
    if (s.ok()) s = cuda::transform_forward(*dg, dz_.p, dmode.p, Ns, &dacts);
    std::vector<LayerActs> acts;
    transform_forward(g, z.data(), mode.data(), Ns, &acts);
    if (s.ok()) s = cuda::transform_backward(*dg, ddz.p, dmode.p, Ns, dacts, dgrad.get());
    std::vector<MendGrads::Layer> gl(2), dgl;
    for (int j = 0; j < 2; j++)
      gl[j] = {Vec(g.layers[j].u.size()), Vec(g.layers[j].v.size()), Vec(D), Vec(g.layers[j].scale.size()), Vec(g.layers[j].shift.size())};
    transform_backward(g, dz.data(), mode.data(), Ns, acts, &gl);
    if (s.ok()) s = dgrad->download(&dgl);
    if (!s.ok()) {
      std::printf("  %-58s %s FAIL\n", name.c_str(), s.message.c_str());
      g_failed++;
      continue;
    }
    expect(name + " forward z", dz_.host(), z);
    expect(name + " backward dz", ddz.host(), dz);
    const char* names[5] = {"u", "v", "bias", "mode_scale", "mode_shift"};
    for (int j = 0; j < 2; j++) {
      const Vec* want[5] = {&gl[j].u, &gl[j].v, &gl[j].bias, &gl[j].scale, &gl[j].shift};
      const Vec* got[5] = {&dgl[j].u, &dgl[j].v, &dgl[j].bias, &dgl[j].scale, &dgl[j].shift};
      for (int i = 0; i < 5; i++) expect(name + " grad layers." + std::to_string(j) + "." + names[i], *got[i], *want[i]);
    }
  }
}

// GEMM rate at GPT-2 shapes (not a test: a line to read next to cuBLAS/torch on the device)
void bench_gemm(bool have_cublas) {
  struct S { int M, N, K; const char* what; };
  const S shapes[] = {{1024, 3072, 768, "c_fc gpt2 B8T128"}, {1024, 50257, 768, "lm_head gpt2 B8T128"},
                      {16, 6400, 1600, "c_fc gpt2-xl B1T16"}, {4096, 4096, 4096, "square 4096"}};
  for (const S& s : shapes) {
    Rng rng(1);
    Dev<float> A(randn(rng, (size_t)s.M * s.K)), B(randn(rng, (size_t)s.K * s.N)), C(Vec((size_t)s.M * s.N));
    for (int cb = 0; cb < (have_cublas ? 2 : 1); cb++) {
      auto run = [&] {
        if (cb) cuda::gemm_cublas(false, false, s.M, s.N, s.K, 1.f, A.p, s.K, B.p, s.N, 0.f, C.p, s.N);
        else cuda::gemm_tiled(false, false, s.M, s.N, s.K, 1.f, A.p, s.K, B.p, s.N, 0.f, C.p, s.N);
      };
      run();
      sync("bench warm-up");
      const int reps = 10;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; i++) run();
      sync("bench");
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
      std::printf("  bench gemm %-6s %-22s %5d x %5d x %5d  %8.3f ms  %7.1f GFLOP/s\n", cb ? "cublas" : "tiled", s.what,
                  s.M, s.N, s.K, sec * 1e3, 2.0 * s.M * s.N * s.K / sec / 1e9);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool bench = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) g_filter = argv[++i];
    else if (!std::strcmp(argv[i], "--skip") && i + 1 < argc) g_skip = argv[++i];
    else if (!std::strcmp(argv[i], "--bench")) bench = true;
  }
  std::string why;
  if (!cuda::device_available(&why)) {
    std::printf("SKIP: no CUDA device (%s)\n", why.c_str());
    return 0;
  }
  std::printf("CUDA ops vs CPU ops on %s; gemm (the other ops): %s vs %s\n", cuda::device_description().c_str(), cuda::gemm_backend(),
              gemm_backend());
  Rng rng(42);
  test_gemm(rng, false);
  std::string no_cublas;
  const bool have_cublas = cuda::cublas_available(&no_cublas);
  if (have_cublas) test_gemm(rng, true);
  else std::printf("  cuBLAS cases skipped: %s\n", no_cublas.c_str());
  test_encoder(rng);
  test_layernorm(rng);
  test_linear(rng);
  test_elementwise(rng);
  test_attention(rng);
  test_losses(rng);
  test_mend_layer(rng);
  test_sampling(rng);
  test_model(rng);
  test_editor(rng);
  if (bench) bench_gemm(have_cublas);
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
