// SPDX-License-Identifier: MIT
#include "plan/token_routes.hpp"

#include <cmath>

#include "util/check.hpp"

namespace epcomm::detail {

void build_token_routes(const Topology& topo, const int32_t* topk_idx, const float* topk_weights,
                        int num_tokens, TokenRoutes& routes) {
  const int K = topo.topk;
  const int N = topo.num_nodes();
  routes.num_tokens = num_tokens;
  routes.expert_tokens.assign(topo.num_experts, 0);
  routes.rank_tokens.assign(topo.num_ranks, 0);
  routes.node_offset.assign(N + 1, 0);
  routes.node_tokens.clear();

  // Pass 1: validate, count per expert / rank / node. A token's experts, ranks and
  // nodes are deduplicated with "last token that touched it" stamps instead of
  // per-token sets (for experts, with the slot that chose it, for the message).
  std::vector<int32_t> rank_stamp(topo.num_ranks, -1), node_stamp(N, -1);
  std::vector<int32_t> expert_stamp(topo.num_experts, -1), expert_slot(topo.num_experts, 0);
  std::vector<int32_t> node_count(N, 0);
  // Each expert's rank and node, looked up rather than divided out per pick.
  std::vector<int32_t> expert_rank(topo.num_experts), expert_node(topo.num_experts);
  for (int e = 0; e < topo.num_experts; ++e) {
    expert_rank[e] = topo.rank_of_expert(e);
    expert_node[e] = topo.node_of_rank(expert_rank[e]);
  }
  for (int t = 0; t < num_tokens; ++t) {
    const int32_t* idx = topk_idx + static_cast<int64_t>(t) * K;
    const float* w = topk_weights + static_cast<int64_t>(t) * K;
    for (int k = 0; k < K; ++k) {
      const int32_t e = idx[k];
      if (e == -1) continue;
      EPCOMM_REQUIRE(e >= 0 && e < topo.num_experts, kInvalidArgument,
                     "topk_idx[" << t << "][" << k << "]=" << e << " is outside [-1, " << topo.num_experts
                                 << ")");
      EPCOMM_REQUIRE(std::isfinite(w[k]), kInvalidArgument,
                     "topk_weights[" << t << "][" << k << "]=" << w[k] << " is not finite");
      EPCOMM_REQUIRE(expert_stamp[e] != t, kInvalidArgument,
                     "token " << t << " chooses expert " << e << " twice (topk_idx[" << t << "]["
                              << expert_slot[e] << "] and [" << k << "])");
      expert_stamp[e] = t;
      expert_slot[e] = k;
      ++routes.expert_tokens[e];
      const int r = expert_rank[e];
      if (rank_stamp[r] != t) {
        rank_stamp[r] = t;
        ++routes.rank_tokens[r];
      }
      const int n = expert_node[e];
      if (node_stamp[n] != t) {
        node_stamp[n] = t;
        ++node_count[n];
      }
    }
  }
  for (int n = 0; n < N; ++n) routes.node_offset[n + 1] = routes.node_offset[n] + node_count[n];

  // Pass 2: fill each node's token list in token order.
  routes.node_tokens.resize(routes.node_offset[N]);
  std::vector<int32_t> cursor(routes.node_offset.begin(), routes.node_offset.end() - 1);
  node_stamp.assign(N, -1);
  for (int t = 0; t < num_tokens; ++t) {
    const int32_t* idx = topk_idx + static_cast<int64_t>(t) * K;
    for (int k = 0; k < K; ++k) {
      if (idx[k] < 0) continue;
      const int n = expert_node[idx[k]];
      if (node_stamp[n] != t) {
        node_stamp[n] = t;
        routes.node_tokens[cursor[n]++] = t;
      }
    }
  }
}

}  // namespace epcomm::detail
