// gemm_bench.cc — times mend::gemm (native/kernels/cpu/gemm.cc) on the GPT-2 shapes, and OpenBLAS
// cblas_sgemm on the same shapes with the same thread count when built with -DHAVE_OPENBLAS.
// Build: g++ -O3 -std=c++17 bench/gemm_bench.cc native/kernels/cpu/gemm.cc native/core/threadpool.cc -pthread
//        [-DHAVE_OPENBLAS -lopenblas]
// Run:   gemm_bench [threads]   (default NODE_MEND_THREADS, else 2)
// Each shape is timed for about 0.4 s per library (at least 5 runs) and the median is reported.
// Shapes with M <= 32 are bandwidth bound; for those B (the weights) is rotated over enough copies
// to exceed 256 MB, so each call streams B from DRAM as in a real forward pass ("cold B").
// All our runs happen first, then all OpenBLAS runs after a pause, so the spinning worker threads
// of one library never steal cores from the other.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../native/kernels/kernels.h"
#include "../native/core/threadpool.h"

#ifdef HAVE_OPENBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
extern "C" char* openblas_get_corename(void);
extern "C" char* openblas_get_config(void);
#endif

namespace {

struct Shape {
  const char* what;
  bool ta, tb;
  int M, N, K;
  bool packed = false;  // B through mend::gemm_packed (a PackedMatrix of B as stored; BLAS gets row-major B)
  bool warm = false;    // one copy of B (cache-resident after the first call) even at small M
};

const Shape kShapes[] = {
    {"square", false, false, 1024, 1024, 1024},
    {"square, A^T", true, false, 1024, 1024, 1024},
    {"square, B^T", false, true, 1024, 1024, 1024},
    {"fc, 32 rows", false, false, 32, 3072, 768},
    {"fc, 32 rows, W^T", false, true, 32, 3072, 768},
    {"proj, 128 rows", false, false, 128, 768, 3072},
    {"proj, 128 rows, W^T", false, true, 128, 768, 3072},
    {"GEMV decode", false, false, 1, 3072, 768},
    {"GEMV decode, W^T", false, true, 1, 3072, 768},
    {"LM head, 32 rows", false, true, 32, 50257, 768},
    {"LM head decode", false, true, 1, 50257, 768},
    {"dW = X^T dY", true, false, 768, 3072, 128},
    {"dX = dY W^T", false, true, 128, 768, 3072},
    {"fc, 16 rows", false, false, 16, 3072, 768},
    {"fc, 16 rows, packed W", false, false, 16, 3072, 768, true},
    {"fc, 16 rows, packed, warm", false, false, 16, 3072, 768, true, true},
    {"fc, 32 rows, packed W", false, false, 32, 3072, 768, true},
    {"proj, 16 rows, packed W", false, false, 16, 768, 3072, true},
    {"dX, 16 rows, packed W^T", false, true, 16, 768, 3072, true},
    {"LM head backward, 16 rows", false, false, 16, 768, 50257},
};

using Clock = std::chrono::steady_clock;

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) return line.substr(p + 2);
    }
  return "unknown CPU";
}

struct Operands {
  std::vector<float> A, C;
  std::vector<std::vector<float>> Bs;  // copies of B (several when cold)
  std::vector<std::vector<float>> Ps;  // the same copies packed (Shape::packed)
  int lda, ldb, ldc;
};

Operands make_operands(const Shape& s) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Operands o;
  o.lda = s.ta ? s.M : s.K;
  o.ldb = s.tb ? s.K : s.N;
  o.ldc = s.N;
  o.A.resize((size_t)s.M * s.K);
  for (auto& x : o.A) x = u(rng);
  o.C.assign((size_t)s.M * s.N, 0.0f);
  const size_t bn = (size_t)s.K * s.N;
  int copies = 1;
  if (s.M <= 32 && !s.warm) copies = (int)std::min<size_t>(64, std::max<size_t>(1, (256u << 20) / (bn * 4) + 1));
  o.Bs.resize(copies);
  for (auto& b : o.Bs) {
    b.resize(bn);
    for (auto& x : b) x = u(rng);
  }
  if (s.packed) {
    const int wr = s.tb ? s.N : s.K, wc = s.tb ? s.K : s.N;
    for (auto& b : o.Bs) {
      o.Ps.emplace_back(mend::packed_floats(wr, wc));
      mend::pack_matrix(b.data(), wr, wc, o.Ps.back().data());
    }
  }
  return o;
}

// Median seconds per call of fn(copy_index).
template <class F>
double time_median(F fn, int ncopies) {
  fn(0);  // warm-up (thread start, buffers)
  auto t0 = Clock::now();
  fn(1 % ncopies);
  double one = std::chrono::duration<double>(Clock::now() - t0).count();
  int reps = (int)std::clamp(0.4 / std::max(one, 1e-7), 5.0, 500.0);
  std::vector<double> ts;
  for (int r = 0; r < reps; r++) {
    auto a = Clock::now();
    fn((r + 2) % ncopies);
    ts.push_back(std::chrono::duration<double>(Clock::now() - a).count());
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  if (argc > 1) threads = std::atoi(argv[1]);
  if (threads <= 0 && std::getenv("NODE_MEND_THREADS")) threads = std::atoi(std::getenv("NODE_MEND_THREADS"));
  if (threads <= 0) threads = 2;
  mend::set_num_threads(threads);

  std::printf("machine: %s, %u hardware threads; benchmark threads: %d\n", cpu_model().c_str(),
              std::thread::hardware_concurrency(), threads);
  std::printf("mend::gemm backend: %s\n", mend::gemm_backend());
#ifdef HAVE_OPENBLAS
  openblas_set_num_threads(threads);
  std::printf("OpenBLAS: %s (core %s), %d threads\n", openblas_get_config(), openblas_get_corename(), threads);
#else
  std::printf("OpenBLAS: not built in (no cblas.h / -lopenblas); ours only\n");
#endif

  const int ns = sizeof(kShapes) / sizeof(kShapes[0]);
  std::vector<double> ours(ns, 0), theirs(ns, 0);
  std::vector<Operands> ops;
  for (const Shape& s : kShapes) ops.push_back(make_operands(s));

  for (int i = 0; i < ns; i++) {
    const Shape& s = kShapes[i];
    Operands& o = ops[i];
    ours[i] = time_median(
        [&](int c) {
          if (s.packed)
            mend::gemm_packed(s.ta, s.tb, s.M, 1.0f, o.A.data(), o.lda,
                              mend::PackedMatrix{o.Ps[c].data(), s.tb ? s.N : s.K, s.tb ? s.K : s.N}, 0.0f, o.C.data(), o.ldc);
          else
            mend::gemm(s.ta, s.tb, s.M, s.N, s.K, 1.0f, o.A.data(), o.lda, o.Bs[c].data(), o.ldb, 0.0f, o.C.data(),
                       o.ldc);
        },
        (int)o.Bs.size());
  }
#ifdef HAVE_OPENBLAS
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // let our pool's spinning workers sleep
  for (int i = 0; i < ns; i++) {
    const Shape& s = kShapes[i];
    Operands& o = ops[i];
    theirs[i] = time_median(
        [&](int c) {
          cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, s.M, s.N,
                      s.K, 1.0f, o.A.data(), o.lda, o.Bs[c].data(), o.ldb, 0.0f, o.C.data(), o.ldc);
        },
        (int)o.Bs.size());
  }
#endif

  std::printf("\n%-22s %5s %6s %6s %3s %3s | %9s %8s %7s | %9s %8s | %6s\n", "shape", "M", "N", "K", "tA", "tB",
              "ours ms", "GFLOP/s", "GB/s", "BLAS ms", "GFLOP/s", "ratio");
  std::printf("%s\n", std::string(112, '-').c_str());
  for (int i = 0; i < ns; i++) {
    const Shape& s = kShapes[i];
    const double flops = 2.0 * s.M * s.N * s.K;
    const double bytes = 4.0 * ((double)s.M * s.K + (double)s.K * s.N + (double)s.M * s.N);
    char what[64];
    std::snprintf(what, sizeof what, "%s%s", s.what, ops[i].Bs.size() > 1 ? " *" : "");
    std::printf("%-22s %5d %6d %6d %3s %3s | %9.3f %8.1f %7.1f |", what, s.M, s.N, s.K, s.ta ? "T" : "N",
                s.tb ? "T" : "N", ours[i] * 1e3, flops / ours[i] * 1e-9, bytes / ours[i] * 1e-9);
    if (theirs[i] > 0)
      std::printf(" %9.3f %8.1f | %5.0f%%\n", theirs[i] * 1e3, flops / theirs[i] * 1e-9, theirs[i] / ours[i] * 100);
    else
      std::printf(" %9s %8s | %6s\n", "-", "-", "-");
  }
  std::printf("\nratio = OpenBLAS time / our time (>100%% = we are faster). * = cold B: weights rotated over "
              "copies totalling > 256 MB, streamed from DRAM each call. GB/s = (A+B+C bytes) / our time.\n");
  return 0;
}
