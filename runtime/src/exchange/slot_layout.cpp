// SPDX-License-Identifier: MIT
#include "exchange/slot_layout.hpp"

namespace epcomm::detail {
namespace {

std::size_t place(std::size_t& cursor, std::size_t bytes) {
  const std::size_t at = (cursor + 63) / 64 * 64;
  cursor = at + bytes;
  return at;
}

}  // namespace

void SlotLayout::compute() {
  const std::size_t S = num_sources, J = num_local_experts;
  const std::size_t R = static_cast<std::size_t>(max_rows), T = static_cast<std::size_t>(max_tokens);
  std::size_t c = 0;
  flags = place(c, sizeof(SlotFlags));
  row_base = place(c, S * J * sizeof(int32_t));
  token_base = place(c, (S + 1) * sizeof(int32_t));
  expert_offset = place(c, (J + 1) * sizeof(int64_t));
  expert_count = place(c, J * sizeof(int64_t));
  if (payload_in_shm) {
    rows = place(c, R * row_bytes);
    src_rank = place(c, R * sizeof(int32_t));
    src_token = place(c, R * sizeof(int32_t));
    weight = place(c, R * sizeof(float));
    first_row = place(c, R * sizeof(int32_t));
    token_rows = place(c, T * max_rows_per_token * sizeof(int32_t));
    expert_out = place(c, R * out_row_bytes);
    owner_partials = place(c, T * partial_row_bytes);
    row_sum = place(c, R * sizeof(BlockChecksum));
    partial_sum = place(c, T * sizeof(BlockChecksum));
  }
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
  // With device memory the engine points the payload and metadata at GPU memory.
  if (l.payload_in_shm) {
    v.rows = base + l.rows;
    v.src_rank = reinterpret_cast<int32_t*>(base + l.src_rank);
    v.src_token = reinterpret_cast<int32_t*>(base + l.src_token);
    v.weight = reinterpret_cast<float*>(base + l.weight);
    v.first_row = reinterpret_cast<int32_t*>(base + l.first_row);
    v.token_rows = reinterpret_cast<int32_t*>(base + l.token_rows);
    v.expert_out = base + l.expert_out;
    v.owner_partials = base + l.owner_partials;
    v.row_sum = reinterpret_cast<BlockChecksum*>(base + l.row_sum);
    v.partial_sum = reinterpret_cast<BlockChecksum*>(base + l.partial_sum);
  }
  v.row_bytes = l.row_bytes;
  v.out_row_bytes = l.out_row_bytes;
  v.partial_row_bytes = l.partial_row_bytes;
  v.max_rows_per_token = l.max_rows_per_token;
  return v;
}

}  // namespace epcomm::detail
