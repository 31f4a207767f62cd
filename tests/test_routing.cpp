// SPDX-License-Identifier: MIT
// NodeLimitedRouter against a brute-force reference that shares no method with it:
// scores come from other formulas in double (tanh for the sigmoid, 1 / sum exp(l_j -
// l_e) for the softmax) and every choice is made by enumerating subsets instead of
// sorting: the best node_topk-subset per node, the best max_nodes-subset of nodes,
// the best topk-subset of experts inside them. Then targeted cases for exact ties,
// softmax, underflow, route_scale, bias, every error path and the load/bias helpers.
#include <epcomm/error.hpp>
#include <epcomm/routing.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

using epcomm::ErrorCode;
using epcomm::NodeLimitedRouter;
using epcomm::RouterConfig;
using epcomm::ScoreFunction;

RouterConfig make_config(int experts, int topk, int nodes, int max_nodes,
                         ScoreFunction score = ScoreFunction::kSigmoid, float route_scale = 1.0f) {
  RouterConfig c;
  c.num_experts = experts;
  c.topk = topk;
  c.num_nodes = nodes;
  c.max_nodes = max_nodes;
  c.score = score;
  c.route_scale = route_scale;
  return c;
}

std::string describe(const RouterConfig& c) {
  std::ostringstream os;
  os << "E=" << c.num_experts << " K=" << c.topk << " nodes=" << c.num_nodes << " M=" << c.max_nodes
     << " node_topk=" << c.node_topk << (c.score == ScoreFunction::kSoftmax ? " softmax" : " sigmoid")
     << " scale=" << c.route_scale;
  return os.str();
}

// Calls fn(subset) for every k-subset of [0, n).
void for_each_subset(int n, int k, const std::function<void(const std::vector<int>&)>& fn) {
  std::vector<int> pick;
  std::function<void(int)> extend = [&](int next) {
    if (static_cast<int>(pick.size()) == k) {
      fn(pick);
      return;
    }
    for (int i = next; i < n; ++i) {
      pick.push_back(i);
      extend(i + 1);
      pick.pop_back();
    }
  };
  extend(0);
}

struct Reference {
  std::set<int> experts;
  std::vector<double> score;   // unbiased, by expert
  std::vector<double> biased;  // by expert
};

Reference brute_force(const RouterConfig& c, const float* logits, const float* bias) {
  const int E = c.num_experts, nodes = c.num_nodes, per_node = E / nodes;
  const int m = (c.max_nodes == 0 || c.max_nodes > nodes) ? nodes : c.max_nodes;
  const int node_topk = c.node_topk > 0 ? c.node_topk : std::max(1, c.topk / m);
  Reference ref;
  for (int e = 0; e < E; ++e) {
    double s = 0.0;
    if (c.score == ScoreFunction::kSigmoid) {
      s = 0.5 * (1.0 + std::tanh(0.5 * static_cast<double>(logits[e])));
    } else {
      double denom = 0.0;
      for (int j = 0; j < E; ++j) denom += std::exp(static_cast<double>(logits[j]) - logits[e]);
      s = 1.0 / denom;
    }
    ref.score.push_back(s);
    ref.biased.push_back(s + (bias ? bias[e] : 0.0));
  }
  const double lowest = -std::numeric_limits<double>::infinity();
  std::vector<double> node_score(nodes, lowest);
  const bool node_max = c.node_score == epcomm::NodeScore::kMaxWithoutBias && bias == nullptr;
  for (int n = 0; n < nodes; ++n) {
    if (node_max) {
      for (int i = 0; i < per_node; ++i) node_score[n] = std::max(node_score[n], ref.biased[n * per_node + i]);
      continue;
    }
    for_each_subset(per_node, node_topk, [&](const std::vector<int>& s) {
      double sum = 0.0;
      for (int i : s) sum += ref.biased[n * per_node + i];
      node_score[n] = std::max(node_score[n], sum);
    });
  }
  double best_nodes = lowest;
  std::vector<int> kept;
  for_each_subset(nodes, m, [&](const std::vector<int>& s) {
    double sum = 0.0;
    for (int n : s) sum += node_score[n];
    if (sum > best_nodes) {
      best_nodes = sum;
      kept = s;
    }
  });
  std::vector<int> pool;
  for (int n : kept) {
    for (int i = 0; i < per_node; ++i) pool.push_back(n * per_node + i);
  }
  double best = lowest;
  for_each_subset(static_cast<int>(pool.size()), c.topk, [&](const std::vector<int>& s) {
    double sum = 0.0;
    for (int i : s) sum += ref.biased[pool[i]];
    if (sum > best) {
      best = sum;
      ref.experts.clear();
      for (int i : s) ref.experts.insert(pool[i]);
    }
  });
  return ref;
}

// One routed token against the reference: the chosen set, weights to 1e-6 relative,
// and the output order by descending biased score.
void expect_matches(const RouterConfig& c, const Reference& ref, const int32_t* idx, const float* w) {
  const std::set<int> got(idx, idx + c.topk);  // a duplicate shrinks the set and fails here too
  ASSERT_EQ(got, ref.experts);
  double sum = 0.0;
  for (int e : ref.experts) sum += ref.score[e];
  if (!c.normalize_weights) sum = 1.0;
  for (int k = 0; k < c.topk; ++k) {
    const double want = c.route_scale * ref.score[idx[k]] / sum;
    EXPECT_NEAR(w[k], want, 1e-6 * want) << "k=" << k << " expert " << idx[k];
    if (k > 0) {
      EXPECT_GE(ref.biased[idx[k - 1]], ref.biased[idx[k]]) << "order at k=" << k;
    }
  }
}

// The plain top-k set, for telling whether the node limit changed a choice.
std::set<int> plain_topk(const std::vector<double>& biased, int k) {
  std::vector<int> order(biased.size());
  for (int e = 0; e < static_cast<int>(order.size()); ++e) order[e] = e;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return biased[a] > biased[b]; });
  return std::set<int>(order.begin(), order.begin() + k);
}

TEST(NodeLimitedRouter, MatchesBruteForceReference) {
  std::mt19937 rng(2024);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  std::uniform_real_distribution<float> bias_dist(-0.2f, 0.2f);
  const int tokens = 4;
  int checked = 0, limit_binding = 0;
  for (int E : {8, 12, 16}) {
    for (int nodes : {1, 2, 4}) {
      const int per_node = E / nodes;
      for (int K : {1, 2, 3, 4, 8}) {
        for (int m = 1; m <= nodes; ++m) {
          if (K > m * per_node) continue;
          // Default, the smallest and the largest node_topk.
          for (int node_topk : std::set<int>{0, 1, per_node}) {
            for (ScoreFunction f : {ScoreFunction::kSigmoid, ScoreFunction::kSoftmax}) {
              RouterConfig c = make_config(E, K, nodes, m, f, f == ScoreFunction::kSigmoid ? 2.5f : 1.0f);
              c.node_topk = node_topk;
              SCOPED_TRACE(describe(c));
              const NodeLimitedRouter router(c);
              std::vector<float> logits(tokens * E), bias(E);
              for (float& v : logits) v = logit_dist(rng);
              for (float& v : bias) v = bias_dist(rng);
              std::vector<int32_t> idx(tokens * K);
              std::vector<float> w(tokens * K);
              router.route(logits.data(), tokens, bias.data(), idx.data(), w.data());
              for (int t = 0; t < tokens; ++t) {
                SCOPED_TRACE("token " + std::to_string(t));
                const Reference ref = brute_force(c, logits.data() + t * E, bias.data());
                expect_matches(c, ref, idx.data() + t * K, w.data() + t * K);
                if (::testing::Test::HasFailure()) return;
                limit_binding += ref.experts != plain_topk(ref.biased, K);
                ++checked;
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 1000);
  // The sweep must exercise the node limit, not just plain top-k.
  EXPECT_GT(limit_binding, 100);
}

// The DeepSeek gate options: unnormalised weights, and the node score as the node's
// max when there is no bias (with a bias the top-sum stays).
TEST(NodeLimitedRouter, DeepSeekGateOptionsMatchBruteForceReference) {
  std::mt19937 rng(77);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  std::uniform_real_distribution<float> bias_dist(-0.2f, 0.2f);
  const int tokens = 8;
  int checked = 0, max_differs = 0;
  for (int nodes : {2, 4}) {
    for (int K : {2, 4, 6}) {
      for (bool with_bias : {false, true}) {
        for (ScoreFunction f : {ScoreFunction::kSigmoid, ScoreFunction::kSoftmax}) {
          RouterConfig c = make_config(16, K, nodes, 1 + nodes / 2, f, 2.5f);
          c.normalize_weights = false;
          c.node_score = epcomm::NodeScore::kMaxWithoutBias;
          SCOPED_TRACE(describe(c) + (with_bias ? " bias" : " no bias"));
          std::vector<float> logits(tokens * 16), bias(16);
          for (float& v : logits) v = logit_dist(rng);
          for (float& v : bias) v = bias_dist(rng);
          const float* b = with_bias ? bias.data() : nullptr;
          std::vector<int32_t> idx(tokens * K);
          std::vector<float> w(tokens * K);
          NodeLimitedRouter(c).route(logits.data(), tokens, b, idx.data(), w.data());
          RouterConfig top_sum = c;
          top_sum.node_score = epcomm::NodeScore::kTopSum;
          std::vector<int32_t> idx_sum(tokens * K);
          std::vector<float> w_sum(tokens * K);
          NodeLimitedRouter(top_sum).route(logits.data(), tokens, b, idx_sum.data(), w_sum.data());
          for (int t = 0; t < tokens; ++t) {
            SCOPED_TRACE("token " + std::to_string(t));
            expect_matches(c, brute_force(c, logits.data() + t * 16, b), idx.data() + t * K, w.data() + t * K);
            if (::testing::Test::HasFailure()) return;
            const bool same = std::equal(idx.begin() + t * K, idx.begin() + (t + 1) * K, idx_sum.begin() + t * K);
            if (with_bias) {
              EXPECT_TRUE(same) << "with a bias the node score must stay the top-sum";
            }
            max_differs += !same;
            ++checked;
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, 2 * 3 * 2 * 2 * tokens);
  // Without a bias the max must change some choices, or the sweep tests nothing.
  EXPECT_GT(max_differs, 0);
}

TEST(NodeLimitedRouter, RejectsAnUnknownNodeScore) {
  RouterConfig c = make_config(8, 2, 2, 1);
  c.node_score = static_cast<epcomm::NodeScore>(7);
  try {
    NodeLimitedRouter r(c);
    FAIL() << "no error";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("node score 7"), std::string::npos) << e.what();
  }
}

TEST(NodeLimitedRouter, DefaultsFollowTheEffectiveNodeLimit) {
  struct Case {
    int experts, topk, nodes, max_nodes, node_topk, want_max_nodes, want_node_topk;
  };
  for (const Case& k : {Case{16, 8, 4, 0, 0, 4, 2}, Case{16, 8, 4, 4, 0, 4, 2}, Case{16, 8, 4, 9, 0, 4, 2},
                        Case{16, 8, 4, 2, 0, 2, 4}, Case{16, 3, 4, 2, 0, 2, 1}, Case{16, 1, 4, 3, 0, 3, 1},
                        Case{16, 4, 4, 2, 3, 2, 3}, Case{8, 2, 1, 1, 0, 1, 2}}) {
    RouterConfig c = make_config(k.experts, k.topk, k.nodes, k.max_nodes);
    c.node_topk = k.node_topk;
    SCOPED_TRACE(describe(c));
    const NodeLimitedRouter router(c);
    EXPECT_EQ(router.experts_per_node(), k.experts / k.nodes);
    EXPECT_EQ(router.effective_max_nodes(), k.want_max_nodes);
    EXPECT_EQ(router.effective_node_topk(), k.want_node_topk);
  }
}

TEST(NodeLimitedRouter, NodeLimitOffEqualsPlainTopK) {
  std::mt19937 rng(7);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  std::uniform_real_distribution<float> bias_dist(-0.2f, 0.2f);
  const int E = 16, K = 8, tokens = 32;  // K = 8 > 4 experts per node: only valid unlimited
  for (int m : {0, 4, 7}) {
    const RouterConfig c = make_config(E, K, 4, m);
    SCOPED_TRACE(describe(c));
    const NodeLimitedRouter router(c);
    EXPECT_EQ(router.effective_max_nodes(), 4);
    std::vector<float> logits(tokens * E), bias(E);
    for (float& v : logits) v = logit_dist(rng);
    for (float& v : bias) v = bias_dist(rng);
    std::vector<int32_t> idx(tokens * K);
    std::vector<float> w(tokens * K);
    router.route(logits.data(), tokens, bias.data(), idx.data(), w.data());
    for (int t = 0; t < tokens; ++t) {
      // Plain top-k by a full sort of (biased score, expert) pairs.
      std::vector<std::pair<double, int>> ranked;
      for (int e = 0; e < E; ++e) {
        const double l = logits[t * E + e];
        ranked.emplace_back(-(1.0 / (1.0 + std::exp(-l)) + bias[e]), e);
      }
      std::sort(ranked.begin(), ranked.end());
      for (int k = 0; k < K; ++k) EXPECT_EQ(idx[t * K + k], ranked[k].second) << "token " << t << " k=" << k;
    }
  }
}

// Sigmoid(0) = 0.5 and dyadic biases are exact in float, so these scores tie exactly.
TEST(NodeLimitedRouter, ExpertTiesGoToTheLowerIndex) {
  const std::vector<float> logits(8, 0.0f);
  const float bias[8] = {0, 0, 0, 0.25f, 0, 0.25f, 0, 0.25f};
  int32_t idx[3];
  float w[3];
  NodeLimitedRouter(make_config(8, 2, 1, 0)).route(logits.data(), 1, bias, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 2), (std::vector<int32_t>{3, 5}));
  NodeLimitedRouter(make_config(8, 3, 1, 0)).route(logits.data(), 1, bias, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 3), (std::vector<int32_t>{3, 5, 7}));
  // Equal scores everywhere: the first K experts, in index order.
  NodeLimitedRouter(make_config(8, 3, 2, 1)).route(logits.data(), 1, nullptr, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 3), (std::vector<int32_t>{0, 1, 2}));
}

TEST(NodeLimitedRouter, NodeTiesGoToTheLowerIndex) {
  // 4 nodes of 2 experts, node_topk 2. Biased scores by node: {0.5, 0.5},
  // {0.625, 0.625}, {0.5, 0.5}, {0.75, 0.5}: nodes 1 and 3 tie at 1.25 although
  // node 3 holds the single best expert; nodes 0 and 2 tie at 1.0.
  const std::vector<float> logits(8, 0.0f);
  const float bias[8] = {0, 0, 0.125f, 0.125f, 0, 0, 0.25f, 0};
  int32_t idx[6];
  float w[6];
  RouterConfig one = make_config(8, 2, 4, 1);
  one.node_topk = 2;
  NodeLimitedRouter(one).route(logits.data(), 1, bias, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 2), (std::vector<int32_t>{2, 3}));
  // Three nodes: 1 and 3, then node 0 wins its tie with node 2 at the boundary.
  NodeLimitedRouter(make_config(8, 6, 4, 3)).route(logits.data(), 1, bias, idx, w);
  EXPECT_EQ(std::vector<int32_t>(idx, idx + 6), (std::vector<int32_t>{6, 2, 3, 0, 1, 7}));
}

TEST(NodeLimitedRouter, SoftmaxNormalisesOverAllExperts) {
  // Softmax scores {1/2, 1/6, 1/6, 1/6}: the bias lifts expert 1 to 1/6 + 0.35 above
  // expert 0 only because the scores are normalised; weights follow exp ratios 3:1.
  const float logits[4] = {std::log(3.0f), 0.0f, 0.0f, 0.0f};
  const float bias[4] = {0.0f, 0.35f, 0.0f, 0.0f};
  int32_t idx[2];
  float w[2];
  NodeLimitedRouter(make_config(4, 2, 1, 0, ScoreFunction::kSoftmax)).route(logits, 1, bias, idx, w);
  EXPECT_EQ(idx[0], 1);
  EXPECT_EQ(idx[1], 0);
  EXPECT_NEAR(w[0], 0.25, 1e-6);
  EXPECT_NEAR(w[1], 0.75, 1e-6);
}

TEST(NodeLimitedRouter, SoftmaxIsStableForLargeLogits) {
  const RouterConfig c = make_config(4, 2, 1, 0, ScoreFunction::kSoftmax);
  const double e1 = std::exp(-1.0);
  for (float shift : {1000.0f, 0.0f, -1000.0f}) {
    const float logits[4] = {shift, shift - 2.0f, shift - 1.0f, shift - 50.0f};
    int32_t idx[2];
    float w[2];
    NodeLimitedRouter(c).route(logits, 1, nullptr, idx, w);
    EXPECT_EQ(idx[0], 0) << "shift " << shift;
    EXPECT_EQ(idx[1], 2) << "shift " << shift;
    EXPECT_NEAR(w[0], 1.0 / (1.0 + e1), 1e-6) << "shift " << shift;
    EXPECT_NEAR(w[1], e1 / (1.0 + e1), 1e-6) << "shift " << shift;
  }
}

TEST(NodeLimitedRouter, UnderflowedScoresGiveEqualWeights) {
  int32_t idx[2];
  float w[2];
  // Softmax: experts 1 and 2 sit e^-200 below the max, 0 in float; the bias picks them.
  const float soft_logits[4] = {0.0f, -200.0f, -200.0f, -200.0f};
  const float soft_bias[4] = {0.0f, 2.0f, 2.0f, 0.0f};
  NodeLimitedRouter(make_config(4, 2, 1, 0, ScoreFunction::kSoftmax, 3.0f)).route(soft_logits, 1, soft_bias, idx, w);
  EXPECT_EQ(idx[0], 1);
  EXPECT_EQ(idx[1], 2);
  EXPECT_EQ(w[0], 1.5f);
  EXPECT_EQ(w[1], 1.5f);
  // Sigmoid of -200 is 0 in float.
  const float sig_logits[4] = {-200.0f, -200.0f, -200.0f, -200.0f};
  const float sig_bias[4] = {0.0f, 0.0f, 0.5f, 0.25f};
  NodeLimitedRouter(make_config(4, 2, 1, 0, ScoreFunction::kSigmoid, 3.0f)).route(sig_logits, 1, sig_bias, idx, w);
  EXPECT_EQ(idx[0], 2);
  EXPECT_EQ(idx[1], 3);
  EXPECT_EQ(w[0], 1.5f);
  EXPECT_EQ(w[1], 1.5f);
}

TEST(NodeLimitedRouter, RouteScaleMultipliesTheWeights) {
  std::mt19937 rng(11);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  const int E = 16, K = 4, tokens = 16;
  std::vector<float> logits(tokens * E);
  for (float& v : logits) v = logit_dist(rng);
  std::vector<int32_t> idx1(tokens * K), idx2(tokens * K);
  std::vector<float> w1(tokens * K), w2(tokens * K);
  NodeLimitedRouter(make_config(E, K, 4, 2)).route(logits.data(), tokens, nullptr, idx1.data(), w1.data());
  NodeLimitedRouter(make_config(E, K, 4, 2, ScoreFunction::kSigmoid, 2.5f))
      .route(logits.data(), tokens, nullptr, idx2.data(), w2.data());
  EXPECT_EQ(idx1, idx2);
  for (int t = 0; t < tokens; ++t) {
    double sum = 0.0;
    for (int k = 0; k < K; ++k) {
      sum += w1[t * K + k];
      EXPECT_NEAR(w2[t * K + k], 2.5 * w1[t * K + k], 1e-6 * 2.5 * w1[t * K + k]);
    }
    EXPECT_NEAR(sum, 1.0, 1e-6) << "token " << t;
  }
}

TEST(NodeLimitedRouter, BiasSteersSelectionNotWeights) {
  // Sigmoid scores {0.881, 0.731, 0.5, 0.269}; the bias moves expert 3 to the top.
  const float logits[4] = {2.0f, 1.0f, 0.0f, -1.0f};
  const float bias[4] = {0.0f, 0.0f, 0.0f, 1.0f};
  int32_t idx[2];
  float w[2];
  NodeLimitedRouter(make_config(4, 2, 1, 0)).route(logits, 1, bias, idx, w);
  const double s0 = 1.0 / (1.0 + std::exp(-2.0)), s3 = 1.0 / (1.0 + std::exp(1.0));
  EXPECT_EQ(idx[0], 3);
  EXPECT_EQ(idx[1], 0);
  EXPECT_NEAR(w[0], s3 / (s0 + s3), 1e-6);
  EXPECT_NEAR(w[1], s0 / (s0 + s3), 1e-6);

  // Shifting every bias by one constant changes no choice and, with weights from the
  // unbiased scores, no weight; nullptr acts as all-zero bias.
  std::mt19937 rng(5);
  std::normal_distribution<float> logit_dist(0.0f, 2.0f);
  std::uniform_real_distribution<float> bias_dist(-0.2f, 0.2f);
  const int E = 16, K = 4, tokens = 16;
  const NodeLimitedRouter router(make_config(E, K, 4, 2));
  std::vector<float> many(tokens * E), b(E), shifted(E), zero(E, 0.0f);
  for (float& v : many) v = logit_dist(rng);
  for (int e = 0; e < E; ++e) {
    b[e] = bias_dist(rng);
    shifted[e] = b[e] + 0.5f;
  }
  std::vector<int32_t> i1(tokens * K), i2(tokens * K), i3(tokens * K), i4(tokens * K);
  std::vector<float> w1(tokens * K), w2(tokens * K), w3(tokens * K), w4(tokens * K);
  router.route(many.data(), tokens, b.data(), i1.data(), w1.data());
  router.route(many.data(), tokens, shifted.data(), i2.data(), w2.data());
  router.route(many.data(), tokens, zero.data(), i3.data(), w3.data());
  router.route(many.data(), tokens, nullptr, i4.data(), w4.data());
  EXPECT_EQ(i1, i2);
  EXPECT_EQ(w1, w2);
  EXPECT_NE(i1, i3);  // the bias did steer something, or the shift check proves nothing
  EXPECT_EQ(i3, i4);
  EXPECT_EQ(w3, w4);
}

// Runs body, which must throw epcomm::Error with `code` and a message that carries the
// rank prefix and every needle.
void expect_error(const std::function<void()>& body, ErrorCode code, std::initializer_list<const char*> needles) {
  try {
    body();
    ADD_FAILURE() << "no error; expected one naming " << *needles.begin();
  } catch (const epcomm::Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), code) << what;
    EXPECT_EQ(what.rfind("epcomm rank ", 0), 0u) << what;
    for (const char* needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what << " lacks " << needle;
  }
}

void expect_bad_config(const RouterConfig& c, std::initializer_list<const char*> needles) {
  SCOPED_TRACE(describe(c));
  expect_error([&] { NodeLimitedRouter r(c); }, ErrorCode::kInvalidArgument, needles);
}

TEST(NodeLimitedRouter, BadConfigsNameTheBadValue) {
  expect_bad_config(make_config(0, 1, 1, 0), {"num_experts=0"});
  expect_bad_config(make_config(-4, 1, 1, 0), {"num_experts=-4"});
  expect_bad_config(make_config(8, 1, 0, 0), {"num_nodes=0"});
  expect_bad_config(make_config(8, 1, -2, 0), {"num_nodes=-2"});
  expect_bad_config(make_config(12, 1, 5, 0), {"num_experts=12", "num_nodes=5"});
  expect_bad_config(make_config(8, 0, 1, 0), {"topk=0"});
  expect_bad_config(make_config(8, -1, 1, 0), {"topk=-1"});
  expect_bad_config(make_config(8, 9, 1, 0), {"topk=9", "num_experts=8"});
  expect_bad_config(make_config(16, 9, 2, 1), {"topk=9 cannot be served by max_nodes=1 nodes of 8 experts"});
  expect_bad_config(make_config(16, 5, 4, 1), {"topk=5 cannot be served by max_nodes=1 nodes of 4 experts"});
  expect_bad_config(make_config(8, 2, 2, -1), {"max_nodes=-1"});
  RouterConfig c = make_config(8, 2, 2, 1);
  c.node_topk = -2;
  expect_bad_config(c, {"node_topk=-2"});
  c.node_topk = 5;
  expect_bad_config(c, {"node_topk=5", "4 experts"});
  expect_bad_config(make_config(8, 2, 2, 1, static_cast<ScoreFunction>(7)), {"score function 7"});
  const float inf = std::numeric_limits<float>::infinity();
  expect_bad_config(make_config(8, 2, 2, 1, ScoreFunction::kSigmoid, inf), {"route_scale=inf"});
  expect_bad_config(make_config(8, 2, 2, 1, ScoreFunction::kSigmoid, std::nanf("")), {"route_scale=nan"});
}

TEST(NodeLimitedRouter, BadInputsNameTheBadValue) {
  const float inf = std::numeric_limits<float>::infinity();
  const NodeLimitedRouter router(make_config(8, 2, 2, 1));
  int32_t idx[6];
  float w[6];
  struct Case {
    int token, expert;
    float value;
    const char* value_text;
  };
  for (const Case& k : {Case{1, 3, std::nanf(""), "nan"}, Case{0, 0, inf, "inf"}, Case{2, 7, -inf, "-inf"}}) {
    std::vector<float> logits(3 * 8, 0.5f);
    logits[k.token * 8 + k.expert] = k.value;
    const std::string token = "token " + std::to_string(k.token), expert = "expert " + std::to_string(k.expert);
    expect_error([&] { router.route(logits.data(), 3, nullptr, idx, w); }, ErrorCode::kInvalidArgument,
                 {token.c_str(), expert.c_str(), k.value_text});
  }
  const std::vector<float> logits(8, 0.5f);
  std::vector<float> bias(8, 0.0f);
  bias[5] = inf;
  expect_error([&] { router.route(logits.data(), 1, bias.data(), idx, w); }, ErrorCode::kInvalidArgument,
               {"expert 5", "inf"});
  bias[5] = 0.0f;
  bias[0] = std::nanf("");
  expect_error([&] { router.route(logits.data(), 1, bias.data(), idx, w); }, ErrorCode::kInvalidArgument,
               {"expert 0", "nan"});
  expect_error([&] { router.route(logits.data(), -1, nullptr, idx, w); }, ErrorCode::kInvalidArgument,
               {"num_tokens=-1"});
}

TEST(ExpertLoad, CountsSelectionsAndSkipsEmptySlots) {
  const int32_t idx[8] = {0, 2, -1, 2, 3, 0, 2, -1};  // 4 tokens, topk 2
  std::vector<int64_t> load(5, 99);                    // overwritten, not accumulated
  epcomm::count_expert_load(idx, 4, 2, 5, load.data());
  EXPECT_EQ(load, (std::vector<int64_t>{2, 0, 3, 1, 0}));
  std::fill(load.begin(), load.end(), 99);
  epcomm::count_expert_load(idx, 0, 2, 5, load.data());
  EXPECT_EQ(load, (std::vector<int64_t>(5, 0)));
}

TEST(ExpertLoad, RejectsOutOfRangeIds) {
  int64_t load[4];
  const int32_t too_big[4] = {0, 1, 4, 2};
  expect_error([&] { epcomm::count_expert_load(too_big, 2, 2, 4, load); }, ErrorCode::kInvalidArgument,
               {"token 1", "k=0", "expert id 4"});
  const int32_t negative[4] = {0, -2, 1, 2};
  expect_error([&] { epcomm::count_expert_load(negative, 2, 2, 4, load); }, ErrorCode::kInvalidArgument,
               {"token 0", "k=1", "expert id -2"});
  expect_error([&] { epcomm::count_expert_load(negative, -1, 2, 4, load); }, ErrorCode::kInvalidArgument,
               {"num_tokens=-1"});
  expect_error([&] { epcomm::count_expert_load(negative, 2, -3, 4, load); }, ErrorCode::kInvalidArgument,
               {"topk=-3"});
  expect_error([&] { epcomm::count_expert_load(negative, 2, 2, -4, load); }, ErrorCode::kInvalidArgument,
               {"num_experts=-4"});
}

TEST(ExpertBias, StepsAgainstTheLoad) {
  const float gamma = 0.001f;
  float bias[4] = {0.5f, -0.25f, 0.125f, 0.0f};
  const int64_t load[4] = {10, 2, 6, 6};  // mean 6: above, below, equal, equal
  epcomm::update_expert_bias(bias, load, 4, gamma);
  EXPECT_EQ(bias[0], 0.5f - gamma);
  EXPECT_EQ(bias[1], -0.25f + gamma);
  EXPECT_EQ(bias[2], 0.125f);
  EXPECT_EQ(bias[3], 0.0f);
}

TEST(ExpertBias, ComparesAgainstTheExactMean) {
  const float gamma = 0.5f;
  float bias[3] = {0.0f, 0.0f, 0.0f};
  const int64_t fractional[3] = {1, 2, 2};  // mean 5/3: an integer mean of 1 would leave expert 0
  epcomm::update_expert_bias(bias, fractional, 3, gamma);
  EXPECT_EQ(std::vector<float>(bias, bias + 3), (std::vector<float>{0.5f, -0.5f, -0.5f}));
  float big_bias[3] = {0.0f, 0.0f, 0.0f};
  const int64_t big[3] = {3000000000, 1000000000, 2000000000};  // past int32
  epcomm::update_expert_bias(big_bias, big, 3, gamma);
  EXPECT_EQ(std::vector<float>(big_bias, big_bias + 3), (std::vector<float>{-0.5f, 0.5f, 0.0f}));
}

TEST(ExpertBias, RejectsBadArguments) {
  float bias[2] = {0.0f, 0.0f};
  const int64_t load[2] = {1, 2};
  expect_error([&] { epcomm::update_expert_bias(bias, load, -1, 0.1f); }, ErrorCode::kInvalidArgument,
               {"num_experts=-1"});
  expect_error([&] { epcomm::update_expert_bias(bias, load, 2, std::nanf("")); }, ErrorCode::kInvalidArgument,
               {"gamma=nan"});
  EXPECT_EQ(bias[0], 0.0f);  // a rejected step leaves the bias alone
  EXPECT_EQ(bias[1], 0.0f);
}

}  // namespace
