// SPDX-License-Identifier: MIT
// The bytes an exchange must move on one rank, as epcomm-bench's memcpy floor
// copies them (bench/README.md defines the floor): every (token, expert) pair
// routed to one of the rank's experts is one row that dispatch must write into the
// rank's expert input, in the dispatch format, and one expert-output row that
// combine must read and reduce, in the dtype. Alignment padding is not counted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace epcomm_bench {

struct FloorBytes {
  int64_t rows = 0;      // (token, expert) pairs routed to the rank's experts
  int64_t dispatch = 0;  // rows * dispatch row bytes
  int64_t combine = 0;   // rows * expert-output row bytes
  int64_t total() const { return dispatch + combine; }
};

// global_load[e]: pairs routed to expert e by all ranks; the experts are split evenly
// and in order over the ranks (expert e on rank e / (experts / ranks)), as both of
// epcomm-bench's paths place them.
inline FloorBytes memcpy_floor_bytes(const std::vector<int64_t>& global_load, int ranks, int rank,
                                     std::size_t dispatch_row_bytes, std::size_t expert_row_bytes) {
  const std::size_t experts = global_load.size();
  if (ranks <= 0 || rank < 0 || rank >= ranks || experts % static_cast<std::size_t>(ranks) != 0) {
    throw std::invalid_argument("memcpy_floor_bytes: " + std::to_string(experts) + " experts over " +
                                std::to_string(ranks) + " ranks, rank " + std::to_string(rank));
  }
  const std::size_t per_rank = experts / static_cast<std::size_t>(ranks);
  FloorBytes b;
  for (std::size_t e = per_rank * static_cast<std::size_t>(rank); e < per_rank * static_cast<std::size_t>(rank + 1); ++e) {
    b.rows += global_load[e];
  }
  b.dispatch = b.rows * static_cast<int64_t>(dispatch_row_bytes);
  b.combine = b.rows * static_cast<int64_t>(expert_row_bytes);
  return b;
}

}  // namespace epcomm_bench
