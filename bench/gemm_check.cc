// gemm_check.cc — correctness harness for native/kernels/cpu/gemm.cc.
// Compares mend::gemm against a naive triple loop in double over many random shapes (0, 1, the
// micro-tile edges 5/6/7, 15/16/17, blocking edges), all four transpose combinations, alpha/beta
// in {1, -0.5, 2.5} x {0, 1, 0.7}, leading dimensions larger than the minimum, both backends
// (avx2-fma when the CPU has it, and portable) and 1 or N threads. Also checks: beta == 0 ignores
// NaN in C, K == 0 and alpha == 0 give beta*C, the ldc padding of C is never written, and
// concurrent calls from two threads.
// Error metric per element: |c - ref| / (|alpha| * sum_k |a_ik b_kj| + |beta c0| + 1e-30), i.e.
// relative to the floating-point error bound; the check fails above 1e-5 (K <= 9000 here).
// Build: g++ -O3 -std=c++17 bench/gemm_check.cc native/kernels/cpu/gemm.cc native/threadpool.cc -pthread
// Exit code 0 when everything passes.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "../native/kernels/kernels.h"
#include "../native/threadpool.h"

namespace {

struct Case {
  bool ta, tb;
  int M, N, K, lda, ldb, ldc;
  float alpha, beta;
};

std::mt19937_64 rng(12345);
float urand() { return std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng); }

double g_max_abs = 0, g_max_rel = 0;
long g_fail = 0, g_cases = 0;

// Runs one case on the current backend / thread count; returns false on mismatch.
bool run_case(const Case& c, const std::vector<float>& A, const std::vector<float>& B,
              const std::vector<float>& C0, const std::vector<double>& ref, const std::vector<double>& bound,
              const char* tag) {
  std::vector<float> C = C0;
  mend::gemm(c.ta, c.tb, c.M, c.N, c.K, c.alpha, A.data(), c.lda, B.data(), c.ldb, c.beta, C.data(), c.ldc);
  double max_abs = 0, max_rel = 0;
  bool ok = true;
  for (int i = 0; i < c.M; i++) {
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
  }
  if (max_rel > 1e-5) ok = false;
  g_max_abs = std::max(g_max_abs, max_abs);
  g_max_rel = std::max(g_max_rel, max_rel);
  g_cases++;
  if (!ok) {
    if (g_fail < 20)
      std::printf("FAIL [%s] ta=%d tb=%d M=%d N=%d K=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g: max_abs=%.3g "
                  "max_rel=%.3g\n",
                  tag, c.ta, c.tb, c.M, c.N, c.K, c.lda, c.ldb, c.ldc, c.alpha, c.beta, max_abs, max_rel);
    g_fail++;
  }
  return ok;
}

void check(const Case& c, const std::vector<int>& thread_counts, bool both_backends) {
  const int arows = c.ta ? c.K : c.M, brows = c.tb ? c.N : c.K;
  std::vector<float> A((size_t)std::max(arows, 1) * c.lda), B((size_t)std::max(brows, 1) * c.ldb);
  std::vector<float> C0((size_t)std::max(c.M, 1) * c.ldc);
  for (auto& x : A) x = urand();
  for (auto& x : B) x = urand();
  for (int i = 0; i < c.M; i++)
    for (int j = 0; j < c.ldc; j++)
      C0[(size_t)i * c.ldc + j] = (c.beta == 0.0f && j < c.N) ? NAN : urand();
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
  for (int portable = 0; portable < (both_backends ? 2 : 1); portable++) {
    mend::gemm_force_portable(portable != 0);
    for (int nt : thread_counts) {
      mend::set_num_threads(nt);
      char tag[64];
      std::snprintf(tag, sizeof tag, "%s, %d thr", mend::gemm_backend(), nt);
      run_case(c, A, B, C0, ref, bound, tag);
    }
  }
  mend::gemm_force_portable(false);
}

Case make(bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad) {
  Case c{ta, tb, M, N, K, 0, 0, 0, alpha, beta};
  c.lda = std::max(1, (ta ? M : K) + pad);
  c.ldb = std::max(1, (tb ? K : N) + pad);
  c.ldc = std::max(1, N + pad);
  return c;
}

}  // namespace

int main() {
  const auto t0 = std::chrono::steady_clock::now();
  const int hw = std::max(2, mend::num_threads());
  const std::vector<int> threads = {1, hw};
  const float alphas[] = {1.0f, -0.5f, 2.5f};
  const float betas[] = {0.0f, 1.0f, 0.7f};

  // 1. Edge sizes: every combination over a small set, all transposes, both backends.
  const int ms[] = {0, 1, 2, 5, 6, 7, 13, 33, 65, 70};
  const int ns[] = {0, 1, 7, 15, 16, 17, 40};
  const int ks[] = {0, 1, 3, 8, 9, 100};
  int idx = 0;
  for (int M : ms)
    for (int N : ns)
      for (int K : ks)
        for (int t = 0; t < 4; t++) {
          idx++;
          check(make(t & 1, t & 2, M, N, K, alphas[idx % 3], betas[(idx / 3) % 3], idx % 4 == 0 ? 3 : 0),
                {1}, true);
        }

  // 2. Random shapes across all drivers (dot M<=4 transB, skinny M<=64, general), with strides.
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  for (int it = 0; it < 240; it++) {
    const int kind = it % 4;
    int M = kind == 0 ? 1 + pick(rng) % 4 : kind == 1 ? 1 + pick(rng) % 64 : 60 + pick(rng) % 240;
    int N = 1 + pick(rng) % (kind == 3 ? 400 : 300);
    int K = 1 + pick(rng) % (it % 7 == 0 ? 700 : 300);
    check(make(it & 1, (it >> 1) & 1, M, N, K, alphas[it % 3], betas[(it / 3) % 3], (it / 5) % 3 * 5), threads,
          true);
  }

  // 3. Blocking boundaries: K past KC (256) and the skinny K superblock (4096), NC (3072), MC (144).
  const Case big[] = {
      make(false, false, 3, 40, 5000, 1.0f, 0.7f, 1),  make(true, true, 3, 37, 4500, -0.5f, 0.0f, 0),
      make(false, true, 20, 33, 9000, 1.0f, 1.0f, 2),  make(true, false, 37, 50, 4097, 2.5f, 0.0f, 0),
      make(false, false, 150, 3100, 40, 1.0f, 0.0f, 0), make(false, true, 300, 70, 513, 1.0f, 0.7f, 4),
      make(true, false, 289, 100, 257, -0.5f, 1.0f, 0), make(true, true, 145, 200, 600, 1.0f, 0.0f, 3),
      make(false, false, 1, 5000, 300, 1.0f, 0.0f, 0),  make(false, true, 1, 3000, 770, 1.0f, 0.0f, 0),
      make(false, false, 64, 1000, 300, 1.0f, 0.0f, 0), make(false, false, 65, 1000, 300, 1.0f, 1.0f, 0),
  };
  for (const Case& c : big) check(c, threads, true);

  // 4. alpha == 0 with NaN-free C: C = beta*C (and beta == 0 -> zeros even over NaN).
  for (float beta : betas) check(make(false, false, 9, 20, 30, 0.0f, beta, 2), threads, true);

  // 5. Concurrent calls from two threads (each runs its own parallel regions).
  {
    const int M = 100, N = 300, K = 200;
    std::vector<float> A((size_t)M * K), B((size_t)K * N), C1((size_t)M * N), C2((size_t)M * N), R((size_t)M * N);
    for (auto& x : A) x = urand();
    for (auto& x : B) x = urand();
    mend::set_num_threads(hw);
    mend::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, R.data(), N);
    bool ok = true;
    for (int rep = 0; rep < 20 && ok; rep++) {
      std::thread t1([&] { mend::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C1.data(), N); });
      std::thread t2([&] { mend::gemm(false, true, 4, 64, K, 1.0f, A.data(), K, B.data(), K, 0.0f, C2.data(), 64);
                           mend::gemm(false, false, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, C2.data(), N); });
      t1.join();
      t2.join();
      for (size_t i = 0; i < R.size(); i++) ok = ok && C1[i] == R[i] && C2[i] == R[i];
    }
    g_cases++;
    if (!ok) { std::printf("FAIL concurrent calls differ from the serial result\n"); g_fail++; }
  }

  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gemm check: %ld runs, %ld failures; backend %s (+ portable); max abs error %.3g, max error / "
              "bound %.3g (limit 1e-5); %.2f s\n",
              g_cases, g_fail, mend::gemm_backend(), g_max_abs, g_max_rel, secs);
  return g_fail ? 1 : 0;
}
