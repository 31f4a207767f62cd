// SPDX-License-Identifier: MIT
// Where a source's (token, expert) rows go, computed by the source alone: the
// i-th token (in token order) that chose expert e takes slot i of e's region for
// this source on e's owner. No count exchange, no I/O: a pure step of the plan,
// which also checks the input.
#pragma once

#include <cstdint>
#include <vector>

namespace epcomm::detail {

struct SendPlan {
  int ranks = 0;
  int local_experts = 0;
  int topk = 0;
  std::vector<int32_t> counts;  // [ranks][local_experts]: rows for (owner, local expert)
  std::vector<int32_t> slot;    // [tokens][topk]: slot index of (t, k), -1 for no expert

  int32_t count(int rank, int local_expert) const {
    return counts[static_cast<std::size_t>(rank) * local_experts + local_expert];
  }
  int32_t rows_to(int rank) const;
};

// Throws Error(kInvalidArgument) naming the value: num_tokens outside
// [0, max_tokens], an expert id outside [-1, num_experts), an expert chosen twice
// by one token, a non-finite weight of a chosen expert, null arrays with tokens.
void plan_dispatch(const int32_t* topk_idx, const float* topk_weights, int num_tokens, int max_tokens,
                   int num_experts, int topk, int ranks, SendPlan& plan);

}  // namespace epcomm::detail
