// SPDX-License-Identifier: MIT
// The word a writer stores last, after the rows it announces: the operation's
// sequence number (low 32 bits), whether the writer rejected the operation, and
// how many rows it wrote. A reader that sees the word for its sequence number with
// acquire ordering sees every row stored before it with release ordering; words of
// earlier rounds carry an older number, so a slot is never mistaken as filled.
// The packing is shared with the CUDA kernels (epcomm_kernels/low_latency_wire.hpp).
#pragma once

#include <atomic>
#include <cstdint>

#include "epcomm_kernels/low_latency_wire.hpp"

namespace epcomm::detail {

struct ArrivalWord {
  uint32_t seq = 0;
  bool rejected = false;
  uint32_t count = 0;  // < 2^31

  static uint64_t pack(uint64_t seq, bool rejected, uint32_t count) {
    return kernels::low_latency::pack_word(seq, rejected, count);
  }
  static ArrivalWord unpack(uint64_t w) {
    using namespace kernels::low_latency;
    return {word_round(w), word_rejected(w), word_count(w)};
  }
  bool is_for(uint64_t round) const { return seq == static_cast<uint32_t>(round); }
};

// Words live in memory shared between processes (node peers map each other's
// segments); 64-bit lock-free atomics are address-free there.
static_assert(std::atomic_ref<uint64_t>::is_always_lock_free);

inline void publish_word(uint64_t* word, uint64_t value) {
  std::atomic_ref<uint64_t>(*word).store(value, std::memory_order_release);
}
inline ArrivalWord read_word(uint64_t* word) {
  return ArrivalWord::unpack(std::atomic_ref<uint64_t>(*word).load(std::memory_order_acquire));
}

}  // namespace epcomm::detail
