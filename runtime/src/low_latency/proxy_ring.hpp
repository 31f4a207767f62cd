// SPDX-License-Identifier: MIT
// The command ring between a sender and the proxy: the sender (the caller's thread
// on the host path; a GPU kernel on the device path, with the ring in pinned host
// memory) pushes "message for rank r of round n is ready, b bytes"; the proxy pops
// commands and moves the messages with MPI. One producer, one consumer; head and
// tail are 64-bit words on their own cache lines, published with release.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "epcomm_kernels/low_latency_wire.hpp"

namespace epcomm::detail {

using kernels::low_latency::ProxyCommand;
using kernels::low_latency::ProxyKind;

class ProxyRing {
 public:
  // capacity: a power of two. memory: bytes(capacity), zeroed, owned by the caller.
  ProxyRing(void* memory, uint32_t capacity)
      : head_(reinterpret_cast<uint64_t*>(static_cast<std::byte*>(memory) + kernels::low_latency::kRingHeadOffset)),
        tail_(reinterpret_cast<uint64_t*>(static_cast<std::byte*>(memory) + kernels::low_latency::kRingTailOffset)),
        commands_(reinterpret_cast<ProxyCommand*>(static_cast<std::byte*>(memory) +
                                                  kernels::low_latency::kRingCommandsOffset)),
        capacity_(capacity) {}
  static std::size_t bytes(uint32_t capacity) {
    return kernels::low_latency::kRingCommandsOffset + sizeof(ProxyCommand) * capacity;
  }

  // Producer side; false when the ring is full (the proxy has not caught up).
  bool push(const ProxyCommand& c) {
    const uint64_t head = std::atomic_ref<uint64_t>(*head_).load(std::memory_order_relaxed);
    if (head - std::atomic_ref<uint64_t>(*tail_).load(std::memory_order_acquire) == capacity_) return false;
    commands_[head & (capacity_ - 1)] = c;
    std::atomic_ref<uint64_t>(*head_).store(head + 1, std::memory_order_release);
    return true;
  }
  bool empty() const {
    return std::atomic_ref<uint64_t>(*tail_).load(std::memory_order_relaxed) ==
           std::atomic_ref<uint64_t>(*head_).load(std::memory_order_acquire);
  }
  // Consumer side; false when empty.
  bool pop(ProxyCommand& c) {
    const uint64_t tail = std::atomic_ref<uint64_t>(*tail_).load(std::memory_order_relaxed);
    if (tail == std::atomic_ref<uint64_t>(*head_).load(std::memory_order_acquire)) return false;
    c = commands_[tail & (capacity_ - 1)];
    std::atomic_ref<uint64_t>(*tail_).store(tail + 1, std::memory_order_release);
    return true;
  }

 private:
  uint64_t* head_;
  uint64_t* tail_;
  ProxyCommand* commands_;
  uint32_t capacity_;
};

}  // namespace epcomm::detail
