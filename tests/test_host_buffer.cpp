// SPDX-License-Identifier: MIT
// Slot buffers faulted in by the pool: zeroed memory of the asked size for any
// thread count (including sizes that end inside a page), none for 0, reusable; on
// a host where the process's cores lie on one NUMA node, the pages are on it.
#include <gtest/gtest.h>
#include <numaif.h>

#include <cstdint>

#include "util/host_buffer.hpp"
#include "util/worker_pool.hpp"

namespace {

using epcomm::detail::HostBuffer;
using epcomm::detail::WorkerPool;

TEST(HostBuffer, ZeroedOfTheAskedSize) {
  for (int threads : {1, 3}) {
    WorkerPool pool(threads);
    HostBuffer b;
    b.allocate(0, pool, "nothing");
    EXPECT_EQ(b.data(), nullptr);
    EXPECT_EQ(b.size(), 0u);
    for (std::size_t bytes : {std::size_t{1}, std::size_t{4097}, std::size_t{3} << 20}) {
      b.allocate(bytes, pool, "a test buffer");
      ASSERT_NE(b.data(), nullptr);
      ASSERT_EQ(b.size(), bytes);
      for (std::size_t i = 0; i < bytes; ++i) ASSERT_EQ(b.data()[i], std::byte{0}) << bytes << " " << i;
      b.data()[bytes - 1] = std::byte{7};  // writable to the end
    }
  }
}

TEST(HostBuffer, PagesOnTheBoundNode) {
  const int node = epcomm::detail::bound_numa_node();
  if (node < 0) GTEST_SKIP() << "one NUMA node, no NUMA support, or cores on several nodes";
  WorkerPool pool(2);
  HostBuffer b;
  b.allocate(std::size_t{1} << 20, pool, "a test buffer");
  for (std::size_t at = 0; at < b.size(); at += 4096) {
    int where = -1;
    ASSERT_EQ(get_mempolicy(&where, nullptr, 0, b.data() + at, MPOL_F_NODE | MPOL_F_ADDR), 0);
    EXPECT_EQ(where, node) << "page at " << at;
  }
}

}  // namespace
