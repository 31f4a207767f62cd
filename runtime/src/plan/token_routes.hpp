// SPDX-License-Identifier: MIT
// Source side of a dispatch: from topk_idx, which tokens go to which node and rank,
// and the per-destination counts every rank must learn in the layout exchange.
// Pure logic, no I/O.
#pragma once

#include <cstdint>
#include <vector>

#include "plan/topology.hpp"

namespace epcomm::detail {

struct TokenRoutes {
  int num_tokens = 0;
  // [num_experts]: tokens of this source routed to each expert.
  std::vector<int32_t> expert_tokens;
  // [num_ranks]: distinct tokens of this source that reach each rank.
  std::vector<int32_t> rank_tokens;
  // CSR over nodes: node n receives tokens node_tokens[node_offset[n] ..
  // node_offset[n+1]), ascending; each token once per node (deduplication).
  std::vector<int32_t> node_offset;
  std::vector<int32_t> node_tokens;
  // The lists were made on the GPU (the device exchange's count_routes) and only
  // the counts are here: node_tokens is empty.
  bool lists_on_device = false;

  int32_t node_count(int n) const { return node_offset[n + 1] - node_offset[n]; }
  const int32_t* node_begin(int n) const { return node_tokens.data() + node_offset[n]; }
};

// Validates topk_idx (ids in [-1, num_experts), no id twice in a row; throws
// Error(kInvalidArgument) naming token, slot and id) and weights (finite), and
// fills `routes`, reusing its storage.
void build_token_routes(const Topology& topo, const int32_t* topk_idx, const float* topk_weights,
                        int num_tokens, TokenRoutes& routes);

// Throws the Error(kInvalidArgument) build_token_routes throws for pick k of token
// t, whose topk ids and weights are idx[0 .. topk) and w[0 .. topk): for a check
// made elsewhere (on the GPU) that found this pick the first bad one.
[[noreturn]] void reject_token_pick(const Topology& topo, const int32_t* idx, const float* w, int t, int k);

// Routes with the counts only (lists_on_device): expert_tokens [num_experts],
// rank_tokens [num_ranks] and node_offset [num_nodes + 1], as build_token_routes
// would give them.
void routes_from_counts(const Topology& topo, int num_tokens, const int32_t* expert_tokens,
                        const int32_t* rank_tokens, const int32_t* node_offset, TokenRoutes& routes);

}  // namespace epcomm::detail
