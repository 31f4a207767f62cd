// SPDX-License-Identifier: MIT
// The device engine's link to ranks on other nodes: the pinned host memory its
// send kernels stage messages in (low_latency_wire.hpp's device messages) and
// push commands into (one ring per kind), the MpiProxy that sends those messages
// and receives its peers', and the arrivals' copies into this GPU's memory.
//
// An arrival is copied on a stream of the proxy's own with the copy engine (no
// SM: the receive kernel spinning on the words may hold every SM): first the
// rows and (token, k) entries, then the arrival words, so a kernel that sees a
// word sees what it announces, as when a node peer writes them with a fence.
// The copy is waited for before the landing buffer takes the next message.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "device/ipc_memory.hpp"
#include "group_state.hpp"
#include "low_latency/buffer_layout.hpp"
#include "low_latency/mpi_proxy.hpp"

namespace epcomm::detail {

class DeviceProxy final : public ProxyArrivals {
 public:
  // own_shared: this rank's shared segment (GPU memory); remote_landing: GPU
  // memory for the combine rows of every rank on another node,
  // max_rows_to_rank rows each. Posts the receives.
  DeviceProxy(GroupState& group, const LowLatencyShape& shape, const SharedLayout& shared, int device,
              std::byte* own_shared, std::byte* remote_landing, MPI_Comm comm, int tag_base);
  // Waits (a moment, not the timeout) for commands and sends still pending; a
  // send MPI still holds keeps the pinned memory alive past the object.
  ~DeviceProxy() override;
  DeviceProxy(const DeviceProxy&) = delete;
  DeviceProxy& operator=(const DeviceProxy&) = delete;

  // Where the kernels write (host addresses the kernels use as they are).
  uint8_t* staging() const { return reinterpret_cast<uint8_t*>(pinned_ + staging_at_); }
  uint8_t* ring(ProxyKind kind) const {
    return reinterpret_cast<uint8_t*>(pinned_ + ring_at_[static_cast<int>(kind)]);
  }
  uint32_t ring_capacity() const { return capacity_; }
  std::size_t dispatch_message() const { return dispatch_message_; }
  std::size_t combine_message() const { return combine_message_; }

  // MpiProxy::poll / try_poll: sends what the rings hold, copies arrivals in.
  bool poll() { return mpi_->poll(); }
  bool try_poll() { return mpi_->try_poll(); }
  std::string pending_sends() { return mpi_->pending_sends(); }

  void arrived(ProxyKind kind, int peer, const std::byte* message, std::size_t bytes) override;

 private:
  int remote_index(int rank) const;

  GroupState& group_;
  const LowLatencyShape shape_;
  const SharedLayout shared_;
  int device_;
  std::byte* own_shared_;
  std::byte* remote_landing_;
  std::size_t dispatch_message_, combine_message_;
  uint32_t capacity_ = 0;
  std::size_t ring_at_[2] = {}, staging_at_ = 0, landing_at_ = 0;
  std::byte* pinned_ = nullptr;  // rings, staging, landing
  std::unique_ptr<HostRegistration> registration_;
  void* stream_ = nullptr;  // cudaStream_t of the arrivals' copies
  std::vector<std::unique_ptr<ProxyRing>> rings_;
  std::unique_ptr<MpiProxy> mpi_;
};

}  // namespace epcomm::detail
