// SPDX-License-Identifier: MIT
// Host memory for a slot's private buffers, placed for the threads that use it.
//
// Pages are faulted in by the group's worker pool, each thread zeroing the part of
// the buffer that its share of a batch will mostly touch (first touch: the kernel
// puts a page on the NUMA node of the thread that touches it first). Where libnuma
// reports several nodes and the rank's cores all lie on one of them, the buffer
// also prefers that node (mbind MPOL_PREFERRED), so a helper thread that the
// scheduler moved cannot pull pages elsewhere, while a full node still falls back
// to another rather than failing. On a host with one node, or without NUMA
// support, it is plain anonymous memory, first-touched the same way.
#pragma once

#include <cstddef>

namespace epcomm::detail {

class WorkerPool;

class HostBuffer {
 public:
  HostBuffer() = default;
  ~HostBuffer();
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  // bytes of zeroed memory (none for 0). Throws Error(kSystem) naming `what`, the
  // size and the process's memory limits when it cannot be had.
  void allocate(std::size_t bytes, WorkerPool& pool, const char* what);

  std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  template <class T>
  T* as() const {
    return reinterpret_cast<T*>(data_);
  }

 private:
  void release();

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

// The NUMA node all of this thread's allowed cores lie on, or -1 (one node only,
// no NUMA support, or cores on several nodes).
int bound_numa_node();

}  // namespace epcomm::detail
