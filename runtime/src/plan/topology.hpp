// SPDX-License-Identifier: MIT
// The shape of an exchange: ranks, nodes and expert ownership. Pure values.
#pragma once

namespace epcomm::detail {

struct Topology {
  int num_ranks = 1;
  int ranks_per_node = 1;
  int num_experts = 1;
  int topk = 1;

  int num_nodes() const { return num_ranks / ranks_per_node; }
  int experts_per_rank() const { return num_experts / num_ranks; }
  int rank_of_expert(int e) const { return e / experts_per_rank(); }
  int node_of_rank(int r) const { return r / ranks_per_node; }
  // Most rows one token can occupy on one rank: one per local expert it chose.
  int max_rows_per_token_rank() const {
    return topk < experts_per_rank() ? topk : experts_per_rank();
  }
};

}  // namespace epcomm::detail
