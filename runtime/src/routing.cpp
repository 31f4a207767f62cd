// SPDX-License-Identifier: MIT
#include <epcomm/routing.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <numeric>
#include <vector>

#include "util/check.hpp"

namespace epcomm {
namespace {

// Descending value, ties towards the lower index: a strict total order on indices,
// so whichever partial-sort algorithm runs, the selection and its order are a pure
// function of the inputs (values are finite, so no NaN breaks the ordering).
struct ByValueThenIndex {
  const float* value;
  bool operator()(int a, int b) const { return value[a] > value[b] || (value[a] == value[b] && a < b); }
};

}  // namespace

NodeLimitedRouter::NodeLimitedRouter(const RouterConfig& c) : config_(c) {
  EPCOMM_REQUIRE(c.num_experts > 0, kInvalidArgument, "num_experts=" << c.num_experts << " must be positive");
  EPCOMM_REQUIRE(c.num_nodes >= 1, kInvalidArgument, "num_nodes=" << c.num_nodes << " must be at least 1");
  EPCOMM_REQUIRE(c.num_experts % c.num_nodes == 0, kInvalidArgument,
                 "num_experts=" << c.num_experts << " is not divisible by num_nodes=" << c.num_nodes);
  EPCOMM_REQUIRE(c.topk >= 1 && c.topk <= c.num_experts, kInvalidArgument,
                 "topk=" << c.topk << " must be in [1, num_experts=" << c.num_experts << "]");
  EPCOMM_REQUIRE(c.max_nodes >= 0, kInvalidArgument, "max_nodes=" << c.max_nodes << " is negative");
  EPCOMM_REQUIRE(c.node_topk >= 0, kInvalidArgument, "node_topk=" << c.node_topk << " is negative");
  EPCOMM_REQUIRE(c.score == ScoreFunction::kSigmoid || c.score == ScoreFunction::kSoftmax, kInvalidArgument,
                 "score function " << static_cast<int>(c.score) << " is not sigmoid (0) or softmax (1)");
  EPCOMM_REQUIRE(c.node_score == NodeScore::kTopSum || c.node_score == NodeScore::kMaxWithoutBias, kInvalidArgument,
                 "node score " << static_cast<int>(c.node_score) << " is not top-sum (0) or max-without-bias (1)");
  EPCOMM_REQUIRE(std::isfinite(c.route_scale), kInvalidArgument, "route_scale=" << c.route_scale << " is not finite");
  experts_per_node_ = c.num_experts / c.num_nodes;
  max_nodes_ = (c.max_nodes == 0 || c.max_nodes >= c.num_nodes) ? c.num_nodes : c.max_nodes;
  EPCOMM_REQUIRE(c.topk <= max_nodes_ * experts_per_node_, kInvalidArgument,
                 "topk=" << c.topk << " cannot be served by max_nodes=" << max_nodes_ << " nodes of "
                         << experts_per_node_ << " experts");
  node_topk_ = c.node_topk > 0 ? c.node_topk : std::max(1, c.topk / max_nodes_);
  EPCOMM_REQUIRE(node_topk_ <= experts_per_node_, kInvalidArgument,
                 "node_topk=" << node_topk_ << " exceeds the " << experts_per_node_ << " experts of a node");
}

void NodeLimitedRouter::route(const float* logits, int num_tokens, const float* bias, int32_t* topk_idx,
                              float* topk_weights) const {
  const int E = config_.num_experts, K = config_.topk, N = config_.num_nodes, per_node = experts_per_node_;
  EPCOMM_REQUIRE(num_tokens >= 0, kInvalidArgument, "num_tokens=" << num_tokens << " is negative");
  if (bias) {
    for (int e = 0; e < E; ++e) {
      EPCOMM_REQUIRE(std::isfinite(bias[e]), kInvalidArgument, "bias of expert " << e << " is " << bias[e]);
    }
  }
  // Without a node limit every expert is a candidate and node scores are never read.
  const bool limited = max_nodes_ < N;
  // The max is the sum of the top 1.
  const int node_topk = config_.node_score == NodeScore::kMaxWithoutBias && bias == nullptr ? 1 : node_topk_;
  std::vector<float> score(E), biased(E), node_score(limited ? N : 0), node_top(limited ? per_node : 0);
  std::vector<double> exp_shift(config_.score == ScoreFunction::kSoftmax ? E : 0);
  std::vector<int> nodes(limited ? N : 0), candidates(E);
  for (int t = 0; t < num_tokens; ++t) {
    const float* row = logits + static_cast<std::size_t>(t) * E;
    float max_logit = row[0];
    for (int e = 0; e < E; ++e) {
      EPCOMM_REQUIRE(std::isfinite(row[e]), kInvalidArgument,
                     "logit of token " << t << " for expert " << e << " is " << row[e]);
      max_logit = std::max(max_logit, row[e]);
    }
    if (config_.score == ScoreFunction::kSigmoid) {
      for (int e = 0; e < E; ++e) score[e] = 1.0f / (1.0f + std::exp(-row[e]));
    } else {
      // Shifting by the max keeps every exp() in (0, 1] and the sum in [1, E]; the
      // normalisation cancels the shift. The shift is done in double, where the
      // difference of two floats is exact: rounded in float it would put up to
      // ~5e-7 relative error into exp() for logits ten apart.
      double sum = 0.0;
      for (int e = 0; e < E; ++e) sum += exp_shift[e] = std::exp(static_cast<double>(row[e]) - max_logit);
      for (int e = 0; e < E; ++e) score[e] = static_cast<float>(exp_shift[e] / sum);
    }
    for (int e = 0; e < E; ++e) biased[e] = score[e] + (bias ? bias[e] : 0.0f);

    int num_candidates = E;
    if (limited) {
      for (int n = 0; n < N; ++n) {
        const auto first = biased.begin() + static_cast<std::ptrdiff_t>(n) * per_node;
        std::copy(first, first + per_node, node_top.begin());
        // Summed largest first so a node's score does not depend on where its experts sit.
        std::partial_sort(node_top.begin(), node_top.begin() + node_topk, node_top.end(), std::greater<float>());
        node_score[n] = std::accumulate(node_top.begin(), node_top.begin() + node_topk, 0.0f);
      }
      // Only which nodes are kept matters, not their order: their experts are ranked next.
      std::iota(nodes.begin(), nodes.end(), 0);
      std::nth_element(nodes.begin(), nodes.begin() + (max_nodes_ - 1), nodes.end(),
                       ByValueThenIndex{node_score.data()});
      num_candidates = 0;
      for (int i = 0; i < max_nodes_; ++i) {
        for (int e = nodes[i] * per_node; e < (nodes[i] + 1) * per_node; ++e) candidates[num_candidates++] = e;
      }
    } else {
      std::iota(candidates.begin(), candidates.end(), 0);
    }
    std::partial_sort(candidates.begin(), candidates.begin() + K, candidates.begin() + num_candidates,
                      ByValueThenIndex{biased.data()});

    int32_t* idx = topk_idx + static_cast<std::size_t>(t) * K;
    float* w = topk_weights + static_cast<std::size_t>(t) * K;
    // Gating uses the unbiased scores: the bias only steered the choice. The sum is
    // taken in double so the weights keep full float precision whatever K is.
    double sum = 0.0;
    for (int k = 0; k < K; ++k) {
      idx[k] = candidates[k];
      sum += score[candidates[k]];
    }
    // Every chosen score can underflow to 0 (softmax far below the max, sigmoid of a
    // very negative logit); equal weights keep the output finite and still sum to
    // route_scale.
    for (int k = 0; k < K; ++k) {
      if (!config_.normalize_weights) {
        w[k] = config_.route_scale * score[idx[k]];
      } else {
        w[k] = sum > 0.0 ? static_cast<float>(config_.route_scale * (score[idx[k]] / sum)) : config_.route_scale / K;
      }
    }
  }
}

void count_expert_load(const int32_t* topk_idx, int num_tokens, int topk, int num_experts, int64_t* load) {
  EPCOMM_REQUIRE(num_tokens >= 0, kInvalidArgument, "num_tokens=" << num_tokens << " is negative");
  EPCOMM_REQUIRE(topk >= 0, kInvalidArgument, "topk=" << topk << " is negative");
  EPCOMM_REQUIRE(num_experts >= 0, kInvalidArgument, "num_experts=" << num_experts << " is negative");
  std::fill(load, load + num_experts, int64_t{0});
  for (int t = 0; t < num_tokens; ++t) {
    for (int k = 0; k < topk; ++k) {
      const int32_t e = topk_idx[static_cast<std::size_t>(t) * topk + k];
      if (e == -1) continue;
      EPCOMM_REQUIRE(e >= 0 && e < num_experts, kInvalidArgument,
                     "token " << t << " slot k=" << k << " holds expert id " << e << ", outside [0, " << num_experts
                              << ") and not -1");
      ++load[e];
    }
  }
}

void update_expert_bias(float* bias, const int64_t* load, int num_experts, float gamma) {
  EPCOMM_REQUIRE(num_experts >= 0, kInvalidArgument, "num_experts=" << num_experts << " is negative");
  // A non-finite step would poison the bias, and route() would only reject it later,
  // far from the cause.
  EPCOMM_REQUIRE(std::isfinite(gamma), kInvalidArgument, "gamma=" << gamma << " is not finite");
  if (num_experts == 0) return;
  // The mean is fractional in general; comparing in double keeps e.g. loads {1, 2, 2}
  // (mean 5/3) from treating expert 0 as average, as an integer mean would.
  double mean = 0.0;
  for (int e = 0; e < num_experts; ++e) mean += static_cast<double>(load[e]);
  mean /= num_experts;
  for (int e = 0; e < num_experts; ++e) {
    const double l = static_cast<double>(load[e]);
    if (l > mean) {
      bias[e] -= gamma;
    } else if (l < mean) {
      bias[e] += gamma;
    }
  }
}

}  // namespace epcomm
