// SPDX-License-Identifier: MIT
#include "util/worker_pool.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>

namespace epcomm::detail {

WorkerPool::WorkerPool(int threads) : threads_(std::max(1, threads)) {
  helpers_.reserve(threads_ - 1);
  for (int i = 1; i < threads_; ++i) helpers_.emplace_back([this, i] { helper(i); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

namespace {

int64_t part_begin(int64_t n, int parts, int i) { return n * i / parts; }

}  // namespace

void WorkerPool::run(int64_t n, const Part& part) {
  if (n <= 0) return;
  const int parts = static_cast<int>(std::min<int64_t>(threads_, n));
  if (parts == 1 || busy_.exchange(true, std::memory_order_acquire)) {
    part(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    ++generation_;
    parts_ = parts;
    n_ = n;
    part_ = &part;
    pending_ = threads_ - 1;  // every helper reports, even one with no part
  }
  start_.notify_all();
  part(0, part_begin(n, parts, 1));
  {
    std::unique_lock<std::mutex> lk(mu_);
    finished_.wait(lk, [this] { return pending_ == 0; });
    part_ = nullptr;
  }
  busy_.store(false, std::memory_order_release);
}

void WorkerPool::helper(int index) {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    start_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const int parts = parts_;
    const int64_t n = n_;
    const Part* part = part_;
    lk.unlock();
    if (index < parts) (*part)(part_begin(n, parts, index), part_begin(n, parts, index + 1));
    lk.lock();
    if (--pending_ == 0) finished_.notify_one();
  }
}

int default_mover_threads(int host_ranks) {
  cpu_set_t set;
  CPU_ZERO(&set);
  const int bound = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  const long online = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const int fair_share = static_cast<int>(online / std::max(1, host_ranks));
  return std::max(1, std::min(bound, fair_share));
}

}  // namespace epcomm::detail
