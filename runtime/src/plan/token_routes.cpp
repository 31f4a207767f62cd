// SPDX-License-Identifier: MIT
#include "plan/token_routes.hpp"

#include <cmath>

#include "util/check.hpp"

namespace epcomm::detail {
namespace {

// Pass 1's state: the counts being made, lookups, and the (token, node) pairs.
struct PickCounts {
  int32_t* experts;  // per expert
  int32_t* ranks;    // per rank
  int32_t* nodes;    // per node
  const int32_t* expert_rank;
  const int32_t* expert_node;
  const int32_t* rank_node;
  int32_t* expert_stamp;  // last token that chose each expert
  int32_t* rank_stamp;    // with stamps: last token that reached each rank, node
  int32_t* node_stamp;
  int32_t* pair_node;  // the node of each (token, node) pair
  int32_t* pairs_end;  // per token: where its pairs end
};

// Validates and counts every pick, and lists each (token, node) pair in token
// order; returns the number of pairs. A token's experts are deduplicated with
// stamps; its ranks and nodes with a bit mask in a register (kMasks: at most 64
// ranks), else with stamps too. Stamps in memory chain every pick to the last
// store to the same few counters, which costs more than the rest of the pick.
template <bool kMasks>
std::size_t count_picks(const Topology& topo, const int32_t* topk_idx, const float* topk_weights, int num_tokens,
                        const PickCounts& c) {
  const int K = topo.topk;
  const auto E = static_cast<uint32_t>(topo.num_experts);
  std::size_t pairs = 0;
  for (int t = 0; t < num_tokens; ++t) {
    const int32_t* idx = topk_idx + static_cast<int64_t>(t) * K;
    const float* w = topk_weights + static_cast<int64_t>(t) * K;
    uint64_t rank_mask = 0;
    for (int k = 0; k < K; ++k) {
      const int32_t e = idx[k];
      if (e == -1) continue;
      if (static_cast<uint32_t>(e) >= E || !std::isfinite(w[k]) || c.expert_stamp[e] == t) {
        reject_token_pick(topo, idx, w, t, k);
      }
      c.expert_stamp[e] = t;
      ++c.experts[e];
      const int32_t r = c.expert_rank[e];
      if constexpr (kMasks) {
        rank_mask |= uint64_t{1} << r;
      } else {
        c.ranks[r] += c.rank_stamp[r] != t;
        c.rank_stamp[r] = t;
        const int32_t n = c.expert_node[e];
        const bool new_node = c.node_stamp[n] != t;
        c.nodes[n] += new_node;
        c.node_stamp[n] = t;
        c.pair_node[pairs] = n;  // kept only if new (the array has a spare entry)
        pairs += new_node;
      }
    }
    if constexpr (kMasks) {
      uint64_t node_mask = 0;
      for (; rank_mask != 0; rank_mask &= rank_mask - 1) {
        const int r = __builtin_ctzll(rank_mask);
        ++c.ranks[r];
        node_mask |= uint64_t{1} << c.rank_node[r];
      }
      for (; node_mask != 0; node_mask &= node_mask - 1) {
        const int n = __builtin_ctzll(node_mask);
        ++c.nodes[n];
        c.pair_node[pairs++] = n;
      }
    }
    c.pairs_end[t] = static_cast<int32_t>(pairs);
  }
  return pairs;
}

}  // namespace

// Why pick k of token t is not valid (the checks of build_token_routes, spelled
// out once a pick failed them): off the hot path.
__attribute__((noinline, cold)) void reject_token_pick(const Topology& topo, const int32_t* idx, const float* w,
                                                       int t, int k) {
  const int32_t e = idx[k];
  EPCOMM_REQUIRE(e >= 0 && e < topo.num_experts, kInvalidArgument,
                 "topk_idx[" << t << "][" << k << "]=" << e << " is outside [-1, " << topo.num_experts << ")");
  EPCOMM_REQUIRE(std::isfinite(w[k]), kInvalidArgument,
                 "topk_weights[" << t << "][" << k << "]=" << w[k] << " is not finite");
  int first = 0;
  while (idx[first] != e) ++first;
  EPCOMM_FAIL(kInvalidArgument,
              "token " << t << " chooses expert " << e << " twice (topk_idx[" << t << "][" << first << "] and [" << k
                       << "])");
}

void routes_from_counts(const Topology& topo, int num_tokens, const int32_t* expert_tokens,
                        const int32_t* rank_tokens, const int32_t* node_offset, TokenRoutes& routes) {
  routes.num_tokens = num_tokens;
  routes.expert_tokens.assign(expert_tokens, expert_tokens + topo.num_experts);
  routes.rank_tokens.assign(rank_tokens, rank_tokens + topo.num_ranks);
  routes.node_offset.assign(node_offset, node_offset + topo.num_nodes() + 1);
  routes.node_tokens.clear();
  routes.lists_on_device = true;
}

void build_token_routes(const Topology& topo, const int32_t* topk_idx, const float* topk_weights,
                        int num_tokens, TokenRoutes& routes) {
  const int K = topo.topk, N = topo.num_nodes(), E = topo.num_experts, P = topo.num_ranks;
  routes.num_tokens = num_tokens;
  routes.lists_on_device = false;
  routes.expert_tokens.assign(E, 0);
  routes.rank_tokens.assign(P, 0);
  routes.node_offset.assign(N + 1, 0);

  // Pass 1: validate and count (count_picks).
  const bool masks = P <= 64;
  std::vector<int32_t> expert_stamp(E, -1), rank_stamp(masks ? 0 : P, -1), node_stamp(masks ? 0 : N, -1);
  std::vector<int32_t> node_count(N, 0);
  // Each expert's rank and node, looked up rather than divided out per pick.
  std::vector<int32_t> expert_rank(E), expert_node(E), rank_node(P);
  for (int r = 0; r < P; ++r) rank_node[r] = topo.node_of_rank(r);
  for (int e = 0; e < E; ++e) {
    expert_rank[e] = topo.rank_of_expert(e);
    expert_node[e] = rank_node[expert_rank[e]];
  }
  // A token reaches at most min(K, N) nodes.
  std::vector<int32_t> pair_node(static_cast<std::size_t>(num_tokens) * (K < N ? K : N) + 1);
  std::vector<int32_t> pairs_end(num_tokens);
  const PickCounts c{routes.expert_tokens.data(), routes.rank_tokens.data(), node_count.data(),
                     expert_rank.data(),          expert_node.data(),          rank_node.data(),
                     expert_stamp.data(),         rank_stamp.data(),           node_stamp.data(),
                     pair_node.data(),            pairs_end.data()};
  if (masks) {
    count_picks<true>(topo, topk_idx, topk_weights, num_tokens, c);
  } else {
    count_picks<false>(topo, topk_idx, topk_weights, num_tokens, c);
  }
  for (int n = 0; n < N; ++n) routes.node_offset[n + 1] = routes.node_offset[n] + node_count[n];

  // Pass 2: each node's token list in token order, from the pairs.
  routes.node_tokens.resize(routes.node_offset[N]);
  int32_t* const out = routes.node_tokens.data();
  std::vector<int32_t> cursor(routes.node_offset.begin(), routes.node_offset.end() - 1);
  std::size_t p = 0;
  for (int t = 0; t < num_tokens; ++t) {
    for (const auto end = static_cast<std::size_t>(pairs_end[t]); p < end; ++p) out[cursor[pair_node[p]]++] = t;
  }
}

}  // namespace epcomm::detail
