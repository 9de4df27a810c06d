// bufcache.h — large scratch blocks (logits, activations: 4 MB and up) for FloatBuf. A block that is
// freed is kept (up to kCacheBytes in all, the oldest given back first) and handed to the next request
// it fits, so a forward pass that follows another reuses its pages instead of faulting in and zeroing
// fresh ones (a B=8, T=128 forward of GPT-2 small writes 206 MB of logits). Blocks are 2 MB aligned
// and advised for transparent huge pages. Thread-safe.
#pragma once
#include <cstddef>

namespace mend {

constexpr size_t kCacheBytes = 256u << 20;  // freed bytes kept for reuse, at most

void* large_alloc(size_t bytes);             // null when out of memory
void large_free(void* p, size_t bytes);      // bytes: as given to large_alloc
size_t large_cached_bytes();                 // held in the cache now (tests)

}  // namespace mend
