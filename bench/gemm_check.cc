// gemm_check.cc — command-line runner of the GEMM correctness check (native/testing/gemm_check.cc;
// npm test runs the same check through the testing addon, test/13.gemm). Prints each section and
// the first failures; exit code 0 when everything passes.
// Build: g++ -O3 -std=c++17 -Inative bench/gemm_check.cc native/testing/gemm_check.cc
//        native/kernels/cpu/gemm.cc native/core/threadpool.cc -pthread
#include <chrono>
#include <cstdio>

#include "kernels/kernels.h"
#include "testing/gemm_check.h"

int main() {
  const auto t0 = std::chrono::steady_clock::now();
  long runs = 0, failures = 0;
  double max_abs = 0, max_rel = 0;
  for (int s = 0; s < mend::gemm_check_sections(); s++) {
    const mend::GemmCheckReport r = mend::gemm_check(s);
    std::printf("%s: %ld runs, %ld failures; worst %s\n", r.section.c_str(), r.runs, r.failures, r.worst.c_str());
    for (const std::string& f : r.failed) std::printf("  FAIL %s\n", f.c_str());
    runs += r.runs;
    failures += r.failures;
    if (r.max_abs > max_abs) max_abs = r.max_abs;
    if (r.max_rel > max_rel) max_rel = r.max_rel;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("gemm check: %ld runs, %ld failures; backend %s (+ portable); max abs error %.3g, max error / "
              "bound %.3g (limit %g); %.2f s\n",
              runs, failures, mend::gemm_backend(), max_abs, max_rel, mend::kGemmCheckLimit, secs);
  return failures ? 1 : 0;
}
