// NodeLimitedRouter against a brute-force reference that enumerates subsets instead
// of sorting: the best node_topk-subset per node, the best max_nodes-subset of nodes,
// the best topk-subset of experts inside them.
#include <epcomm/error.hpp>
#include <epcomm/routing.hpp>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <set>

namespace {

using epcomm::NodeLimitedRouter;
using epcomm::RouterConfig;
using epcomm::ScoreFunction;

// Calls fn(subset) for every k-subset of [0, n).
void for_each_subset(int n, int k, const std::function<void(const std::vector<int>&)>& fn) {
  std::vector<int> pick;
  std::function<void(int)> rec = [&](int next) {
    if (static_cast<int>(pick.size()) == k) {
      fn(pick);
      return;
    }
    for (int i = next; i < n; ++i) {
      pick.push_back(i);
      rec(i + 1);
      pick.pop_back();
    }
  };
  rec(0);
}

struct Reference {
  std::set<int> experts;
  std::vector<double> score;  // unbiased, by expert
};

Reference brute_force(const RouterConfig& c, int m, int node_topk, const float* logits, const float* bias) {
  const int E = c.num_experts, per_node = E / c.num_nodes;
  Reference ref;
  ref.score.resize(E);
  double denom = 0;
  for (int e = 0; e < E; ++e) denom += std::exp(static_cast<double>(logits[e]));
  for (int e = 0; e < E; ++e) {
    ref.score[e] = c.score == ScoreFunction::kSigmoid ? 1.0 / (1.0 + std::exp(-static_cast<double>(logits[e])))
                                                      : std::exp(static_cast<double>(logits[e])) / denom;
  }
  auto biased = [&](int e) { return ref.score[e] + (bias ? bias[e] : 0.0); };
  std::vector<double> node_score(c.num_nodes, -1e300);
  for (int n = 0; n < c.num_nodes; ++n) {
    for_each_subset(per_node, node_topk, [&](const std::vector<int>& s) {
      double sum = 0;
      for (int i : s) sum += biased(n * per_node + i);
      node_score[n] = std::max(node_score[n], sum);
    });
  }
  double best_nodes = -1e300;
  std::vector<int> chosen_nodes;
  for_each_subset(c.num_nodes, m, [&](const std::vector<int>& s) {
    double sum = 0;
    for (int n : s) sum += node_score[n];
    if (sum > best_nodes) {
      best_nodes = sum;
      chosen_nodes = s;
    }
  });
  std::vector<int> pool;
  for (int n : chosen_nodes)
    for (int i = 0; i < per_node; ++i) pool.push_back(n * per_node + i);
  double best = -1e300;
  for_each_subset(static_cast<int>(pool.size()), c.topk, [&](const std::vector<int>& s) {
    double sum = 0;
    for (int i : s) sum += biased(pool[i]);
    if (sum > best) {
      best = sum;
      ref.experts.clear();
      for (int i : s) ref.experts.insert(pool[i]);
    }
  });
  return ref;
}

TEST(NodeLimitedRouter, MatchesBruteForce) {
  std::mt19937 rng(21);
  std::normal_distribution<float> logit(0.0f, 2.0f), bias_dist(0.0f, 0.1f);
  int checked = 0;
  for (int E : {8, 12, 16}) {
    for (int nodes : {1, 2, 4}) {
      if (E % nodes) continue;
      for (int K : {1, 2, 3, 4, 8}) {
        for (int m = 1; m <= nodes; ++m) {
          if (K > m * (E / nodes)) continue;
          for (ScoreFunction f : {ScoreFunction::kSigmoid, ScoreFunction::kSoftmax}) {
            RouterConfig c;
            c.num_experts = E;
            c.topk = K;
            c.num_nodes = nodes;
            c.max_nodes = m;
            c.score = f;
            c.route_scale = 2.5f;
            NodeLimitedRouter router(c);
            const int T = 6;
            std::vector<float> logits(T * E), bias(E);
            for (float& v : logits) v = logit(rng);
            for (float& v : bias) v = bias_dist(rng);
            std::vector<int32_t> idx(T * K);
            std::vector<float> w(T * K);
            router.route(logits.data(), T, bias.data(), idx.data(), w.data());
            for (int t = 0; t < T; ++t) {
              Reference ref = brute_force(c, m, router.effective_node_topk(), logits.data() + t * E, bias.data());
              std::set<int> got(idx.begin() + t * K, idx.begin() + (t + 1) * K);
              ASSERT_EQ(got, ref.experts) << "E=" << E << " nodes=" << nodes << " K=" << K << " M=" << m;
              double sum = 0;
              for (int e : ref.experts) sum += ref.score[e];
              for (int k = 0; k < K; ++k) {
                const int e = idx[t * K + k];
                EXPECT_NEAR(w[t * K + k], 2.5 * ref.score[e] / sum, 1e-5 * 2.5);
                if (k > 0) {  // descending biased score
                  const int prev = idx[t * K + k - 1];
                  EXPECT_GE(ref.score[prev] + bias[prev], ref.score[e] + bias[e]);
                }
              }
              ++checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(checked, 500);
}

TEST(NodeLimitedRouter, NoLimitEqualsPlainTopK) {
  RouterConfig c;
  c.num_experts = 16;
  c.topk = 4;
  c.num_nodes = 4;
  c.max_nodes = 9;  // more than there are nodes
  NodeLimitedRouter router(c);
  EXPECT_EQ(router.effective_max_nodes(), 4);
  std::vector<float> logits(16);
  for (int e = 0; e < 16; ++e) logits[e] = static_cast<float>((e * 7) % 16);  // top 4: experts 9, 2, 11, 4
  std::vector<int32_t> idx(4);
  std::vector<float> w(4);
  router.route(logits.data(), 1, nullptr, idx.data(), w.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{9, 2, 11, 4}));
}

TEST(NodeLimitedRouter, BiasSteersSelectionButNotWeights) {
  RouterConfig c;
  c.num_experts = 4;
  c.topk = 1;
  NodeLimitedRouter router(c);
  const float logits[4] = {2.0f, 1.0f, 0.0f, -1.0f};
  const float bias[4] = {0.0f, 0.0f, 0.0f, 1.0f};
  int32_t idx;
  float w;
  router.route(logits, 1, bias, &idx, &w);
  EXPECT_EQ(idx, 3);
  EXPECT_FLOAT_EQ(w, 1.0f);  // normalised over the chosen (one) expert's unbiased score
  c.topk = 2;
  NodeLimitedRouter two(c);
  int32_t idx2[2];
  float w2[2];
  two.route(logits, 1, bias, idx2, w2);
  const double s3 = 1 / (1 + std::exp(1.0)), s0 = 1 / (1 + std::exp(-2.0));
  EXPECT_EQ(idx2[0], 3);
  EXPECT_EQ(idx2[1], 0);
  EXPECT_NEAR(w2[0], s3 / (s0 + s3), 1e-6);
}

TEST(NodeLimitedRouter, TiesGoToLowerIndex) {
  RouterConfig c;
  c.num_experts = 8;
  c.topk = 2;
  c.num_nodes = 4;
  c.max_nodes = 1;
  NodeLimitedRouter router(c);
  const std::vector<float> logits(8, 0.5f);
  int32_t idx[2];
  float w[2];
  router.route(logits.data(), 1, nullptr, idx, w);
  EXPECT_EQ(idx[0], 0);
  EXPECT_EQ(idx[1], 1);
}

void expect_error(const std::function<void()>& body, const std::string& needle) {
  try {
    body();
    ADD_FAILURE() << "accepted: " << needle;
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(NodeLimitedRouter, ErrorsNameTheBadValue) {
  RouterConfig c;
  c.num_experts = 8;
  c.topk = 5;
  c.num_nodes = 2;
  c.max_nodes = 1;
  expect_error([&] { NodeLimitedRouter r(c); }, "topk=5 cannot be served by max_nodes=1 nodes of 4 experts");
  c.num_nodes = 3;
  expect_error([&] { NodeLimitedRouter r(c); }, "num_experts=8 is not divisible by num_nodes=3");
  c.num_nodes = 2;
  c.topk = 9;
  expect_error([&] { NodeLimitedRouter r(c); }, "topk=9");
  c.topk = 2;
  c.node_topk = 5;
  expect_error([&] { NodeLimitedRouter r(c); }, "node_topk=5");
  c.node_topk = 0;
  NodeLimitedRouter router(c);
  std::vector<float> logits(16, 0.0f);
  logits[11] = std::nanf("");
  int32_t idx[4];
  float w[4];
  expect_error([&] { router.route(logits.data(), 2, nullptr, idx, w); }, "token 1 for expert 3");
}

TEST(ExpertLoad, CountsAndRejects) {
  const int32_t idx[6] = {0, 2, -1, 2, 3, 0};
  int64_t load[4];
  epcomm::count_expert_load(idx, 3, 2, 4, load);
  EXPECT_EQ(std::vector<int64_t>(load, load + 4), (std::vector<int64_t>{2, 0, 2, 1}));
  const int32_t bad[2] = {0, 4};
  expect_error([&] { epcomm::count_expert_load(bad, 1, 2, 4, load); }, "topk_idx[0][1]=4");
}

TEST(ExpertBias, MovesAgainstLoad) {
  float bias[4] = {0.0f, 0.0f, 0.5f, 0.0f};
  const int64_t load[4] = {10, 2, 6, 6};  // mean 6
  epcomm::update_expert_bias(bias, load, 4, 0.001f);
  EXPECT_FLOAT_EQ(bias[0], -0.001f);
  EXPECT_FLOAT_EQ(bias[1], 0.001f);
  EXPECT_FLOAT_EQ(bias[2], 0.5f);
  EXPECT_FLOAT_EQ(bias[3], 0.0f);
}

}  // namespace
