// SPDX-License-Identifier: MIT
#include "util/host_buffer.hpp"

#include <numa.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "util/check.hpp"
#include "util/memory_limits.hpp"
#include "util/worker_pool.hpp"

namespace epcomm::detail {

int bound_numa_node() {
  if (numa_available() < 0 || numa_max_node() < 1) return -1;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  int node = -1;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    const int n = numa_node_of_cpu(cpu);
    if (n < 0 || (node >= 0 && n != node)) return -1;
    node = n;
  }
  return node;
}

HostBuffer::~HostBuffer() { release(); }

void HostBuffer::release() {
  if (data_ == nullptr) return;
  if (from_numa_) {
    numa_free(data_, size_);
  } else {
    munmap(data_, size_);
  }
  data_ = nullptr;
  size_ = 0;
}

void HostBuffer::allocate(std::size_t bytes, WorkerPool& pool, const char* what) {
  release();
  if (bytes == 0) return;
  const int node = bound_numa_node();
  void* p = nullptr;
  if (node >= 0) {
    p = numa_alloc_onnode(bytes, node);
    from_numa_ = p != nullptr;
  } else {
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) p = nullptr;
    from_numa_ = false;
  }
  EPCOMM_REQUIRE(p != nullptr, kSystem,
                 "cannot allocate " << bytes << " bytes for " << what << ": " << memory_limits()
                                    << "; lower max_tokens_per_rank or max_inflight");
  data_ = static_cast<std::byte*>(p);
  size_ = bytes;
  // Batches are split into the pool's parts in order, so the start of a buffer is
  // mostly part 0's, and so on: each thread faults in its share.
  constexpr std::size_t kPage = 4096;
  const int64_t pages = static_cast<int64_t>((bytes + kPage - 1) / kPage);
  pool.run(pages, [this](int64_t b, int64_t e) {
    const std::size_t from = static_cast<std::size_t>(b) * kPage;
    std::memset(data_ + from, 0, std::min(size_, static_cast<std::size_t>(e) * kPage) - from);
  });
}

}  // namespace epcomm::detail
