// SPDX-License-Identifier: MIT
// The shared-memory part of one exchange slot, as every rank of the node sees it in
// the slot's owner's segment. A slot holds one dispatch result (and its combines)
// from begin until its handle is dropped; max_inflight slots exist per rank.
//
// Control flags are sequence numbers of operations (1, 2, ...), each written by one
// rank (the segment's owner) with release and read by its node peers with acquire;
// each sits on its own cache line.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "plan/node_layout.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

struct SlotFlags {
  alignas(64) uint64_t layout_ready;    // dispatch seq whose receive layout is published
  alignas(64) uint64_t writes_done;     // dispatch seq whose rows this rank finished writing
  alignas(64) uint64_t outputs_ready;   // combine seq whose owner partials are complete
  alignas(64) uint64_t outputs_read;    // combine seq whose peers' partials this rank read
};

inline uint64_t load_flag(uint64_t& f) {
  return std::atomic_ref<uint64_t>(f).load(std::memory_order_acquire);
}
inline void store_flag(uint64_t& f, uint64_t v) {
  std::atomic_ref<uint64_t>(f).store(v, std::memory_order_release);
}

// A slot's payload arrays fall into parts, which may live in different memory:
// what node peers write or read (rows, their metadata, owner partials), what only
// the slot's rank touches (expert outputs), and the checksums of the former
// (ExchangeConfig::checksum, host memory only).
enum SlotPart : unsigned { kPeerArrays = 1, kOwnArrays = 2, kChecksumArrays = 4 };
constexpr unsigned kAllSlotParts = kPeerArrays | kOwnArrays | kChecksumArrays;

// Byte offsets of the payload arrays of some parts (SlotLayout::payload) from the
// base of one slot's payload; arrays of other parts are absent. Identical on
// every rank.
struct SlotPayload {
  unsigned parts = 0;
  std::size_t rows = 0, src_rank = 0, src_token = 0, weight = 0, first_row = 0, token_rows = 0;
  std::size_t expert_out = 0, owner_partials = 0, row_sum = 0, partial_sum = 0;
  std::size_t bytes = 0;  // one slot's payload, a multiple of 256
};

struct SlotView;

// Byte offsets of each array inside a slot; identical on every rank.
struct SlotLayout {
  int num_sources = 0;
  int num_local_experts = 0;
  int max_rows_per_token = 0;  // L: rows one token can take on one rank
  int64_t max_rows = 0;
  int64_t max_tokens = 0;
  // Rows of owner_partials (and partial_sum): max_tokens where owners keep their
  // partials for forwarders to read (host memory), the bound on the partials
  // node peers push to one forwarder where they push them (device memory).
  int64_t partial_rows = 0;
  std::size_t row_bytes = 0;      // dispatch format
  std::size_t out_row_bytes = 0;  // expert outputs, config dtype
  std::size_t partial_row_bytes = 0;  // owner partials, combine format
  // The payload parts kept here, after the control block and the layout; with
  // device memory, the others are in GPU memory (payload()), where kernels of
  // every GPU of the node write and read them.
  unsigned shm_parts = kAllSlotParts;

  std::size_t flags = 0, row_base = 0, token_base = 0, expert_offset = 0, expert_count = 0;
  std::size_t payload_at = 0;  // of shm_payload
  SlotPayload shm_payload;
  std::size_t bytes = 0;

  void compute();
  // The arrays of `parts`, packed from offset 0.
  SlotPayload payload(unsigned parts) const;
  // Points the arrays of p's parts in v at the slot payload starting at base.
  void point(const SlotPayload& p, std::byte* base, SlotView& v) const;
};

// Typed pointers into one slot of one rank's segment.
struct SlotView {
  SlotFlags* flags;
  RecvLayoutView layout;
  std::byte* rows;
  int32_t* src_rank;
  int32_t* src_token;
  float* weight;
  // Row metadata (host memory, or GPU memory with the rows):
  int32_t* first_row;   // row holding the payload (itself, or the token's first row here)
  int32_t* token_rows;   // [max_tokens][L]: the rows of each received token, -1 padded
  std::byte* expert_out; // [max_rows] rows of expert outputs (combine input, in place)
  // [partial_rows] combine's owner partials: an owner's sum over a token's rows
  // in the combine format, one per token-list entry that a node peer forwards.
  // Host memory: the owner's own, by entry, which that forwarder reads (the
  // owner's own entries are left unwritten). Device memory: those node peers
  // pushed to this rank as their forwarder, at the positions PushedPartials
  // (exchange/pushed_partials.hpp) gives.
  std::byte* owner_partials;
  // Checksums of the rows ([max_rows]) and of the owner partials ([partial_rows])
  // that node peers write or read (ExchangeConfig::checksum, else null; with
  // device memory in GPU memory beside the rows, as bare CRC32Cs).
  BlockChecksum* row_sum;
  BlockChecksum* partial_sum;
  std::size_t row_bytes;
  std::size_t out_row_bytes;
  std::size_t partial_row_bytes;
  int max_rows_per_token;

  // The slot at base in shared memory: its control block, layout and the payload
  // parts kept there (the others are left null).
  static SlotView at(std::byte* base, const SlotLayout& l);
  std::byte* row(int64_t r) const { return rows + static_cast<std::size_t>(r) * row_bytes; }
  std::byte* out_row(int64_t r) const { return expert_out + static_cast<std::size_t>(r) * out_row_bytes; }
  std::byte* partial_row(int64_t entry) const {
    return owner_partials + static_cast<std::size_t>(entry) * partial_row_bytes;
  }
};

}  // namespace epcomm::detail
