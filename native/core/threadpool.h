// threadpool.h — one process-wide pool of worker threads for data-parallel loops in the kernels.
// parallel_for may be called concurrently from several threads (two forwards in flight at once):
// parallel regions are serialised by a mutex, so each region gets the whole pool. A parallel_for
// called from inside a worker runs serially (no nesting, no deadlock).
#pragma once
#include <cstdint>
#include <functional>

namespace mend {

// Number of threads a parallel region uses (including the caller). Default: NODE_MEND_THREADS if
// set, else the cores this process may run on (its CPU affinity). At most kMaxThreads.
constexpr int kMaxThreads = 256;  // setNumThreads refuses more (lib/core/native.ts MAX_THREADS)
int num_threads();
void set_num_threads(int n);  // clamped to [1, kMaxThreads]; the pool grows or shrinks at the next region

// Runs fn(begin, end) over [0, n) split into contiguous chunks, one per thread, each chunk a
// multiple of `grain` (except the last). fn must not throw.
void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

// Runs fn(task_index) for task_index in [0, ntasks), tasks handed out dynamically.
void parallel_tasks(int64_t ntasks, const std::function<void(int64_t)>& fn);

}  // namespace mend
