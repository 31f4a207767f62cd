// SPDX-License-Identifier: MIT
// A group's row-moving threads. One pool per Group, shared by all its exchanges.
//
// The pool's size counts the thread that hands it work: run() splits a range into
// threads() contiguous parts, runs part 0 on the calling thread and the others on
// threads() - 1 helpers, and returns when all are done. The caller is the group's
// progress thread (or, with inline progress, the caller's thread inside wait()),
// so the progress thread is one of the movers rather than an extra thread beside
// them: a rank with n cores runs at most n threads while it moves rows. Helpers
// sleep on a condition variable between runs, so an idle pool takes no core.
//
// Parts are fixed by index (helper i always runs part i), so memory that part i of
// a first-touch run wrote is, on a NUMA host, placed where helper i runs, which is
// also the thread that later works on that share of a batch.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace epcomm::detail {

class WorkerPool {
 public:
  // threads >= 1; 1 runs everything on the caller and starts no helper.
  explicit WorkerPool(int threads);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  int threads() const { return threads_; }
  using Part = std::function<void(int64_t begin, int64_t end)>;
  // part(begin, end) over [0, n) in threads() contiguous pieces (fewer when n is
  // smaller), in parallel. `part` must not throw. Safe from several threads: a
  // caller that finds the pool busy (another exchange of the group moving rows on
  // another thread) runs its whole range itself instead of waiting.
  void run(int64_t n, const Part& part);

 private:
  void helper(int index);

  const int threads_;
  std::atomic<bool> busy_{false};  // a run() holds the helpers
  std::mutex mu_;
  std::condition_variable start_, finished_;
  uint64_t generation_ = 0;   // guarded by mu_: bumped per run
  int pending_ = 0;           // guarded by mu_: helpers still working on this run
  int parts_ = 0;             // guarded by mu_: parts of this run
  int64_t n_ = 0;             // guarded by mu_
  const Part* part_ = nullptr;  // guarded by mu_
  bool stop_ = false;         // guarded by mu_
  std::vector<std::thread> helpers_;
};

// The default thread count of a rank's pool: the cores it may run on
// (sched_getaffinity) shared fairly with the other ranks of its host, at least 1.
// A rank bound to its own cores keeps them all; an unbound rank (it sees every core
// of the host) gets cores / ranks, so the host's ranks together do not
// oversubscribe it.
int default_mover_threads(int host_ranks);

}  // namespace epcomm::detail
