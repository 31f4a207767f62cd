// SPDX-License-Identifier: MIT
// Where everything of a low-latency exchange lives, computed from the config alone
// so every rank (and LowLatencyExchange::memory_needed) finds the same offsets.
//
// Shared segment of each rank (node peers write into it):
//   reject records (dispatch, combine): why this rank rejected its last operation
//   dispatch, twice (by the round's parity, so a fast sender of round n + 1 never
//   overwrites rows its owner still reads from round n):
//     counts [P][J]       arrival words, one per (source, local expert)
//     meta   [J][P][T]    (source token, k) per row
//     rows   [J][P][T]    dispatch_format rows: the fixed slot region of
//                         (source, local expert) holds T rows
//   combine flags [P]     arrival words, one per owner rank
//   combine rows  [T][K]  combine_format row of (token, k)
// Private block:
//   output rows, counts, src_rank, src_token, k of each output row
//   per rank on another node: a dispatch staging message and landing message,
//   a combine staging message and landing message (the proxy's MPI buffers)
#pragma once

#include <epcomm/low_latency.hpp>

#include <cstddef>
#include <cstdint>

#include "epcomm_kernels/low_latency_wire.hpp"

namespace epcomm::detail {

// The message header of the proxy's transfers (and of a rejection's reason).
using ProxyMessageHeader = kernels::low_latency::MessageHeader;

// Why a rank rejected its last dispatch or combine, in its shared segment.
struct RejectRecord {
  uint64_t seq;  // written with release after reason
  char reason[1016];
};
static_assert(sizeof(RejectRecord) == 1024);

struct LowLatencyShape {
  int ranks = 0;           // P
  int ranks_per_node = 0;  // R
  int local_experts = 0;   // J
  int max_tokens = 0;      // T
  int topk = 0;            // K
  int hidden = 0;
  std::size_t dispatch_row = 0;  // D
  std::size_t combine_row = 0;   // C
  std::size_t out_row = 0;       // a row of config.dtype

  // Throws Error(kInvalidArgument) naming a bad value.
  static LowLatencyShape of(const LowLatencyConfig& c, int ranks, int ranks_per_node);
  int remote_ranks() const { return ranks - ranks_per_node; }
  int64_t rows_per_expert() const { return int64_t{ranks} * max_tokens; }
  // Most (token, expert) rows one rank sends one other rank.
  int64_t max_rows_to_rank() const { return int64_t{max_tokens} * (topk < local_experts ? topk : local_experts); }
  std::size_t dispatch_message_bytes() const;
  std::size_t combine_message_bytes() const;
};

struct SharedLayout {
  std::size_t dispatch_reject = 0, combine_reject = 0;
  std::size_t counts[2] = {}, meta[2] = {}, rows[2] = {};
  std::size_t combine_flags = 0, combine_rows = 0;
  std::size_t bytes = 0;
  explicit SharedLayout(const LowLatencyShape& s);
};

struct PrivateLayout {
  std::size_t out_rows = 0, out_counts = 0, out_src_rank = 0, out_src_token = 0, out_k = 0;
  std::size_t dispatch_staging = 0, dispatch_landing = 0, combine_staging = 0, combine_landing = 0;
  std::size_t bytes = 0;
  explicit PrivateLayout(const LowLatencyShape& s);
};

}  // namespace epcomm::detail
