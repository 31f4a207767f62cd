// SPDX-License-Identifier: MIT
// Receive side of a dispatch: where each source's rows land in a rank's
// expert-major output, and where its tokens land in the rank's token list (used by
// combine). Every writer on the node reads the result from the destination's
// shared control block, so the placement is computed once, by its owner.
// Pure logic, no I/O.
#pragma once

#include <cstdint>

namespace epcomm::detail {

struct RecvLayoutView {
  int num_sources = 0;        // ranks of the group
  int num_local_experts = 0;  // experts this rank owns
  // [num_sources * num_local_experts]: first row of source s in expert j's segment.
  int32_t* row_base = nullptr;
  // [num_sources + 1]: first entry of source s in the token list; last = total.
  int32_t* token_base = nullptr;
  // [num_local_experts + 1]: first row of each (padded) segment; last = total rows.
  int64_t* expert_offset = nullptr;
  // [num_local_experts]: real rows of each segment (without padding).
  int64_t* expert_count = nullptr;

  int64_t num_rows() const { return expert_offset[num_local_experts]; }
  int32_t num_tokens() const { return token_base[num_sources]; }
};

// expert_tokens: [num_sources * num_local_experts] tokens of source s for local
// expert j; rank_tokens: [num_sources] distinct tokens of s reaching this rank.
// Segments are ordered by expert, rows inside by source then token; each segment
// is padded to a multiple of `alignment`.
void build_recv_layout(const int32_t* expert_tokens, const int32_t* rank_tokens, int alignment,
                       RecvLayoutView& out);

}  // namespace epcomm::detail
