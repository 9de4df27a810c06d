// common.h — status type, error codes and small helpers shared by all native code.
// Native code never exits or aborts on bad input: functions return a Status, and native/addon/
// turns a failed Status into a coded JavaScript error (addon/util.h make_error).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>

#include "core/bufcache.h"
#endif

namespace mend {

struct Status {
  std::string code;     // empty when ok, else e.g. "ERR_SAFETENSORS_HEADER"
  std::string message;  // names the file, tensor or argument
  bool ok() const { return code.empty(); }
  static Status OK() { return Status(); }
  static Status Error(std::string code, std::string message) {
    Status s; s.code = std::move(code); s.message = std::move(message); return s;
  }
};

#define MEND_RETURN_IF_ERROR(expr) do { ::mend::Status _s = (expr); if (!_s.ok()) return _s; } while (0)

// Error codes (the `code` of the JavaScript Error).
namespace code {
constexpr const char* kInvalidArg = "ERR_INVALID_ARG";         // a bad argument (shape, range, type)
constexpr const char* kTokenRange = "ERR_TOKEN_OUT_OF_RANGE";  // a token id >= vocab size or < 0
constexpr const char* kSeqLen = "ERR_SEQUENCE_TOO_LONG";       // T > n_positions
constexpr const char* kNoTarget = "ERR_NO_TARGET_TOKENS";      // labels with no token to predict
constexpr const char* kIO = "ERR_IO";                          // open/read/write/mmap failure
constexpr const char* kSafetensors = "ERR_SAFETENSORS";        // malformed safetensors file
constexpr const char* kMissingTensor = "ERR_MISSING_TENSOR";   // a required tensor is absent
constexpr const char* kShape = "ERR_SHAPE_MISMATCH";           // a tensor has the wrong shape
constexpr const char* kConfig = "ERR_CONFIG";                  // missing/invalid config key
constexpr const char* kNonFinite = "ERR_NON_FINITE";           // NaN or Inf where not allowed
constexpr const char* kClosed = "ERR_DISPOSED";                // use after dispose()
constexpr const char* kOutOfMemory = "ERR_OUT_OF_MEMORY";      // an allocation failed (std::bad_alloc)
constexpr const char* kInternal = "ERR_INTERNAL";              // an unexpected native failure
}  // namespace code

// The largest weight magnitude a model, an overlay's change to a weight, or an editor's layer may
// hold. Real GPT-2 weights are below 100; beyond this the forward pass overflows float32 (a
// LayerNorm variance, a logit) and every output becomes NaN. Nothing beyond it is accepted.
constexpr double kMaxWeight = 1e8;
// FLT_MAX: check_weights(…, kAnyFinite) accepts every finite float.
constexpr double kAnyFinite = 3.4028234663852886e38;

// n floats are finite and |x| <= max_abs; else code::kNonFinite naming `what` (the first bad value).
inline Status check_weights(const float* p, size_t n, const std::string& what, double max_abs = kMaxWeight) {
  const float m = (float)max_abs;
  // Blocks of 1024 without an early exit (the compiler vectorises the inner loop: it ran at a tenth
  // of the read bandwidth with a branch per element), then the first bad element of the bad block.
  size_t bad = n;
  for (size_t b = 0; b < n && bad == n; b += 1024) {
    const size_t e = std::min(n, b + 1024);
    int ok = 1;
    for (size_t i = b; i < e; i++) ok &= (p[i] <= m) & (p[i] >= -m);  // false for NaN
    if (!ok)
      for (size_t i = b; i < e; i++)
        if (!(p[i] <= m && p[i] >= -m)) { bad = i; break; }
  }
  if (bad == n) return Status::OK();
  if (!std::isfinite(p[bad]))
    return Status::Error(code::kNonFinite, what + " holds NaN or Inf (at element " + std::to_string(bad) + ")");
  char v[32];
  std::snprintf(v, sizeof v, "%g", (double)p[bad]);
  return Status::Error(code::kNonFinite, what + " holds " + v + " at element " + std::to_string(bad) +
                                             ", beyond the largest accepted magnitude 1e8 (the forward pass would overflow)");
}

// An allocator that leaves floats uninitialised (no memset pass over activations and logits that
// are written before they are read) and asks Linux for transparent huge pages on large blocks (the
// page faults of a fresh 200 MB logits buffer otherwise cost as much as filling it).
template <class T>
struct UninitAllocator {
  using value_type = T;
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes >= kLargeBytes) {
      void* p = large_alloc(bytes);  // core/bufcache.h: reuses a freed block's pages when one fits
      if (!p) throw std::bad_alloc();
      return static_cast<T*>(p);
    }
    void* p = std::malloc(bytes ? bytes : 1);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (n * sizeof(T) >= kLargeBytes) large_free(p, n * sizeof(T));
    else std::free(p);
  }
  static constexpr size_t kLargeBytes = 4u << 20;
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) > 0) ::new ((void*)p) U(std::forward<Args>(args)...);
    else ::new ((void*)p) U;  // default-initialisation: no zeroing
  }
  template <class U>
  bool operator==(const UninitAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const UninitAllocator<U>&) const { return false; }
};
using FloatBuf = std::vector<float, UninitAllocator<float>>;

// An allocator whose memory is already zero without a memset pass: large blocks come straight from
// mmap (fresh anonymous pages are zero; transparent huge pages requested), small ones from calloc.
// Gradient buffers (+= targets, up to the model's size) use it.
template <class T>
struct ZeroAllocator {
  using value_type = T;
  ZeroAllocator() = default;
  template <class U>
  ZeroAllocator(const ZeroAllocator<U>&) {}
  static constexpr size_t kMapped = 1u << 20;
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
#if defined(__linux__)
    if (bytes >= kMapped) {
      void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
#if defined(MADV_HUGEPAGE)
      madvise(p, bytes, MADV_HUGEPAGE);
#endif
      return static_cast<T*>(p);
    }
#endif
    void* p = std::calloc(n ? n : 1, sizeof(T));
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
#if defined(__linux__)
    if (n * sizeof(T) >= kMapped) { munmap(p, n * sizeof(T)); return; }
#endif
    std::free(p);
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    if constexpr (sizeof...(Args) > 0) ::new ((void*)p) U(std::forward<Args>(args)...);
    // default construction: the memory is already zero
  }
  template <class U>
  bool operator==(const ZeroAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const ZeroAllocator<U>&) const { return false; }
};
// A float buffer that starts zeroed (only when sized at construction or by resize from empty).
using ZeroBuf = std::vector<float, ZeroAllocator<float>>;

}  // namespace mend
