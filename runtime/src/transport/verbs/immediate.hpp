// SPDX-License-Identifier: MIT
// The 32-bit immediate carried by every RDMA write-with-immediate: what arrived,
// told to the receiver in the same completion that says the bytes are in place.
//
//   bits 31..16  operation sequence number mod 2^16: a late write from an older
//                exchange is told apart from the current one (at most
//                max_inflight operations are live, far fewer than 2^16)
//   bits 15..12  kind: which phase wrote (e.g. dispatch rows, combine partials)
//   bits 11..0   part: which of the sender's messages of that phase (slot, block)
//
// The peer is not encoded: each peer has its own queue pair, and the completion
// names it.
#pragma once

#include <cstdint>

namespace epcomm::detail {

struct Immediate {
  static constexpr int kSeqBits = 16, kKindBits = 4, kPartBits = 12;
  static constexpr uint32_t kMaxKind = (1u << kKindBits) - 1, kMaxPart = (1u << kPartBits) - 1;

  uint32_t seq;   // sequence number mod 2^16
  uint32_t kind;  // <= kMaxKind
  uint32_t part;  // <= kMaxPart
};

// Throws Error(kInvalidArgument) when kind or part does not fit; seq wraps.
uint32_t encode_immediate(uint64_t seq, uint32_t kind, uint32_t part);
Immediate decode_immediate(uint32_t imm);
// Whether a decoded sequence field belongs to operation `seq`.
bool immediate_seq_matches(uint32_t wire_seq, uint64_t seq);

}  // namespace epcomm::detail
