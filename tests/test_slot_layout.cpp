// SPDX-License-Identifier: MIT
// The slot layout: every payload array of each memory part gets its own room, of
// the size its contents need (counted here from the shape, not from the layout),
// aligned, inside the part's bytes and apart from the control block; the parts
// split the arrays as the exchange relies on (expert outputs alone stay with
// their rank, checksums apart).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "exchange/slot_layout.hpp"

namespace {

using epcomm::detail::BlockChecksum;
using epcomm::detail::kAllSlotParts;
using epcomm::detail::kChecksumArrays;
using epcomm::detail::kOwnArrays;
using epcomm::detail::kPeerArrays;
using epcomm::detail::SlotFlags;
using epcomm::detail::SlotLayout;
using epcomm::detail::SlotPayload;
using epcomm::detail::SlotView;

SlotLayout shape() {
  SlotLayout l;
  l.num_sources = 4;
  l.num_local_experts = 3;
  l.max_rows_per_token = 2;
  l.max_rows = 101;
  l.max_tokens = 37;
  l.partial_rows = 53;
  l.row_bytes = 129 + 4;
  l.out_row_bytes = 129 * 2;
  l.partial_row_bytes = 129 * 2 + 8;
  return l;
}

struct Array {
  std::string name;
  unsigned part;
  const std::byte* at;
  std::size_t bytes;
};

// Each payload array of v with its part and the bytes it must hold.
std::vector<Array> payload_arrays(const SlotView& v, const SlotLayout& l) {
  const std::size_t R = l.max_rows, T = l.max_tokens, L = l.max_rows_per_token, Q = l.partial_rows;
  const auto b = [](const void* p) { return static_cast<const std::byte*>(p); };
  return {{"rows", kPeerArrays, b(v.rows), R * l.row_bytes},
          {"src_rank", kPeerArrays, b(v.src_rank), R * 4},
          {"src_token", kPeerArrays, b(v.src_token), R * 4},
          {"weight", kPeerArrays, b(v.weight), R * 4},
          {"first_row", kPeerArrays, b(v.first_row), R * 4},
          {"token_rows", kPeerArrays, b(v.token_rows), T * L * 4},
          {"owner_partials", kPeerArrays, b(v.owner_partials), Q * l.partial_row_bytes},
          {"expert_out", kOwnArrays, b(v.expert_out), R * l.out_row_bytes},
          {"row_sum", kChecksumArrays, b(v.row_sum), R * sizeof(BlockChecksum)},
          {"partial_sum", kChecksumArrays, b(v.partial_sum), Q * sizeof(BlockChecksum)}};
}

// The arrays of `parts` are inside [base, base + bytes), 256-byte aligned and
// apart; the others are null.
void expect_placed(const std::vector<Array>& arrays, unsigned parts, const std::byte* base, std::size_t bytes) {
  std::vector<const Array*> present;
  for (const Array& a : arrays) {
    if ((parts & a.part) == 0) {
      EXPECT_EQ(a.at, nullptr) << a.name << " is placed though its part is not";
      continue;
    }
    ASSERT_NE(a.at, nullptr) << a.name;
    EXPECT_EQ((a.at - base) % 256, 0) << a.name;
    EXPECT_GE(a.at, base) << a.name;
    EXPECT_LE(a.at + a.bytes, base + bytes) << a.name << " runs past the payload";
    present.push_back(&a);
  }
  std::sort(present.begin(), present.end(), [](const Array* x, const Array* y) { return x->at < y->at; });
  for (std::size_t i = 1; i < present.size(); ++i) {
    EXPECT_LE(present[i - 1]->at + present[i - 1]->bytes, present[i]->at)
        << present[i - 1]->name << " overlaps " << present[i]->name;
  }
}

TEST(SlotLayout, EachPartsArraysHaveTheirOwnRoom) {
  const SlotLayout l = shape();
  for (unsigned parts = 0; parts <= kAllSlotParts; ++parts) {
    const SlotPayload p = l.payload(parts);
    EXPECT_EQ(p.bytes % 256, 0u);
    std::vector<std::byte> memory(p.bytes + 256);
    SlotView v{};
    l.point(p, memory.data(), v);
    SCOPED_TRACE("parts " + std::to_string(parts));
    expect_placed(payload_arrays(v, l), parts, memory.data(), p.bytes);
  }
}

TEST(SlotLayout, SharedMemoryHoldsTheControlBlockAndItsParts) {
  for (const unsigned parts : {0u, unsigned{kPeerArrays}, kAllSlotParts}) {
    SlotLayout l = shape();
    l.shm_parts = parts;
    l.compute();
    EXPECT_EQ(l.bytes % 4096, 0u);
    std::vector<std::byte> memory(l.bytes);
    const SlotView v = SlotView::at(memory.data(), l);
    SCOPED_TRACE("shm parts " + std::to_string(parts));
    const std::byte* payload = memory.data() + l.payload_at;
    expect_placed(payload_arrays(v, l), parts, payload, memory.size() - l.payload_at);
    // The control block and layout come before the payload.
    const std::size_t S = l.num_sources, J = l.num_local_experts;
    const auto end_of = [&](const void* p, std::size_t n) { return static_cast<const std::byte*>(p) + n; };
    EXPECT_LE(end_of(v.flags, sizeof(SlotFlags)), payload);
    EXPECT_LE(end_of(v.layout.row_base, S * J * 4), payload);
    EXPECT_LE(end_of(v.layout.token_base, (S + 1) * 4), payload);
    EXPECT_LE(end_of(v.layout.expert_offset, (J + 1) * 8), payload);
    EXPECT_LE(end_of(v.layout.expert_count, J * 8), payload);
  }
}

}  // namespace
