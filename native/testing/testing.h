// testing.h — the testing addon (node_mend_testing.node, built with NODE_MEND_TESTING): kernel-level
// functions and checks that the product addon does not carry (a process-global GEMM backend switch,
// the GEMM check, a memory-bandwidth probe). Not part of the public API.
#pragma once
#include <napi.h>

namespace mend {
namespace testing {
void init_kernels(Napi::Env env, Napi::Object exports);  // kernels_binding.cc: every CPU kernel
Napi::Object Init(Napi::Env env, Napi::Object exports);  // testing_addon.cc: the module
}  // namespace testing
}  // namespace mend
