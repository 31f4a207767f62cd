// SPDX-License-Identifier: MIT
// The group's row-moving pool: every index of a run is handled exactly once, by
// contiguous parts in index order, whatever the thread count; runs from two threads
// at once both complete (the second runs its range itself); the default thread
// count stays within the cores the process may use.
#include <gtest/gtest.h>
#include <sched.h>

#include <atomic>
#include <thread>
#include <vector>

#include "util/worker_pool.hpp"

namespace {

using epcomm::detail::WorkerPool;

// Counts how often each index of [0, n) was visited, and checks part boundaries.
std::vector<int> visits(WorkerPool& pool, int64_t n) {
  std::vector<std::atomic<int>> seen(static_cast<std::size_t>(n));
  std::atomic<int> parts{0};
  pool.run(n, [&](int64_t b, int64_t e) {
    EXPECT_LE(0, b);
    EXPECT_LT(b, e);
    EXPECT_LE(e, n);
    parts.fetch_add(1);
    for (int64_t i = b; i < e; ++i) seen[static_cast<std::size_t>(i)].fetch_add(1);
  });
  EXPECT_LE(parts.load(), pool.threads());
  std::vector<int> out;
  for (auto& s : seen) out.push_back(s.load());
  return out;
}

TEST(WorkerPool, EveryIndexOnceForAnyThreadCount) {
  for (int threads : {1, 2, 3, 5}) {
    WorkerPool pool(threads);
    ASSERT_EQ(pool.threads(), threads);
    for (int64_t n : {0, 1, 2, 3, 4, 7, 100, 1001}) {
      for (int round = 0; round < 3; ++round) {  // the helpers are reused
        const std::vector<int> seen = visits(pool, n);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<std::size_t>(i)], 1) << threads << " " << n << " " << i;
      }
    }
  }
}

TEST(WorkerPool, UsesSeveralThreads) {
  WorkerPool pool(3);
  std::vector<std::thread::id> ids(3);
  pool.run(3, [&](int64_t b, int64_t) { ids[static_cast<std::size_t>(b)] = std::this_thread::get_id(); });
  EXPECT_EQ(ids[0], std::this_thread::get_id());  // the caller takes part 0
  EXPECT_NE(ids[1], ids[0]);
  EXPECT_NE(ids[2], ids[0]);
  EXPECT_NE(ids[1], ids[2]);
}

TEST(WorkerPool, ConcurrentCallersBothComplete) {
  WorkerPool pool(2);
  std::atomic<int64_t> sum_a{0}, sum_b{0};
  auto caller = [&pool](std::atomic<int64_t>& sum) {
    for (int k = 0; k < 200; ++k) {
      pool.run(64, [&sum](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) sum.fetch_add(i);
      });
    }
  };
  std::thread a(caller, std::ref(sum_a)), b(caller, std::ref(sum_b));
  a.join();
  b.join();
  EXPECT_EQ(sum_a.load(), 200 * (63 * 64 / 2));
  EXPECT_EQ(sum_b.load(), 200 * (63 * 64 / 2));
}

TEST(WorkerPool, DefaultThreadsShareTheBoundCores) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int bound = CPU_COUNT(&set);
  EXPECT_EQ(epcomm::detail::default_mover_threads(1), bound);  // one rank keeps its cores
  EXPECT_EQ(epcomm::detail::default_mover_threads(1 << 20), 1);  // never below 1
  EXPECT_LE(epcomm::detail::default_mover_threads(2), std::max(1, bound));
}

}  // namespace
