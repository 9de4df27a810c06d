// libfuzzer_main.cc — the libFuzzer entry point of one fuzz target (scripts/fuzz.sh builds it with
// clang -fsanitize=fuzzer,address,undefined and -DMEND_FUZZ_TARGET=fuzz_safetensors or
// fuzz_validators). A non-zero FuzzFinding is a crash for libFuzzer, so it is kept and reported.
#include "testing/fuzz/fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (mend::fuzz::MEND_FUZZ_TARGET(data, size) != mend::fuzz::kFine) __builtin_trap();
  return 0;
}
