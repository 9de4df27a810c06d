// threadpool.cc — see threadpool.h. A region wakes only the workers it uses (num_threads() - 1),
// and the caller waits only for those that joined before every task was taken (a worker the
// scheduler did not run in time is not waited for); waits spin briefly (yielding the core as they
// do) and then block, so a pool with more threads than free cores degrades gracefully instead of
// collapsing: a thread that cannot win is never left burning the core another one needs. The pool
// grows and shrinks to the requested count.
#include "core/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif

namespace mend {
namespace {

thread_local bool tl_in_region = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spin iterations before blocking (a few microseconds): long enough that the back-to-back short
// regions of a decode step rarely pay a futex wake-up, short enough not to matter when they do.
constexpr int kSpin = 2000;
constexpr int kYieldEvery = 64;  // give the core away regularly while spinning

// The cores this process may run on (its CPU affinity), which is what a default should use on a
// shared machine or in a container with a cpuset; hardware_concurrency() counts every core.
int available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const int n = (int)std::thread::hardware_concurrency();
  return n > 0 ? n : 1;
}

// The published state of the pool, one atomic word so that a worker reads a consistent triple:
// bits 32..63 the region generation, 16..31 the index from which workers exit (shrinking), 0..15
// how many workers take part in the current region.
constexpr uint64_t kNoLimit = 0xFFFF;
inline uint64_t pack(uint64_t gen, uint64_t limit, uint64_t active) { return (gen << 32) | (limit << 16) | active; }
inline uint32_t gen_of(uint64_t s) { return (uint32_t)(s >> 32); }
inline int limit_of(uint64_t s) { return (int)((s >> 16) & 0xFFFF); }
inline int active_of(uint64_t s) { return (int)(s & 0xFFFF); }

class Pool {
 public:
  Pool() {
    int n = 0;
    if (const char* env = std::getenv("NODE_MEND_THREADS")) n = std::atoi(env);
    if (n <= 0) n = available_cores();
    want_ = std::min(std::max(n, 1), kMaxThreads);
  }

  int threads() const { return want_.load(); }
  void set_threads(int n) { want_ = std::min(std::max(1, n), kMaxThreads); }

  void run(int64_t ntasks, const std::function<void(int64_t)>& fn) {
    if (ntasks <= 0) return;
    if (want_.load() <= 1 && nworkers_.load() > 0 && !tl_in_region) {
      std::lock_guard<std::mutex> region(region_m_);  // setNumThreads(1): no worker is kept
      resize(0);
    }
    if (ntasks == 1 || want_.load() <= 1 || tl_in_region) {
      for (int64_t i = 0; i < ntasks; i++) fn(i);
      return;
    }
    std::lock_guard<std::mutex> region(region_m_);  // one region at a time
    const int nt = want_.load();
    resize(nt - 1);
    const int active = (int)std::min<int64_t>((int64_t)workers_.size(), ntasks - 1);  // the caller works too
    if (active <= 0) {
      for (int64_t i = 0; i < ntasks; i++) fn(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      ntasks_ = ntasks;
      next_.store(0, std::memory_order_relaxed);
      done_.store(0, std::memory_order_relaxed);
      const uint32_t gen = gen_of(state_.load(std::memory_order_relaxed)) + 1u;
      entry_.store((uint64_t)gen << 32, std::memory_order_relaxed);
      publish(kNoLimit, (uint64_t)active);
    }
    cv_.notify_all();
    tl_in_region = true;
    work();
    tl_in_region = false;
    // Every task is taken. Close the region to workers that have not joined yet (one that was not
    // scheduled in time is not waited for: it would find nothing to do), then wait for the joined
    // ones: spin (yielding) a little, then block until the last one signals.
    const int joined = (int)(entry_.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask);
    for (int spin = 0; done_.load(std::memory_order_acquire) != joined && spin < kSpin; spin++) {
      if (spin % kYieldEvery == kYieldEvery - 1) std::this_thread::yield();
      else cpu_relax();
    }
    if (done_.load(std::memory_order_acquire) != joined) {
      std::unique_lock<std::mutex> lk(done_m_);
      waiting_.store(true);
      done_cv_.wait(lk, [&] { return done_.load() == joined; });
      waiting_.store(false);
    }
    fn_ = nullptr;
  }

 private:
  // Called with region_m_ held, so no region is running.
  void resize(int n) {
    if ((int)workers_.size() > n) {
      // Workers from index n on exit at this generation; the others see no work in it.
      {
        std::lock_guard<std::mutex> lk(m_);
        publish((uint64_t)n, 0);
      }
      cv_.notify_all();
      for (size_t i = n; i < workers_.size(); i++) workers_[i].join();
      workers_.resize(n);
    }
    nworkers_ = (int)workers_.size();
    while ((int)workers_.size() < n) {
      const int idx = (int)workers_.size();
      const uint32_t seen = gen_of(state_.load());  // read before the thread starts, so it cannot miss a region
      workers_.emplace_back([this, idx, seen] { loop(idx, seen); });
      nworkers_ = (int)workers_.size();
    }
  }

  // With m_ held: a new generation with the given limit and number of active workers.
  void publish(uint64_t limit, uint64_t active) {
    const uint64_t s = state_.load(std::memory_order_relaxed);
    state_.store(pack((uint64_t)(gen_of(s) + 1u), limit, active), std::memory_order_release);
  }

  void work() {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= ntasks_) break;
      (*fn_)(i);
    }
  }

  void loop(int idx, uint32_t seen) {
    tl_in_region = true;
    for (;;) {
      uint64_t s = state_.load(std::memory_order_acquire);
      for (int spin = 0; gen_of(s) == seen && spin < kSpin; spin++) {
        if (spin % kYieldEvery == kYieldEvery - 1) std::this_thread::yield();
        else cpu_relax();
        s = state_.load(std::memory_order_acquire);
      }
      if (gen_of(s) == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { s = state_.load(std::memory_order_acquire); return gen_of(s) != seen; });
      }
      seen = gen_of(s);
      if (idx >= limit_of(s)) return;
      if (idx >= active_of(s)) continue;  // not needed in this region
      // Join the region unless the caller has closed it (all tasks taken) or it is already over.
      uint64_t e = entry_.load(std::memory_order_acquire);
      bool joined = false;
      while ((uint32_t)(e >> 32) == seen && !(e & kClosed)) {
        if (entry_.compare_exchange_weak(e, e + 1, std::memory_order_acq_rel)) { joined = true; break; }
      }
      if (!joined) continue;
      work();
      done_.fetch_add(1);
      if (waiting_.load()) {
        std::lock_guard<std::mutex> lk(done_m_);  // the caller checks done_ under this lock
        done_cv_.notify_one();
      }
    }
  }

  std::atomic<int> want_{1};
  std::vector<std::thread> workers_;
  std::atomic<int> nworkers_{0};  // workers_.size(), readable without region_m_
  std::mutex region_m_;
  std::mutex m_;                 // guards publishing a generation (cv_)
  std::condition_variable cv_;   // workers wait here for a generation
  std::mutex done_m_;
  std::condition_variable done_cv_;  // the caller waits here for done_ == joined
  std::atomic<uint64_t> state_{pack(0, kNoLimit, 0)};
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  // This region's entry: bits 32..63 its generation, bit 31 closed, bits 0..30 the workers joined.
  static constexpr uint64_t kClosed = 1ull << 31, kCountMask = kClosed - 1;
  std::atomic<uint64_t> entry_{0};
  std::atomic<int> done_{0};         // joined workers that finished
  std::atomic<bool> waiting_{false};  // the caller is blocked on done_cv_
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction order
  return *p;
}

}  // namespace

int num_threads() { return pool().threads(); }
void set_num_threads(int n) { pool().set_threads(n); }

void parallel_tasks(int64_t ntasks, const std::function<void(int64_t)>& fn) { pool().run(ntasks, fn); }

void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  int64_t units = (n + grain - 1) / grain;
  int64_t chunks = std::min<int64_t>(units, num_threads());
  if (chunks <= 1) { fn(0, n); return; }
  int64_t per = (units + chunks - 1) / chunks;
  pool().run(chunks, [&](int64_t c) {
    int64_t b = c * per * grain, e = std::min(n, (c + 1) * per * grain);
    if (b < e) fn(b, e);
  });
}

}  // namespace mend
