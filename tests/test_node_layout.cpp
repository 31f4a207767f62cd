// SPDX-License-Identifier: MIT
// The pure planning logic: token routes (dedup per node and rank, validation), the
// receive layout, the placement of a source's rows on a node and the saved layout
// a later dispatch reuses, against direct per-(token, expert) counting.
#include <epcomm/error.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <tuple>
#include <utility>
#include <vector>

#include "plan/node_layout.hpp"
#include "plan/pushed_partials.hpp"
#include "plan/row_placement.hpp"
#include "plan/saved_layout.hpp"
#include "plan/token_routes.hpp"

namespace {

using epcomm::detail::build_recv_layout;
using epcomm::detail::build_token_routes;
using epcomm::detail::first_count_difference;
using epcomm::detail::place_source_rows;
using epcomm::detail::pushed_partial_bases;
using epcomm::detail::restore_layout;
using epcomm::detail::RowPlacement;
using epcomm::detail::save_layout;
using epcomm::detail::SavedLayout;
using epcomm::detail::SourceTokens;
using epcomm::detail::RecvLayoutView;
using epcomm::detail::Topology;
using epcomm::detail::TokenRoutes;

TEST(TokenRoutes, CountsAndDeduplicatesLikeDirectCounting) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    Topology topo;
    topo.ranks_per_node = 1 + static_cast<int>(rng() % 3);
    // Every fourth trial has over 64 ranks (build_token_routes tracks a token's
    // ranks in a bit mask up to 64, with stamps beyond).
    const int nodes = trial % 4 == 0 ? 33 + static_cast<int>(rng() % 4) : 1 + static_cast<int>(rng() % 4);
    topo.num_ranks = topo.ranks_per_node * nodes;
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

// The GPU's check names a pick and the host spells it out: the same message as
// the host's own check, word for word.
TEST(TokenRoutes, RejectingOnePickGivesTheHostChecksMessage) {
  Topology topo{2, 1, 4, 2};
  TokenRoutes routes;
  const float w[6] = {1, 1, 1, 1, 1, 1};
  const float nan_w[6] = {1, 1, 1, 1, std::numeric_limits<float>::quiet_NaN(), 1};
  const auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
      return std::string(e.what());
    }
    ADD_FAILURE() << "no error";
    return std::string();
  };
  // (routing, weights, the first bad pick's token and k)
  const std::tuple<std::vector<int32_t>, const float*, int, int> cases[] = {
      {{0, 1, -1, 2, 3, 4}, w, 2, 1},
      {{0, 1, 2, -5, 0, 1}, w, 1, 1},
      {{0, 1, 3, 3, 0, 0}, w, 1, 1},
      {{0, 1, 2, 3, 1, 2}, nan_w, 2, 0},
  };
  for (const auto& [idx, weights, t, k] : cases) {
    const std::string host = message([&] { build_token_routes(topo, idx.data(), weights, 3, routes); });
    const std::string named = message(
        [&] { epcomm::detail::reject_token_pick(topo, idx.data() + t * 2, weights + t * 2, t, k); });
    EXPECT_EQ(named, host);
  }
}

// Routes from the counts alone (the GPU's) carry the counts build_token_routes
// gives, and say that the lists are elsewhere.
TEST(TokenRoutes, FromCountsMatchTheHostsCounts) {
  const Topology topo{4, 2, 16, 3};
  std::mt19937 rng(5);
  const int T = 50;
  std::vector<int32_t> idx(T * 3);
  std::vector<float> w(T * 3, 0.5f);
  for (int t = 0; t < T; ++t) {
    std::vector<int32_t> experts(16);
    for (int e = 0; e < 16; ++e) experts[e] = e;
    std::shuffle(experts.begin(), experts.end(), rng);
    for (int k = 0; k < 3; ++k) idx[t * 3 + k] = rng() % 5 == 0 ? -1 : experts[k];
  }
  TokenRoutes host, counted;
  build_token_routes(topo, idx.data(), w.data(), T, host);
  epcomm::detail::routes_from_counts(topo, T, host.expert_tokens.data(), host.rank_tokens.data(),
                                     host.node_offset.data(), counted);
  EXPECT_EQ(counted.num_tokens, T);
  EXPECT_EQ(counted.expert_tokens, host.expert_tokens);
  EXPECT_EQ(counted.rank_tokens, host.rank_tokens);
  EXPECT_EQ(counted.node_offset, host.node_offset);
  EXPECT_TRUE(counted.lists_on_device);
  EXPECT_TRUE(counted.node_tokens.empty());
  EXPECT_FALSE(host.lists_on_device);
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

// A receive layout with its storage.
struct OwnedLayout {
  std::vector<int32_t> row_base, token_base;
  std::vector<int64_t> offset, count;
  RecvLayoutView view;
  OwnedLayout(int S, int J)
      : row_base(static_cast<std::size_t>(S) * J), token_base(S + 1), offset(J + 1), count(J),
        view{S, J, row_base.data(), token_base.data(), offset.data(), count.data()} {}
};

// Random distinct experts per token (some slots -1), as a router gives them.
std::vector<int32_t> random_topk(std::mt19937& rng, const Topology& topo, int T) {
  std::vector<int32_t> idx(static_cast<std::size_t>(T) * topo.topk), perm(topo.num_experts);
  for (int t = 0; t < T; ++t) {
    for (int e = 0; e < topo.num_experts; ++e) perm[e] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int k = 0; k < topo.topk; ++k) idx[t * topo.topk + k] = rng() % 4 == 0 ? -1 : perm[k];
  }
  return idx;
}

// The placement of one source's tokens on one node, against positions counted
// directly: a (token, expert) pair's row is the source's base in that expert's
// segment plus the number of the source's earlier tokens (in list order) that chose
// the expert; a token's entry likewise per owner. The owners' layouts hold random
// counts of other sources around the source's own. Own-input and message forms of
// the same tokens place identically.
TEST(RowPlacement, RowsAndEntriesAreCountedPositionsInTheOwnersLayouts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    Topology topo;
    topo.ranks_per_node = 1 + static_cast<int>(rng() % 3);
    topo.num_ranks = topo.ranks_per_node * (1 + static_cast<int>(rng() % 3));
    topo.num_experts = topo.num_ranks * (1 + static_cast<int>(rng() % 3));
    topo.topk = 1 + static_cast<int>(rng() % topo.num_experts);
    const int S = topo.num_ranks, R = topo.ranks_per_node, J = topo.experts_per_rank(), K = topo.topk;
    const int T = static_cast<int>(rng() % 24);
    const int node = static_cast<int>(rng() % topo.num_nodes());
    const int source = static_cast<int>(rng() % S);
    const int first_expert = node * R * J;
    std::vector<int32_t> idx = random_topk(rng, topo, T);
    std::vector<float> w(idx.size());
    for (float& x : w) x = static_cast<float>(rng() % 1000) / 7.0f;
    // The source's tokens for this node: those that chose one of its experts.
    std::vector<int32_t> list;
    for (int t = 0; t < T; ++t) {
      for (int k = 0; k < K; ++k) {
        if (idx[t * K + k] >= first_expert && idx[t * K + k] < first_expert + R * J) {
          list.push_back(t);
          break;
        }
      }
    }
    // Owners' layouts: this source's counts, random ones for the others.
    std::vector<OwnedLayout> owned;
    std::vector<RecvLayoutView> views;
    for (int ld = 0; ld < R; ++ld) {
      std::vector<int32_t> expert_tokens(static_cast<std::size_t>(S) * J), rank_tokens(S);
      for (int s = 0; s < S; ++s) {
        if (s == source) continue;
        for (int j = 0; j < J; ++j) expert_tokens[s * J + j] = static_cast<int32_t>(rng() % 5);
        rank_tokens[s] = static_cast<int32_t>(rng() % 5);
      }
      for (int32_t t : list) {
        bool reached = false;
        for (int k = 0; k < K; ++k) {
          const int rel = idx[t * K + k] - first_expert;
          if (idx[t * K + k] < 0 || rel < 0 || rel >= R * J || rel / J != ld) continue;
          ++expert_tokens[source * J + rel % J];
          reached = true;
        }
        rank_tokens[source] += reached;
      }
      owned.emplace_back(S, J);
      build_recv_layout(expert_tokens.data(), rank_tokens.data(), 1 + static_cast<int>(rng() % 3), owned.back().view);
    }
    for (const OwnedLayout& o : owned) views.push_back(o.view);

    // Direct counting: (token, local rank) -> entry; (token, local rank, expert) -> row.
    std::map<std::pair<int, int>, int32_t> want_entry;
    std::map<std::tuple<int, int, int>, std::pair<int32_t, float>> want_row;
    for (int ld = 0; ld < R; ++ld) {
      int32_t entries = 0;
      for (int32_t t : list) {
        bool reached = false;
        for (int k = 0; k < K; ++k) reached |= idx[t * K + k] >= 0 && (idx[t * K + k] - first_expert) / J == ld &&
                                               idx[t * K + k] >= first_expert && idx[t * K + k] < first_expert + R * J;
        if (reached) want_entry[{t, ld}] = views[ld].token_base[source] + entries++;
      }
      for (int j = 0; j < J; ++j) {
        int32_t rows = 0;
        for (int32_t t : list) {
          for (int k = 0; k < K; ++k) {
            if (idx[t * K + k] == first_expert + ld * J + j) {
              want_row[{t, ld, j}] = {views[ld].row_base[source * J + j] + rows++, w[t * K + k]};
            }
          }
        }
      }
    }

    SourceTokens own;
    own.count = static_cast<int32_t>(list.size());
    own.tokens = list.data();
    own.topk_idx = idx.data();
    own.topk_weights = w.data();
    // The same tokens as an inter-node message: records of index, ids, weights.
    const std::size_t record = 4 + 8 * static_cast<std::size_t>(K);
    std::vector<std::byte> message(list.size() * record);
    for (std::size_t i = 0; i < list.size(); ++i) {
      std::memcpy(message.data() + i * record, &list[i], 4);
      std::memcpy(message.data() + i * record + 4, idx.data() + list[i] * K, 4 * K);
      std::memcpy(message.data() + i * record + 4 + 4 * K, w.data() + list[i] * K, 4 * K);
    }
    SourceTokens received;
    received.count = own.count;
    received.records = message.data();
    received.record_bytes = record;

    for (const SourceTokens* tokens : {&own, &received}) {
      RowPlacement pl;
      place_source_rows(topo, node, source, *tokens, views.data(), pl);
      ASSERT_EQ(pl.num_tokens(), own.count);
      std::size_t visits = 0, rows = 0;
      for (int32_t i = 0; i < pl.num_tokens(); ++i) {
        const int32_t t = list[i];
        ASSERT_EQ(pl.token[i], t);
        int last_ld = -1;
        for (int32_t v = pl.visit_begin[i]; v < pl.visit_begin[i + 1]; ++v, ++visits) {
          const int ld = pl.visit_rank[v];
          ASSERT_GT(ld, last_ld) << "owners in local-rank order";
          last_ld = ld;
          ASSERT_EQ(pl.visit_entry[v], want_entry.at({t, ld})) << "token " << t << " owner " << ld;
          int last_row = -1;
          for (int32_t r = pl.row_begin[v]; r < pl.row_begin[v + 1]; ++r, ++rows) {
            ASSERT_GT(pl.row[r], last_row) << "rows in expert order";
            last_row = pl.row[r];
            // The row belongs to the expert whose segment holds it.
            int j = 0;
            while (pl.row[r] >= views[ld].expert_offset[j + 1]) ++j;
            const auto& want = want_row.at({t, ld, j});
            ASSERT_EQ(pl.row[r], want.first) << "token " << t << " owner " << ld << " expert " << j;
            ASSERT_EQ(pl.weight[r], want.second);
          }
        }
      }
      ASSERT_EQ(visits, want_entry.size());
      ASSERT_EQ(rows, want_row.size());
    }
  }
}

TEST(RowPlacement, MoreRowsThanTheLayoutAnnouncedIsAMismatchNamingTheSource) {
  Topology topo{2, 2, 4, 2};  // one node of 2 ranks, 2 experts each
  OwnedLayout a(2, 2), b(2, 2);
  const int32_t expert_tokens[4] = {1, 0, 0, 0};  // source 0 announced one row, for expert 0
  const int32_t rank_tokens[2] = {1, 0};
  build_recv_layout(expert_tokens, rank_tokens, 1, a.view);
  build_recv_layout(expert_tokens, rank_tokens, 1, b.view);
  const RecvLayoutView views[2] = {a.view, b.view};
  const int32_t idx[4] = {0, -1, 0, 1};  // two tokens chose expert 0
  const float w[4] = {1, 1, 1, 1};
  const int32_t list[2] = {0, 1};
  SourceTokens tokens;
  tokens.count = 2;
  tokens.tokens = list;
  tokens.topk_idx = idx;
  tokens.topk_weights = w;
  RowPlacement pl;
  try {
    place_source_rows(topo, 0, 0, tokens, views, pl);
    FAIL() << "placed more tokens than announced";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kMismatch);
    EXPECT_NE(std::string(e.what()).find("rank 0 sent more tokens to rank 0"), std::string::npos) << e.what();
  }
}

// A saved layout restores the receive layout it was saved from, and accepts a
// routing exactly when its counts per expert, rank and node are the same.
TEST(SavedLayout, RestoresTheLayoutAndNamesTheFirstCountThatDiffers) {
  Topology topo{4, 2, 8, 3};
  std::mt19937 rng(11);
  const int T = 12;
  std::vector<int32_t> idx = random_topk(rng, topo, T);
  std::vector<float> w(idx.size(), 0.25f);
  TokenRoutes routes;
  build_token_routes(topo, idx.data(), w.data(), T, routes);
  const int32_t expert_tokens[4 * 2] = {1, 2, 0, 3, 4, 0, 1, 1};
  const int32_t rank_tokens[4] = {2, 3, 4, 1};
  OwnedLayout layout(4, 2), restored(4, 2);
  build_recv_layout(expert_tokens, rank_tokens, 2, layout.view);
  const SavedLayout saved = save_layout(routes, layout.view, {0, 5});
  restore_layout(saved, restored.view);
  EXPECT_EQ(restored.row_base, layout.row_base);
  EXPECT_EQ(restored.token_base, layout.token_base);
  EXPECT_EQ(restored.offset, layout.offset);
  EXPECT_EQ(restored.count, layout.count);
  EXPECT_EQ(saved.rail_rows, (std::vector<int32_t>{0, 5}));

  // The same routing, and the tokens in another order: same counts.
  EXPECT_EQ(first_count_difference(saved, routes), "");
  std::vector<int32_t> rev(idx.size());
  for (int t = 0; t < T; ++t) std::copy_n(idx.begin() + t * 3, 3, rev.begin() + (T - 1 - t) * 3);
  TokenRoutes other;
  build_token_routes(topo, rev.data(), w.data(), T, other);
  EXPECT_EQ(first_count_difference(saved, other), "");

  // One expert fewer for one token: named by its expert.
  std::vector<int32_t> fewer = idx;
  auto chosen = std::find_if(fewer.begin(), fewer.end(), [](int32_t e) { return e >= 0; });
  ASSERT_NE(chosen, fewer.end());
  const int32_t e = *chosen;
  *chosen = -1;
  build_token_routes(topo, fewer.data(), w.data(), T, other);
  EXPECT_EQ(first_count_difference(saved, other),
            "this rank's topk_idx sends " + std::to_string(routes.expert_tokens[e] - 1) + " tokens to expert " +
                std::to_string(e) + ", the layout was made for " + std::to_string(routes.expert_tokens[e]));

  // Same counts per expert, but a token's two experts on one rank moved to two
  // tokens: more distinct tokens reach that rank.
  Topology small{2, 1, 4, 2};
  const int32_t together[4] = {0, 1, 2, -1};  // token 0: experts 0, 1 (rank 0); token 1: expert 2
  const int32_t apart[4] = {0, 2, 1, -1};     // token 0: experts 0, 2; token 1: expert 1
  const float ws[4] = {1, 1, 1, 1};
  TokenRoutes a, b;
  build_token_routes(small, together, ws, 2, a);
  build_token_routes(small, apart, ws, 2, b);
  OwnedLayout l(2, 2);
  const int32_t et[4] = {0, 0, 0, 0}, rt[2] = {0, 0};
  build_recv_layout(et, rt, 1, l.view);
  EXPECT_EQ(first_count_difference(save_layout(a, l.view, {0, 0}), b),
            "this rank's topk_idx sends 2 tokens to rank 0, the layout was made for 1");
}

// Combine's pushed owner partials: on each forwarder, every (owner, entry) the
// owners push (the entries of the sources it forwards, owners other than itself)
// gets its own row, the rows fill [0, total) without a gap, and total stays
// within the region's size, for token lists of random lengths (0 included).
TEST(PushedPartials, EachForwarderGetsOneRowPerPushedPartialWithinItsRegion) {
  std::mt19937 rng(17);
  for (const auto& [R, N] : std::vector<std::pair<int, int>>{{1, 2}, {2, 1}, {4, 1}, {3, 2}, {8, 3}}) {
    const int S = R * N;
    const int32_t T = 9;  // tokens per source, at most
    std::vector<std::vector<int32_t>> lists(R, std::vector<int32_t>(S + 1, 0));
    int64_t longest = 0;
    for (auto& list : lists) {
      for (int s = 0; s < S; ++s) list[s + 1] = list[s] + std::uniform_int_distribution<int32_t>(0, T)(rng);
      longest = std::max<int64_t>(longest, list[S]);
    }
    std::vector<const int32_t*> token_base;
    for (const auto& list : lists) token_base.push_back(list.data());
    for (int f = 0; f < R; ++f) {
      const std::vector<int64_t> base = pushed_partial_bases(f, token_base, N);
      ASSERT_EQ(base.size(), static_cast<std::size_t>(N * R));
      std::set<int64_t> rows;
      int64_t pushed = 0;
      for (int ld = 0; ld < R; ++ld) {
        if (ld == f) continue;
        for (int n = 0; n < N; ++n) {
          const int s = n * R + f;
          for (int32_t e = lists[ld][s]; e < lists[ld][s + 1]; ++e, ++pushed) {
            EXPECT_TRUE(rows.insert(base[n * R + ld] + e).second)
                << "R " << R << " N " << N << ": forwarder " << f << " gets two partials in one row";
          }
        }
      }
      ASSERT_EQ(static_cast<int64_t>(rows.size()), pushed);
      if (pushed == 0) continue;
      EXPECT_EQ(*rows.begin(), 0);
      EXPECT_EQ(*rows.rbegin(), pushed - 1) << "R " << R << " N " << N << ": rows with gaps";
      EXPECT_LE(pushed, int64_t{R - 1} * std::min<int64_t>(int64_t{T} * N, longest));
    }
  }
}

}  // namespace
