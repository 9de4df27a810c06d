// gemm_check.h — the correctness check of kernels/cpu/gemm.cc (plain C++, no Node): mend::gemm
// against a float64 triple loop over random shapes (0, 1, the micro-tile edges 5/6/7, 15/16/17,
// the blocking edges), all four transpose combinations, alpha/beta in {1, -0.5, 2.5} x {0, 1, 0.7},
// leading dimensions past the minimum, both backends (avx2-fma when the CPU has it, and portable)
// and 1 or N threads; plus beta == 0 ignoring NaN in C, K == 0 and alpha == 0 giving beta*C, the ldc
// padding of C never written, and concurrent calls from two threads.
// Error per element: |c - ref| / (|alpha| * sum_k |a_ik b_kj| + |beta c0| + 1e-7 |ref|), i.e.
// relative to the float32 rounding bound; a case fails above kGemmCheckLimit.
// Used by the testing addon (test/13.gemm) and bench/gemm_check.cc (npm run bench:gemm).
#pragma once
#include <string>
#include <vector>

namespace mend {

constexpr double kGemmCheckLimit = 1e-5;

struct GemmCheckReport {
  std::string section;              // what the section covers
  long runs = 0, failures = 0;      // cases x backends x thread counts
  double max_abs = 0;               // the largest |c - ref|
  double max_rel = 0;               // the largest error / bound
  std::string worst;                // the run with the largest error / bound
  std::vector<std::string> failed;  // the first 20 failing runs
};

int gemm_check_sections();
// Runs one section (0 <= section < gemm_check_sections()); the backend switch and the thread count
// are restored afterwards. Not safe to run concurrently with other gemm calls of the process that
// rely on the backend switch.
GemmCheckReport gemm_check(int section);

}  // namespace mend
