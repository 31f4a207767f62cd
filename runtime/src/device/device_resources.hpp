// SPDX-License-Identifier: MIT
// What an exchange over GPU memory holds beyond the host exchange's: its receive
// buffers in GPU memory mapped by every node peer (CUDA IPC), private GPU buffers,
// pinned host copies of the routing inputs, a row mover per slot and the gate that
// orders the caller's stream. This header has no CUDA type: builds without CUDA
// compile the exchange unchanged and refuse device memory at construction.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "device/device_plan_steps.hpp"
#include "exchange/row_mover.hpp"
#include "group_state.hpp"

namespace epcomm::detail {

class DeviceResources {
 public:
  virtual ~DeviceResources() = default;
  virtual int device() const = 0;
  // A node peer's shared region (this rank's own at its local rank; a peer's is
  // null where the region is not shared).
  virtual std::byte* shared_base(int local_rank) const = 0;
  // This rank's private GPU memory and its pinned host memory.
  virtual std::byte* private_base() const = 0;
  virtual std::byte* pinned_base() const = 0;
  // list_bytes: room for one operation's batch lists (pointers, weights). Its
  // stream carries the exchange's SM budget.
  virtual std::unique_ptr<RowMover> make_mover(std::size_t list_bytes) = 0;
  // A slot's plan steps, on the stream of `mover` (one of make_mover's), which
  // outlives them.
  virtual std::unique_ptr<DevicePlanSteps> make_plan_steps(RowMover& mover, PlanStepsShape shape) = 0;
  // Lets kernels read and write this host memory (inter-node buffers) in place
  // while the returned token lives.
  virtual std::shared_ptr<void> register_host(void* ptr, std::size_t bytes) = 0;
  // Throws Error(kInvalidArgument) naming `what` unless ptr is memory of this
  // exchange's GPU (device) or host memory (not device).
  virtual void check_pointer(const void* ptr, bool device, const char* what) const = 0;
  // Throws Error(kInvalidArgument) unless stream (a cudaStream_t, may be null)
  // belongs to this exchange's GPU.
  virtual void check_stream(void* stream) const = 0;
  // Enqueues on `stream` (a cudaStream_t), after the work enqueued on it so far, a
  // copy of bytes of GPU memory into host memory (pinned: pinned_base()).
  virtual void read_async(void* stream, void* dst, const void* src, std::size_t bytes) const = 0;
  // Waits for the work enqueued on `stream`: call it without the engine's lock,
  // since that work may wait for earlier operations the progress thread completes.
  virtual void synchronize(void* stream) const = 0;
  virtual void hold(void* stream, uint64_t seq) = 0;
  virtual void release(uint64_t seq) = 0;
  virtual void release_all() = 0;
  // Whether a held stream gave up waiting (the group's timeout) and went on
  // before its operation completed.
  virtual bool stream_wait_timed_out() const = 0;
};

// Collective over the node. device < 0: the calling thread's current device.
// sm_budget: the SMs each kernel on the movers' streams may occupy (0: no bound;
// checked against the device, device/sm_budget.hpp). shared_bytes: the region node
// peers map (share false: where their GPUs have no peer access, peer_access.hpp: the
// rank's alone, shared_base() of a peer null). Throws Error(kUnsupported) in a build
// without CUDA or where node peers' GPUs cannot map each other's memory.
std::unique_ptr<DeviceResources> make_device_resources(GroupState& group, int device, int sm_budget,
                                                       std::size_t shared_bytes, bool share, std::size_t private_bytes,
                                                       std::size_t pinned_bytes);

}  // namespace epcomm::detail
