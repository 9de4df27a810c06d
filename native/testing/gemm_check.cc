// gemm_check.cc — see gemm_check.h.
#include "testing/gemm_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "core/threadpool.h"
#include "kernels/kernels.h"

namespace mend {
namespace {

struct Case {
  bool ta, tb;
  int M, N, K, lda, ldb, ldc;
  float alpha, beta;
  bool packed = false;  // B through gemm_packed (a PackedMatrix of B, or of Bᵀ's storage when tb)
};

Case make(bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad) {
  Case c{ta, tb, M, N, K, 0, 0, 0, alpha, beta, false};
  c.lda = std::max(1, (ta ? M : K) + pad);
  c.ldb = std::max(1, (tb ? K : N) + pad);
  c.ldc = std::max(1, N + pad);
  return c;
}

const float kAlphas[] = {1.0f, -0.5f, 2.5f};
const float kBetas[] = {0.0f, 1.0f, 0.7f};

class Checker {
 public:
  Checker(int section, GemmCheckReport* r) : rng_(12345 + section), r_(r) {}
  float urand() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng_); }
  std::vector<float> urand_vec(size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = urand();
    return v;
  }
  int pick() { return std::uniform_int_distribution<int>(0, 1 << 30)(rng_); }

  // One case on every backend and thread count asked for, against one float64 reference.
  void check(const Case& c, const std::vector<int>& thread_counts) {
    const int arows = c.ta ? c.K : c.M, brows = c.tb ? c.N : c.K;
    std::vector<float> A((size_t)std::max(arows, 1) * c.lda), B((size_t)std::max(brows, 1) * c.ldb);
    std::vector<float> C0((size_t)std::max(c.M, 1) * c.ldc);
    for (auto& x : A) x = urand();
    for (auto& x : B) x = urand();
    for (int i = 0; i < c.M; i++)
      for (int j = 0; j < c.ldc; j++) C0[(size_t)i * c.ldc + j] = (c.beta == 0.0f && j < c.N) ? NAN : urand();
    std::vector<double> ref(C0.size()), bound(C0.size());
    for (int i = 0; i < c.M; i++)
      for (int j = 0; j < c.N; j++) {
        double s = 0, sa = 0;
        for (int k = 0; k < c.K; k++) {
          const double a = c.ta ? A[(size_t)k * c.lda + i] : A[(size_t)i * c.lda + k];
          const double b = c.tb ? B[(size_t)j * c.ldb + k] : B[(size_t)k * c.ldb + j];
          s += a * b;
          sa += std::fabs(a * b);
        }
        const size_t idx = (size_t)i * c.ldc + j;
        const double c0 = c.beta == 0.0f ? 0.0 : (double)C0[idx];
        ref[idx] = c.alpha * s + c.beta * c0;
        bound[idx] = std::fabs(c.alpha) * sa + std::fabs(c.beta * c0) + 1e-7 * std::fabs(ref[idx]);
      }
    // Every backend this CPU has: the native one (AVX-512 where present), AVX2 under it, portable.
    const bool avx2_before = gemm_force_avx2(false);
    std::string native;
    for (int backend = 0; backend < 3; backend++) {
      gemm_force_portable(backend == 2);
      gemm_force_avx2(backend == 1);
      if (backend == 0) native = gemm_backend();
      if (backend == 1 && native == gemm_backend()) continue;  // no AVX-512: AVX2 is the native one
      for (int nt : thread_counts) {
        set_num_threads(nt);
        run(c, A, B, C0, ref, bound, nt);
      }
    }
    gemm_force_avx2(avx2_before);
    gemm_force_portable(false);
  }

  void count(bool ok, const std::string& what) {
    r_->runs++;
    if (!ok) fail(what);
  }

 private:
  void run(const Case& c, const std::vector<float>& A, const std::vector<float>& B, const std::vector<float>& C0,
           const std::vector<double>& ref, const std::vector<double>& bound, int threads) {
    std::vector<float> C = C0;
    if (c.packed) {
      // W = B as stored (K x N, or N x K when tb), made contiguous, then packed (zero strip padding).
      const int wr = c.tb ? c.N : c.K, wc = c.tb ? c.K : c.N;
      std::vector<float> W((size_t)wr * wc), P(packed_floats(wr, wc) + 1);
      for (int i = 0; i < wr; i++)
        for (int j = 0; j < wc; j++) W[(size_t)i * wc + j] = B[(size_t)i * c.ldb + j];
      pack_matrix(W.data(), wr, wc, P.data());
      gemm_packed(c.ta, c.tb, c.M, c.alpha, A.data(), c.lda, PackedMatrix{P.data(), wr, wc}, c.beta, C.data(), c.ldc);
      // unpack_matrix gives W back exactly.
      std::vector<float> U((size_t)wr * wc);
      unpack_matrix(PackedMatrix{P.data(), wr, wc}, U.data());
      if (U != W) { fail("unpack_matrix(pack_matrix(W)) != W"); return; }
      // The fused epilogue (bias, then GELU into a second matrix) gives bit for bit what the
      // product followed by bias_forward and gelu_forward gives.
      if (!c.tb && c.M > 0 && c.N > 0) {
        std::vector<float> bias((size_t)c.N), E = C0;
        for (auto& x : bias) x = urand();
        const int64_t ldg = c.N + 3;
        std::vector<float> G((size_t)c.M * ldg, 777.0f);
        GemmEpilogue ep;
        ep.bias = bias.data();
        ep.gelu = G.data();
        ep.ldg = ldg;
        gemm_packed(c.ta, false, c.M, c.alpha, A.data(), c.lda, PackedMatrix{P.data(), wr, wc}, c.beta, E.data(), c.ldc, &ep);
        std::vector<float> want((size_t)c.M * c.N);
        for (int i = 0; i < c.M; i++)
          for (int j = 0; j < c.N; j++) want[(size_t)i * c.N + j] = C[(size_t)i * c.ldc + j];
        bias_forward(want.data(), bias.data(), c.M, c.N);
        std::vector<float> wantg(want.size());
        gelu_forward(wantg.data(), want.data(), (int64_t)want.size());
        bool same = true;
        for (int i = 0; i < c.M && same; i++)
          for (int j = 0; j < c.ldc; j++) {
            const size_t idx = (size_t)i * c.ldc + j;
            const float e = E[idx], w = j < c.N ? want[(size_t)i * c.N + j] : C0[idx];
            if (std::memcmp(&e, &w, sizeof e) != 0) { same = false; break; }
            if (j < c.N) {
              const float g = G[(size_t)i * ldg + j], wg = wantg[(size_t)i * c.N + j];
              if (std::memcmp(&g, &wg, sizeof g) != 0) { same = false; break; }
            }
          }
        for (int i = 0; i < c.M && same; i++)
          for (int64_t j = c.N; j < ldg; j++) same = same && G[(size_t)i * ldg + j] == 777.0f;
        char what[160];
        std::snprintf(what, sizeof what, "[%s, %d thr] packed epilogue (bias + gelu) M=%d N=%d K=%d: not bit-identical to "
                      "gemm_packed + bias_forward + gelu_forward", gemm_backend(), threads, c.M, c.N, c.K);
        count(same, what);
      }
    } else {
      gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), c.lda, B.data(), c.ldb, c.beta, C.data(), c.ldc);
    }
    double max_abs = 0, max_rel = 0;
    bool ok = true;
    for (int i = 0; i < c.M; i++)
      for (int j = 0; j < c.ldc; j++) {
        const size_t idx = (size_t)i * c.ldc + j;
        if (j >= c.N) {  // padding: must be untouched (bitwise; C0 padding is finite)
          if (C[idx] != C0[idx]) ok = false;
          continue;
        }
        const double d = std::fabs((double)C[idx] - ref[idx]);
        if (!(d == d)) { ok = false; continue; }  // NaN
        max_abs = std::max(max_abs, d);
        max_rel = std::max(max_rel, d / (bound[idx] + 1e-30));
      }
    if (max_rel > kGemmCheckLimit) ok = false;
    char what[200];
    std::snprintf(what, sizeof what, "[%s, %d thr] %s%s%s M=%d N=%d K=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g: "
                  "max |diff| %.3g, %.3g of the bound", gemm_backend(), threads, c.packed ? "packed " : "",
                  c.ta ? "T" : "N", c.tb ? "T" : "N",
                  c.M, c.N, c.K, c.lda, c.ldb, c.ldc, c.alpha, c.beta, max_abs, max_rel);
    r_->max_abs = std::max(r_->max_abs, max_abs);
    if (max_rel >= r_->max_rel) { r_->max_rel = max_rel; r_->worst = what; }
    count(ok, what);
  }
  void fail(const std::string& what) {
    if (r_->failed.size() < 20) r_->failed.push_back(what);
    r_->failures++;
  }

  std::mt19937_64 rng_;
  GemmCheckReport* r_;
};

// Whether run(C) on the native backend leaves in C, started from c0, bit for bit what it leaves with
// the AVX2 kernels forced (where the CPU has AVX-512; elsewhere both runs are the AVX2 kernel).
template <class Run>
bool same_as_avx2(const std::vector<float>& c0, const Run& run) {
  std::vector<float> c1 = c0, c2 = c0;
  run(c1.data());
  const bool before = gemm_force_avx2(true);
  run(c2.data());
  gemm_force_avx2(before);
  return c1 == c2;
}

}  // namespace

int gemm_check_sections() { return 6; }

GemmCheckReport gemm_check(int section) {
  GemmCheckReport r;
  Checker ck(section, &r);
  const int threads_before = num_threads();
  const bool portable_before = gemm_force_portable(false);
  const int hw = std::max(2, threads_before);
  const std::vector<int> threads = {1, hw};
  switch (section) {
    case 0: {
      r.section = "edge sizes: M, N, K over 0, 1 and the micro-tile edges, all transposes";
      const int ms[] = {0, 1, 2, 5, 6, 7, 13, 33, 65, 70};
      const int ns[] = {0, 1, 7, 15, 16, 17, 40};
      const int ks[] = {0, 1, 3, 8, 9, 100};
      int idx = 0;
      for (int M : ms)
        for (int N : ns)
          for (int K : ks)
            for (int t = 0; t < 4; t++) {
              idx++;
              ck.check(make(t & 1, t & 2, M, N, K, kAlphas[idx % 3], kBetas[(idx / 3) % 3], idx % 4 == 0 ? 3 : 0), {1});
            }
      break;
    }
    case 1: {
      r.section = "random shapes across the drivers (dot, skinny, general), with strides";
      for (int it = 0; it < 240; it++) {
        const int kind = it % 4;
        const int M = kind == 0 ? 1 + ck.pick() % 4 : kind == 1 ? 1 + ck.pick() % 64 : 60 + ck.pick() % 240;
        const int N = 1 + ck.pick() % (kind == 3 ? 400 : 300);
        const int K = 1 + ck.pick() % (it % 7 == 0 ? 700 : 300);
        ck.check(make(it & 1, (it >> 1) & 1, M, N, K, kAlphas[it % 3], kBetas[(it / 3) % 3], (it / 5) % 3 * 5), threads);
      }
      break;
    }
    case 2: {
      r.section = "blocking boundaries: K past KC and the skinny K superblock, NC, MC";
      const Case big[] = {
          make(false, false, 3, 40, 5000, 1.0f, 0.7f, 1),  make(true, true, 3, 37, 4500, -0.5f, 0.0f, 0),
          make(false, true, 20, 33, 9000, 1.0f, 1.0f, 2),  make(true, false, 37, 50, 4097, 2.5f, 0.0f, 0),
          make(false, false, 150, 3100, 40, 1.0f, 0.0f, 0), make(false, true, 300, 70, 513, 1.0f, 0.7f, 4),
          make(true, false, 289, 100, 257, -0.5f, 1.0f, 0), make(true, true, 145, 200, 600, 1.0f, 0.0f, 3),
          make(false, false, 1, 5000, 300, 1.0f, 0.0f, 0),  make(false, true, 1, 3000, 770, 1.0f, 0.0f, 0),
          make(false, false, 64, 1000, 300, 1.0f, 0.0f, 0), make(false, false, 65, 1000, 300, 1.0f, 1.0f, 0),
      };
      for (const Case& c : big) ck.check(c, threads);
      break;
    }
    case 3: {
      r.section = "alpha = 0: C = beta*C (beta = 0: zeros even over NaN)";
      for (float beta : kBetas) ck.check(make(false, false, 9, 20, 30, 0.0f, beta, 2), threads);
      break;
    }
    case 4: {
      r.section = "concurrent calls from two threads equal the serial result bit for bit";
      const int M = 100, N = 300, K = 200;
      std::vector<float> A((size_t)M * K), B((size_t)K * N), C1((size_t)M * N), C2((size_t)M * N), R((size_t)M * N);
      for (auto& x : A) x = ck.urand();
      for (auto& x : B) x = ck.urand();
      set_num_threads(hw);
      gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, R.data(), N);
      bool ok = true;
      for (int rep = 0; rep < 20 && ok; rep++) {
        std::thread t1([&] { gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C1.data(), N); });
        std::thread t2([&] {
          gemm(false, true, 4, 64, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C2.data(), 64);
          gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C2.data(), N);
        });
        t1.join();
        t2.join();
        for (size_t i = 0; i < R.size(); i++) ok = ok && C1[i] == R[i] && C2[i] == R[i];
      }
      r.worst = ok ? "20 rounds identical" : "concurrent calls differ from the serial result";
      ck.count(ok, r.worst);
      break;
    }
    case 5: {
      r.section = "packed matrices (gemm_packed, W and Wᵀ): edge sizes, random shapes, blocking boundaries";
      int idx = 0;
      for (int M : {1, 2, 5, 6, 7, 13, 33, 64, 65, 70})
        for (int N : {1, 15, 16, 17, 40})
          for (int K : {1, 8, 9, 100})
            for (int t = 0; t < 4; t++) {
              Case c = make(t & 1, t & 2, M, N, K, kAlphas[idx % 3], kBetas[(idx / 3) % 3], idx % 4 == 0 ? 3 : 0);
              idx++;
              c.packed = true;
              ck.check(c, {1});
            }
      for (int it = 0; it < 80; it++) {
        const int M = it % 2 ? 1 + ck.pick() % 64 : 60 + ck.pick() % 200;
        Case c = make(it & 1, (it >> 1) & 1, M, 1 + ck.pick() % 300, 1 + ck.pick() % (it % 5 == 0 ? 700 : 300),
                      kAlphas[it % 3], kBetas[(it / 3) % 3], (it / 5) % 3 * 5);
        c.packed = true;
        ck.check(c, threads);
      }
      // The AVX-512 kernel does per element what the AVX2 one does: bit-identical results (where the
      // CPU has AVX-512; elsewhere both runs are the AVX2 kernel).
      {
        bool same = true;
        for (int it = 0; it < 12; it++) {
          const int M = 1 + ck.pick() % 150, N = 1 + ck.pick() % 200, K = 1 + ck.pick() % 600;
          const bool ta = it & 1, tb = it & 2;
          const std::vector<float> A = ck.urand_vec((size_t)M * K), B = ck.urand_vec((size_t)K * N);
          same = same && same_as_avx2(ck.urand_vec((size_t)M * N), [&](float* C) {
                   gemm(ta, tb, M, N, K, 1.0f, A.data(), ta ? M : K, B.data(), tb ? K : N, 0.5f, C, N);
                 });
        }
        ck.count(same, same ? "AVX-512 and AVX2 results bit-identical (12 random shapes)" : "AVX-512 and AVX2 results differ");
      }
      // The same on packed weights at the skinny driver's sizes, where AVX-512 takes 8-row panels (read
      // in place from a strided A, or packed from a transposed one) and AVX2 6-row ones.
      {
        std::string bad;
        for (int it = 0; it < 24; it++) {
          const int M = 7 + ck.pick() % 58, N = 1 + ck.pick() % 300, K = 1 + ck.pick() % 700;
          const bool ta = it & 1;
          const int lda = (ta ? M : K) + (it & 2 ? 5 : 0);
          const std::vector<float> A = ck.urand_vec((size_t)(ta ? K : M) * lda), W = ck.urand_vec((size_t)K * N);
          std::vector<float> P(packed_floats(K, N));
          pack_matrix(W.data(), K, N, P.data());
          const PackedMatrix pm{P.data(), K, N};
          const bool same = same_as_avx2(ck.urand_vec((size_t)M * N), [&](float* C) {
            gemm_packed(ta, false, M, 1.0f, A.data(), lda, pm, 0.5f, C, N);
          });
          if (!same && bad.empty())
            bad = " (M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + (ta ? " A^T" : "") +
                  " lda=" + std::to_string(lda) + ")";
        }
        ck.count(bad.empty(), bad.empty() ? "AVX-512 and AVX2 results bit-identical on packed weights (24 skinny shapes)"
                                          : "AVX-512 and AVX2 results differ on packed weights" + bad);
      }
      // gemm_packed_nn at M <= 4 (per-lane sums over X's strips): AVX-512 keeps tiles of the sums in
      // registers across a group of strips, AVX2 adds strip by strip; the same FMAs in the same order.
      {
        std::string bad;
        for (int it = 0; it < 16; it++) {
          const int M = 1 + it % 4, XK = 1 + ck.pick() % 100, XN = 1 + ck.pick() % (it % 3 ? 400 : 2000);
          const int lda = XN + (it & 4 ? 3 : 0);
          const std::vector<float> A = ck.urand_vec((size_t)M * lda), Xr = ck.urand_vec((size_t)XK * XN);
          std::vector<float> P(packed_floats(XK, XN));
          pack_matrix(Xr.data(), XK, XN, P.data());
          const PackedMatrix pm{P.data(), XK, XN};
          const bool same = same_as_avx2(ck.urand_vec((size_t)M * XK), [&](float* C) {
            gemm_packed_nn(M, 1.0f, A.data(), lda, pm, 0.5f, C, XK);
          });
          if (!same && bad.empty())
            bad = " (M=" + std::to_string(M) + " X " + std::to_string(XK) + " x " + std::to_string(XN) + ")";
        }
        ck.count(bad.empty(), bad.empty() ? "AVX-512 and AVX2 per-lane sums bit-identical (gemm_packed_nn, 16 shapes of 1-4 rows)"
                                          : "AVX-512 and AVX2 per-lane sums differ" + bad);
      }
      // gemm_nt_prepacked (B given as packed Bᵀ) gives bit for bit what gemm(false, true) gives on B, on
      // every backend, through the skinny driver's K superblocks and the general driver; where gemm
      // would take its dot driver (M <= 4) it declines and leaves C alone.
      {
        bool same = true;
        std::string bad;
        const bool avx2_before = gemm_force_avx2(false);
        int n = 0;
        for (int M : {1, 4, 5, 6, 13, 48, 64, 65, 150})
          for (int K : {1, 9, 300, 4096, 4097, 5000})
            for (int N : {1, 17, 40}) {
              const float beta = n++ % 2 ? 0.5f : 0.0f;
              std::vector<float> A((size_t)M * K), B((size_t)N * K), Bt((size_t)K * N), P(packed_floats(K, N));
              for (auto& x : A) x = ck.urand();
              for (auto& x : B) x = ck.urand();
              for (int j = 0; j < N; j++)
                for (int k = 0; k < K; k++) Bt[(size_t)k * N + j] = B[(size_t)j * K + k];
              pack_matrix(Bt.data(), K, N, P.data());
              std::vector<float> C0((size_t)M * N);
              for (auto& x : C0) x = ck.urand();
              for (int backend = 0; backend < 3; backend++) {
                gemm_force_portable(backend == 2);
                gemm_force_avx2(backend == 1);
                // pack_matrix_t packs Bᵀ from B directly: the same floats, into a buffer of any alignment
                std::vector<float> Pt1(P.size() + 1);
                pack_matrix_t(B.data(), N, K, Pt1.data() + 1);
                if (!std::equal(P.begin(), P.end(), Pt1.begin() + 1) && same) {
                  same = false;
                  bad = "[" + std::string(gemm_backend()) + "] pack_matrix_t(B) != pack_matrix(Bᵀ), N=" + std::to_string(N) + " K=" + std::to_string(K);
                }
                std::vector<float> C1 = C0, C2 = C0;
                gemm(false, true, M, N, K, 1.0f, A.data(), K, B.data(), K, beta, C1.data(), N);
                const bool took = gemm_nt_prepacked(M, 1.0f, A.data(), K, PackedMatrix{P.data(), K, N}, beta, C2.data(), N);
                const bool ok = took ? std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) == 0 : (M <= 4 && C2 == C0);
                if (!ok && same) bad = "[" + std::string(gemm_backend()) + "] M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
                same = same && ok;
              }
            }
        gemm_force_avx2(avx2_before);
        gemm_force_portable(false);
        ck.count(same, same ? "gemm_nt_prepacked bit-identical to gemm(N, T) (162 shapes, every backend)"
                            : "gemm_nt_prepacked differs from gemm(N, T) at " + bad);
      }
      // C (M, N) against alpha·op(A)·op(B) + beta·C0 in float64, within the float32 bound of a sum of K
      // FMAs: A[i, k] = a[i*ars + k*acs], B[k, j] = b[k*brs + j*bcs]. "" when it holds, else where not.
      auto within_f64 = [](int M, int N, int K, float alpha, float beta, const float* a, int ars, int acs, const float* b,
                           int brs, int bcs, const float* c0, const float* c) -> std::string {
        for (int i = 0; i < M; i++)
          for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
              const double p = (double)a[(size_t)i * ars + (size_t)k * acs] * b[(size_t)k * brs + (size_t)j * bcs];
              ref += p;
              mag += std::fabs(p);
            }
            const double c0ij = c0[(size_t)i * N + j], bound = (K + 2) * 1.2e-7 * (std::fabs(alpha) * mag + std::fabs(beta * c0ij));
            ref = alpha * ref + beta * c0ij;
            if (std::fabs(c[(size_t)i * N + j] - ref) > bound + 1e-30)
              return " at (" + std::to_string(i) + ", " + std::to_string(j) + "): |diff| " + std::to_string(std::fabs(c[(size_t)i * N + j] - ref)) + " > " + std::to_string(bound);
          }
        return "";
      };
      // gemm_packed_nt / gemm_packed_nn (a weight kept only as its packed transpose X, the tied LM head)
      // give bit for bit what gemm(false, true) / gemm(false, false) give on the row-major B = Xᵀ, on
      // every backend, through skinny and general (nt), K-split with panels and general (nn); for M <= 4,
      // where gemm has its dot and GEMV kernels and these stream X's strips in their own order of sums,
      // within the float32 bound of the float64 product. unpack_matrix_t and packed_column give B's rows back.
      {
        bool same = true;
        std::string bad;
        const bool avx2_before = gemm_force_avx2(false);
        int n = 0, shapes = 0;
        const std::pair<int, int> xs[] = {{1, 1}, {9, 17}, {40, 300}, {16, 2048}, {300, 40}, {33, 5001}, {4100, 40}, {768, 203}};
        for (int M : {1, 2, 3, 4, 5, 8, 9, 16, 64, 65, 150})
          for (auto [XK, XN] : xs) {
            shapes++;
            // alpha and beta not powers of 2: alpha * s + beta * c rounds the same only in the same operations
            const float beta = n % 2 ? 0.3f : 0.0f, alpha = n++ % 3 ? 1.0f : 0.7f;
            // B (XN, XK) row-major; X = Bᵀ (XK, XN) packed
            std::vector<float> B((size_t)XN * XK), P(packed_floats(XK, XN));
            for (auto& x : B) x = ck.urand();
            std::vector<float> Ant((size_t)M * XK), Ann((size_t)M * XN);
            for (auto& x : Ant) x = ck.urand();
            for (auto& x : Ann) x = ck.urand();
            std::vector<float> Cnt0((size_t)M * XN), Cnn0((size_t)M * XK);
            for (auto& x : Cnt0) x = ck.urand();
            for (auto& x : Cnn0) x = ck.urand();
            for (int backend = 0; backend < 3; backend++) {
              gemm_force_portable(backend == 2);
              gemm_force_avx2(backend == 1);
              const std::string at = "[" + std::string(gemm_backend()) + "] M=" + std::to_string(M) + " X=" + std::to_string(XK) + "x" + std::to_string(XN);
              pack_matrix_t(B.data(), XN, XK, P.data());
              const PackedMatrix X{P.data(), XK, XN};
              std::vector<float> C1 = Cnt0, C2 = Cnt0;
              gemm(false, true, M, XN, XK, alpha, Ant.data(), XK, B.data(), XK, beta, C1.data(), XN);
              gemm_packed_nt(M, alpha, Ant.data(), XK, X, beta, C2.data(), XN);
              if (M > 4) {
                if (std::memcmp(C1.data(), C2.data(), C1.size() * sizeof(float)) != 0 && same) { same = false; bad = "gemm_packed_nt " + at; }
              } else {
                const std::string w = within_f64(M, XN, XK, alpha, beta, Ant.data(), XK, 1, B.data(), 1, XK, Cnt0.data(), C2.data());
                if (!w.empty() && same) { same = false; bad = "gemm_packed_nt (M <= 4, vs float64) " + at + w; }
              }
              std::vector<float> D1 = Cnn0, D2 = Cnn0;
              gemm(false, false, M, XK, XN, alpha, Ann.data(), XN, B.data(), XK, beta, D1.data(), XK);
              gemm_packed_nn(M, alpha, Ann.data(), XN, X, beta, D2.data(), XK);
              if (M > 4) {
                if (std::memcmp(D1.data(), D2.data(), D1.size() * sizeof(float)) != 0 && same) { same = false; bad = "gemm_packed_nn " + at; }
              } else if (same) {
                const std::string w = within_f64(M, XK, XN, alpha, beta, Ann.data(), XN, 1, B.data(), XK, 1, Cnn0.data(), D2.data());
                if (!w.empty()) { same = false; bad = "gemm_packed_nn (M <= 4, vs float64) " + at + w; }
              }
              if (M == 1) {
                std::vector<float> U(B.size()), col(XK);
                unpack_matrix_t(X, U.data());
                if (U != B && same) { same = false; bad = "unpack_matrix_t " + at; }
                const int v = XN / 2;
                packed_column(X, v, col.data());
                if (!std::equal(col.begin(), col.end(), B.begin() + (size_t)v * XK) && same) { same = false; bad = "packed_column " + at; }
              }
            }
          }
        gemm_force_avx2(avx2_before);
        gemm_force_portable(false);
        ck.count(same, same ? "gemm_packed_nt and gemm_packed_nn as gemm(N, T) and gemm(N, N) on Xᵀ (" + std::to_string(shapes) + " shapes, every backend)"
                            : "packed-transpose GEMM differs: " + bad);
      }
      for (Case c : {make(false, false, 16, 3072, 768, 1.0f, 0.0f, 0), make(false, true, 16, 768, 3072, 1.0f, 0.0f, 0),
                     make(false, false, 32, 40, 5000, 1.0f, 0.7f, 0), make(true, true, 150, 70, 600, -0.5f, 1.0f, 2),
                     make(false, false, 300, 3100, 40, 1.0f, 0.0f, 0), make(false, true, 9, 37, 4500, 1.0f, 0.0f, 1)}) {
        c.packed = true;
        ck.check(c, threads);
      }
      break;
    }
    default:
      r.section = "no such section";
      ck.count(false, "section " + std::to_string(section) + " does not exist");
  }
  gemm_force_portable(portable_before);
  set_num_threads(threads_before);
  return r;
}

}  // namespace mend
