// SPDX-License-Identifier: MIT
#include "transport/verbs/immediate.hpp"

#include "util/check.hpp"

namespace epcomm::detail {
namespace {
constexpr uint32_t kSeqMask = (1u << Immediate::kSeqBits) - 1;
}

uint32_t encode_immediate(uint64_t seq, uint32_t kind, uint32_t part) {
  EPCOMM_REQUIRE(kind <= Immediate::kMaxKind && part <= Immediate::kMaxPart, kInvalidArgument,
                 "RDMA immediate: kind " << kind << " (max " << Immediate::kMaxKind << ") or part " << part << " (max "
                                         << Immediate::kMaxPart << ") out of range");
  return (static_cast<uint32_t>(seq & kSeqMask) << (Immediate::kKindBits + Immediate::kPartBits)) |
         (kind << Immediate::kPartBits) | part;
}

Immediate decode_immediate(uint32_t imm) {
  return Immediate{imm >> (Immediate::kKindBits + Immediate::kPartBits),
                   (imm >> Immediate::kPartBits) & Immediate::kMaxKind, imm & Immediate::kMaxPart};
}

bool immediate_seq_matches(uint32_t wire_seq, uint64_t seq) { return wire_seq == (seq & kSeqMask); }

}  // namespace epcomm::detail
