// SPDX-License-Identifier: MIT
#include "exchange/slot_layout.hpp"

#include <type_traits>

namespace epcomm::detail {
namespace {

std::size_t place(std::size_t& cursor, std::size_t bytes, std::size_t alignment) {
  const std::size_t at = (cursor + alignment - 1) / alignment * alignment;
  cursor = at + bytes;
  return at;
}

// Every payload array of a slot, in placement order: visit(part, bytes, offset
// member, pointer member). The one list a new slot array is added to.
template <class Visit>
void for_each_payload_array(const SlotLayout& l, Visit&& visit) {
  const std::size_t R = static_cast<std::size_t>(l.max_rows), T = static_cast<std::size_t>(l.max_tokens);
  const std::size_t L = static_cast<std::size_t>(l.max_rows_per_token);
  const std::size_t Q = static_cast<std::size_t>(l.partial_rows);
  visit(kPeerArrays, R * l.row_bytes, &SlotPayload::rows, &SlotView::rows);
  visit(kPeerArrays, R * sizeof(int32_t), &SlotPayload::src_rank, &SlotView::src_rank);
  visit(kPeerArrays, R * sizeof(int32_t), &SlotPayload::src_token, &SlotView::src_token);
  visit(kPeerArrays, R * sizeof(float), &SlotPayload::weight, &SlotView::weight);
  visit(kPeerArrays, R * sizeof(int32_t), &SlotPayload::first_row, &SlotView::first_row);
  visit(kPeerArrays, T * L * sizeof(int32_t), &SlotPayload::token_rows, &SlotView::token_rows);
  visit(kOwnArrays, R * l.out_row_bytes, &SlotPayload::expert_out, &SlotView::expert_out);
  visit(kPeerArrays, Q * l.partial_row_bytes, &SlotPayload::owner_partials, &SlotView::owner_partials);
  visit(kChecksumArrays, R * sizeof(BlockChecksum), &SlotPayload::row_sum, &SlotView::row_sum);
  visit(kChecksumArrays, Q * sizeof(BlockChecksum), &SlotPayload::partial_sum, &SlotView::partial_sum);
}

// Payload arrays start 256-byte aligned (what CUDA allocations give), control
// flags on their own cache lines.
constexpr std::size_t kPayloadAlignment = 256;

}  // namespace

SlotPayload SlotLayout::payload(unsigned parts) const {
  SlotPayload p;
  p.parts = parts;
  std::size_t c = 0;
  for_each_payload_array(*this, [&](unsigned part, std::size_t size, std::size_t SlotPayload::*offset, auto) {
    if ((parts & part) != 0) p.*offset = place(c, size, kPayloadAlignment);
  });
  p.bytes = place(c, 0, kPayloadAlignment);
  return p;
}

void SlotLayout::point(const SlotPayload& p, std::byte* base, SlotView& v) const {
  for_each_payload_array(*this, [&](unsigned part, std::size_t, std::size_t SlotPayload::*offset, auto member) {
    using Pointer = std::remove_reference_t<decltype(v.*member)>;
    if ((p.parts & part) != 0) v.*member = reinterpret_cast<Pointer>(base + p.*offset);
  });
}

void SlotLayout::compute() {
  const std::size_t S = num_sources, J = num_local_experts;
  std::size_t c = 0;
  flags = place(c, sizeof(SlotFlags), 64);
  row_base = place(c, S * J * sizeof(int32_t), 64);
  token_base = place(c, (S + 1) * sizeof(int32_t), 64);
  expert_offset = place(c, (J + 1) * sizeof(int64_t), 64);
  expert_count = place(c, J * sizeof(int64_t), 64);
  shm_payload = payload(shm_parts);
  payload_at = place(c, shm_payload.bytes, kPayloadAlignment);
  bytes = (c + 4095) / 4096 * 4096;
}

SlotView SlotView::at(std::byte* base, const SlotLayout& l) {
  SlotView v{};
  v.flags = reinterpret_cast<SlotFlags*>(base + l.flags);
  v.layout.num_sources = l.num_sources;
  v.layout.num_local_experts = l.num_local_experts;
  v.layout.row_base = reinterpret_cast<int32_t*>(base + l.row_base);
  v.layout.token_base = reinterpret_cast<int32_t*>(base + l.token_base);
  v.layout.expert_offset = reinterpret_cast<int64_t*>(base + l.expert_offset);
  v.layout.expert_count = reinterpret_cast<int64_t*>(base + l.expert_count);
  l.point(l.shm_payload, base + l.payload_at, v);
  v.row_bytes = l.row_bytes;
  v.out_row_bytes = l.out_row_bytes;
  v.partial_row_bytes = l.partial_row_bytes;
  v.max_rows_per_token = l.max_rows_per_token;
  return v;
}

}  // namespace epcomm::detail
