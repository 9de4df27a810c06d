// bufcache.cc — see bufcache.h.
#include "core/bufcache.h"

#include <cstdlib>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace mend {
namespace {

constexpr size_t kHuge = 2u << 20;

size_t rounded(size_t bytes) { return (bytes + kHuge - 1) / kHuge * kHuge; }

struct Cache {
  std::mutex m;
  struct Block { void* p; size_t cap; };
  std::vector<Block> blocks;  // oldest first
  size_t total = 0;
};

Cache& cache() {
  static Cache* c = new Cache();  // never destroyed: FloatBufs may be freed during static teardown
  return *c;
}

}  // namespace

void* large_alloc(size_t bytes) {
  const size_t cap = rounded(bytes);
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lk(c.m);
    // The smallest cached block that fits and wastes at most a quarter of itself.
    int best = -1;
    for (int i = 0; i < (int)c.blocks.size(); i++) {
      const size_t bc = c.blocks[i].cap;
      if (bc >= cap && bc - cap <= bc / 4 && (best < 0 || bc < c.blocks[best].cap)) best = i;
    }
    if (best >= 0) {
      void* p = c.blocks[best].p;
      c.total -= c.blocks[best].cap;
      c.blocks.erase(c.blocks.begin() + best);
      return p;
    }
  }
  void* p = std::aligned_alloc(kHuge, cap);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p) madvise(p, cap, MADV_HUGEPAGE);
#endif
  return p;
}

void large_free(void* p, size_t bytes) {
  if (!p) return;
  const size_t cap = rounded(bytes);
  std::vector<void*> evict;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lk(c.m);
    if (cap > kCacheBytes) {
      evict.push_back(p);
    } else {
      c.blocks.push_back({p, cap});
      c.total += cap;
      while (c.total > kCacheBytes) {
        evict.push_back(c.blocks.front().p);
        c.total -= c.blocks.front().cap;
        c.blocks.erase(c.blocks.begin());
      }
    }
  }
  for (void* q : evict) std::free(q);
}

size_t large_cached_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lk(c.m);
  return c.total;
}

}  // namespace mend
