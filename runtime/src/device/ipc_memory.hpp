// SPDX-License-Identifier: MIT
// GPU memory shared by the ranks of a node over CUDA IPC: every rank allocates one
// region of the same size on its GPU, exports it (cudaIpcGetMemHandle), and maps
// its node peers' regions, so a kernel on any GPU of the node can write a peer's
// receive buffers directly (over NVLink where the GPUs are joined by it).
#pragma once

#include <cstddef>
#include <vector>

#include "group_state.hpp"

namespace epcomm::detail {

class IpcMemory {
 public:
  // Collective over the node. Throws Error(kUnsupported) naming the peer whose
  // region cannot be mapped (no peer access between the two GPUs), and
  // Error(kBufferTooSmall) naming the bytes when the GPU cannot hold the region.
  // map_peers false: each rank keeps its region to itself (base() of a node peer
  // is null), for GPUs without peer access (peer_access.hpp).
  IpcMemory(GroupState& group, int device, std::size_t bytes_per_rank, bool map_peers = true);
  ~IpcMemory();
  IpcMemory(const IpcMemory&) = delete;
  IpcMemory& operator=(const IpcMemory&) = delete;

  std::byte* base(int local_rank) const { return bases_[local_rank]; }
  std::byte* mine() const { return bases_[local_rank_]; }

 private:
  std::vector<std::byte*> bases_;
  int local_rank_ = 0;
  int device_ = 0;
};

// Memory of this GPU that no other rank maps. Throws like IpcMemory.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(int device, std::size_t bytes, const char* purpose);
  ~DeviceBuffer();
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::byte* get() const { return ptr_; }

 private:
  std::byte* ptr_ = nullptr;
  int device_ = 0;
};

// Makes host memory (the inter-node buffers; the node's shared memory where GPUs
// lack peer access) readable and writable by kernels of every device, at the same
// address, for as long as this object lives. Throws Error(kUnsupported) where
// kernels would need another address for it.
class HostRegistration {
 public:
  HostRegistration(void* ptr, std::size_t bytes);
  ~HostRegistration();
  HostRegistration(const HostRegistration&) = delete;
  HostRegistration& operator=(const HostRegistration&) = delete;

 private:
  void* ptr_ = nullptr;
};

}  // namespace epcomm::detail
