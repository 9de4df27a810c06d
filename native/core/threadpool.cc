// threadpool.cc — see threadpool.h. Workers spin briefly after a region before sleeping, so the
// many short regions of a decode step do not each pay a futex wake-up.
#include "core/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace mend {
namespace {

thread_local bool tl_in_region = false;

class Pool {
 public:
  Pool() {
    int n = 0;
    if (const char* env = std::getenv("NODE_MEND_THREADS")) n = std::atoi(env);
    if (n <= 0) n = (int)std::thread::hardware_concurrency();
    if (n <= 0) n = 1;
    want_ = n;
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int threads() const { return want_.load(); }
  void set_threads(int n) { want_ = std::max(1, n); }

  void run(int64_t ntasks, const std::function<void(int64_t)>& fn) {
    if (ntasks <= 0) return;
    int nt = want_.load();
    if (ntasks == 1 || nt <= 1 || tl_in_region) {
      for (int64_t i = 0; i < ntasks; i++) fn(i);
      return;
    }
    std::lock_guard<std::mutex> region(region_m_);  // one region at a time
    ensure_workers(nt - 1);
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = &fn;
      ntasks_ = ntasks;
      next_.store(0);
      pending_.store((int)workers_.size());  // every worker takes part in every generation
      gen_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    tl_in_region = true;
    work();
    tl_in_region = false;
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    fn_ = nullptr;
  }

 private:
  void ensure_workers(int n) {
    while ((int)workers_.size() < n) {
      uint64_t seen = gen_.load();  // read before the thread starts, so it cannot miss a region
      workers_.emplace_back([this, seen] { loop(seen); });
    }
  }

  void work() {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= ntasks_) break;
      (*fn_)(i);
    }
  }

  void loop(uint64_t seen) {
    tl_in_region = true;
    for (;;) {
      // Spin a little, then sleep until the generation changes.
      uint64_t g = gen_.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < 50000; spin++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        g = gen_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return gen_.load() != seen; });
        g = gen_.load();
      }
      seen = g;
      if (stop_) return;
      work();
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::atomic<int> want_{1};
  std::vector<std::thread> workers_;
  std::mutex region_m_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<uint64_t> gen_{0};
  bool stop_ = false;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
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
