// SPDX-License-Identifier: MIT
// The pure planning logic: token routes (dedup per node and rank, validation) and
// the receive layout, against direct per-(token, expert) counting.
#include <epcomm/error.hpp>
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <algorithm>
#include <limits>

#include "plan/node_layout.hpp"
#include "plan/token_routes.hpp"

namespace {

using epcomm::detail::build_recv_layout;
using epcomm::detail::build_token_routes;
using epcomm::detail::RecvLayoutView;
using epcomm::detail::Topology;
using epcomm::detail::TokenRoutes;

TEST(TokenRoutes, CountsAndDeduplicatesLikeDirectCounting) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    Topology topo;
    topo.ranks_per_node = 1 + static_cast<int>(rng() % 3);
    topo.num_ranks = topo.ranks_per_node * (1 + static_cast<int>(rng() % 4));
    topo.num_experts = topo.num_ranks * (1 + static_cast<int>(rng() % 3));
    topo.topk = 1 + static_cast<int>(rng() % topo.num_experts);
    const int T = static_cast<int>(rng() % 20);
    std::vector<int32_t> idx(static_cast<std::size_t>(T) * topo.topk);
    std::vector<float> w(idx.size(), 0.5f);
    std::vector<int32_t> perm(topo.num_experts);
    for (int t = 0; t < T; ++t) {
      for (int e = 0; e < topo.num_experts; ++e) perm[e] = e;
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int k = 0; k < topo.topk; ++k) idx[t * topo.topk + k] = rng() % 4 == 0 ? -1 : perm[k];
    }
    TokenRoutes routes;
    build_token_routes(topo, idx.data(), w.data(), T, routes);
    const int E = topo.num_experts, J = topo.experts_per_rank(), R = topo.ranks_per_node;
    for (int n = 0; n < topo.num_nodes(); ++n) {
      std::vector<int32_t> want;
      for (int t = 0; t < T; ++t) {
        for (int k = 0; k < topo.topk; ++k) {
          const int e = idx[t * topo.topk + k];
          if (e >= 0 && e / (J * R) == n) {
            want.push_back(t);
            break;
          }
        }
      }
      ASSERT_EQ(std::vector<int32_t>(routes.node_begin(n), routes.node_begin(n) + routes.node_count(n)), want);
    }
    for (int r = 0; r < topo.num_ranks; ++r) {
      std::set<int> tokens;
      for (int t = 0; t < T; ++t)
        for (int k = 0; k < topo.topk; ++k)
          if (idx[t * topo.topk + k] >= 0 && idx[t * topo.topk + k] / J == r) tokens.insert(t);
      ASSERT_EQ(routes.rank_tokens[r], static_cast<int32_t>(tokens.size()));
    }
    for (int e = 0; e < E; ++e) {
      int32_t count = 0;
      for (int32_t v : idx) count += v == e;
      ASSERT_EQ(routes.expert_tokens[e], count);
    }
  }
}

TEST(TokenRoutes, RejectsBadIdsNamingThem) {
  Topology topo{2, 1, 4, 2};
  TokenRoutes routes;
  const float w[4] = {1, 1, 1, 1};
  auto expect_error = [&](std::vector<int32_t> idx, const float* weights, const std::string& needle) {
    try {
      build_token_routes(topo, idx.data(), weights, 2, routes);
      ADD_FAILURE() << "accepted " << needle;
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error({0, 1, 2, 4}, w, "topk_idx[1][1]=4");
  expect_error({0, 1, -2, 3}, w, "topk_idx[1][0]=-2");
  expect_error({0, 1, 3, 3}, w, "chooses expert 3 twice");
  const float nan_w[4] = {1, 1, 1, std::numeric_limits<float>::quiet_NaN()};
  expect_error({0, 1, 2, 3}, nan_w, "topk_weights[1][1]");
}

TEST(RecvLayout, ExpertMajorSourceOrderedAndPadded) {
  const int S = 3, J = 2, align = 4;
  const int32_t expert_tokens[S * J] = {1, 0, 2, 5, 0, 3};  // [s][j]
  const int32_t rank_tokens[S] = {1, 6, 2};
  std::vector<int32_t> row_base(S * J), token_base(S + 1);
  std::vector<int64_t> offset(J + 1), count(J);
  RecvLayoutView v{S, J, row_base.data(), token_base.data(), offset.data(), count.data()};
  build_recv_layout(expert_tokens, rank_tokens, align, v);
  // Expert 0: 1 + 2 + 0 = 3 rows, padded to 4; expert 1: 0 + 5 + 3 = 8 rows.
  EXPECT_EQ(count, (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(offset, (std::vector<int64_t>{0, 4, 12}));
  EXPECT_EQ(row_base, (std::vector<int32_t>{0, 4, 1, 4, 3, 9}));
  EXPECT_EQ(token_base, (std::vector<int32_t>{0, 1, 7, 9}));
  EXPECT_EQ(v.num_rows(), 12);
  EXPECT_EQ(v.num_tokens(), 9);
}

}  // namespace
