// SPDX-License-Identifier: MIT
#include "low_latency/send_plan.hpp"

#include <cmath>

#include "util/check.hpp"

namespace epcomm::detail {

int32_t SendPlan::rows_to(int rank) const {
  int32_t rows = 0;
  for (int j = 0; j < local_experts; ++j) rows += count(rank, j);
  return rows;
}

void plan_dispatch(const int32_t* topk_idx, const float* topk_weights, int num_tokens, int max_tokens,
                   int num_experts, int topk, int ranks, SendPlan& plan) {
  EPCOMM_REQUIRE(num_tokens >= 0 && num_tokens <= max_tokens, kInvalidArgument,
                 "num_tokens=" << num_tokens << " outside [0, max_tokens_per_rank=" << max_tokens << "]");
  EPCOMM_REQUIRE(num_tokens == 0 || (topk_idx != nullptr && topk_weights != nullptr), kInvalidArgument,
                 "topk_idx or topk_weights is null with num_tokens=" << num_tokens);
  plan.ranks = ranks;
  plan.local_experts = num_experts / ranks;
  plan.topk = topk;
  plan.counts.assign(static_cast<std::size_t>(num_experts), 0);
  plan.slot.assign(static_cast<std::size_t>(num_tokens) * topk, -1);
  // Expert e is owned by rank e / J as its local expert e % J: counts indexed by e
  // are already [rank][local expert].
  for (int t = 0; t < num_tokens; ++t) {
    const int32_t* idx = topk_idx + static_cast<std::size_t>(t) * topk;
    const float* w = topk_weights + static_cast<std::size_t>(t) * topk;
    for (int k = 0; k < topk; ++k) {
      const int32_t e = idx[k];
      if (e == -1) continue;
      EPCOMM_REQUIRE(e >= 0 && e < num_experts, kInvalidArgument,
                     "topk_idx[" << t << "][" << k << "]=" << e << " outside [-1, num_experts=" << num_experts
                                 << ")");
      for (int k2 = 0; k2 < k; ++k2) {
        EPCOMM_REQUIRE(idx[k2] != e, kInvalidArgument,
                       "token " << t << " chooses expert " << e << " twice (k=" << k2 << " and k=" << k << ")");
      }
      EPCOMM_REQUIRE(std::isfinite(w[k]), kInvalidArgument,
                     "topk_weights[" << t << "][" << k << "]=" << w[k] << " is not finite");
    }
  }
  for (int t = 0; t < num_tokens; ++t) {
    for (int k = 0; k < topk; ++k) {
      const std::size_t at = static_cast<std::size_t>(t) * topk + k;
      const int32_t e = topk_idx[at];
      if (e >= 0) plan.slot[at] = plan.counts[static_cast<std::size_t>(e)]++;
    }
  }
}

}  // namespace epcomm::detail
