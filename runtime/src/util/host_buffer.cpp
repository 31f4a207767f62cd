// SPDX-License-Identifier: MIT
#include "util/host_buffer.hpp"

#include <numa.h>
#include <numaif.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/check.hpp"
#include "util/log.hpp"
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
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

namespace {

// Asks the kernel to take the pages of [p, p + bytes) from `node`, falling back to
// other nodes when it is full (MPOL_PREFERRED: a strict binding would turn a full
// node into an out-of-memory kill). A refusal only loses the preference.
void prefer_node(void* p, std::size_t bytes, int node) {
  struct bitmask* nodes = numa_allocate_nodemask();
  numa_bitmask_setbit(nodes, static_cast<unsigned>(node));
  if (mbind(p, bytes, MPOL_PREFERRED, nodes->maskp, nodes->size + 1, 0) != 0) {
    EPCOMM_LOG(kDebug, "mbind to NUMA node " << node << " failed: " << std::strerror(errno)
                                             << "; the buffer's pages go where they are first touched");
  }
  numa_free_nodemask(nodes);
}

}  // namespace

void HostBuffer::allocate(std::size_t bytes, WorkerPool& pool, const char* what) {
  release();
  if (bytes == 0) return;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EPCOMM_REQUIRE(p != MAP_FAILED, kSystem,
                 "cannot allocate " << bytes << " bytes for " << what << ": " << memory_limits()
                                    << "; lower max_tokens_per_rank or max_inflight");
  data_ = static_cast<std::byte*>(p);
  size_ = bytes;
  if (const int node = bound_numa_node(); node >= 0) prefer_node(p, bytes, node);
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
