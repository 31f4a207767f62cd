// SPDX-License-Identifier: MIT
// A dispatch's layout kept for a later dispatch with the same routing counts.
//
// The layout exchange tells every rank how many of each source's tokens reach each
// of its experts; from those counts alone come the receive layout (where each
// source's rows land), the token lists and the rows each rail peer forwards. A
// later dispatch whose routing gives every rank the same counts therefore has the
// same layout and may skip the exchange: this is what it needs, and the check that
// its routing qualifies. Pure logic, no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plan/node_layout.hpp"
#include "plan/token_routes.hpp"

namespace epcomm::detail {

struct SavedLayout {
  // This rank as a source: the counts it announced (TokenRoutes).
  std::vector<int32_t> expert_tokens;  // [num_experts]
  std::vector<int32_t> rank_tokens;    // [num_ranks]
  std::vector<int32_t> node_tokens;    // [num_nodes]: distinct tokens per node
  // This rank as a destination: its receive layout (RecvLayoutView's arrays).
  int num_sources = 0;
  int num_local_experts = 0;
  std::vector<int32_t> row_base, token_base;
  std::vector<int64_t> expert_offset, expert_count;
  // [num_nodes]: rows the rail peer on each node forwards to this rank.
  std::vector<int32_t> rail_rows;
};

SavedLayout save_layout(const TokenRoutes& routes, const RecvLayoutView& layout, const std::vector<int32_t>& rail_rows);

// Writes the saved receive layout into `out`, whose arrays are sized for it.
void restore_layout(const SavedLayout& saved, RecvLayoutView& out);

// Empty when `routes` (this rank's routing of a new dispatch) has the counts the
// layout was made from; else the first difference, e.g. "this rank's topk_idx
// sends 3 tokens to expert 5, the layout was made for 2".
std::string first_count_difference(const SavedLayout& saved, const TokenRoutes& routes);

}  // namespace epcomm::detail
