#include <epcomm/routing.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/check.hpp"

namespace epcomm {
namespace {

// Orders candidates by descending value, ties towards the lower index, so routing is
// a pure function of its inputs.
struct ByValueThenIndex {
  const float* value;
  bool operator()(int a, int b) const { return value[a] > value[b] || (value[a] == value[b] && a < b); }
};

}  // namespace

NodeLimitedRouter::NodeLimitedRouter(const RouterConfig& c) : config_(c) {
  EPCOMM_REQUIRE(c.num_experts > 0, kInvalidArgument, "num_experts=" << c.num_experts << " must be positive");
  EPCOMM_REQUIRE(c.num_nodes >= 1 && c.num_experts % c.num_nodes == 0, kInvalidArgument,
                 "num_experts=" << c.num_experts << " is not divisible by num_nodes=" << c.num_nodes);
  EPCOMM_REQUIRE(c.topk >= 1 && c.topk <= c.num_experts, kInvalidArgument,
                 "topk=" << c.topk << " must be in [1, num_experts=" << c.num_experts << "]");
  EPCOMM_REQUIRE(c.max_nodes >= 0, kInvalidArgument, "max_nodes=" << c.max_nodes << " is negative");
  EPCOMM_REQUIRE(c.node_topk >= 0, kInvalidArgument, "node_topk=" << c.node_topk << " is negative");
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
      EPCOMM_REQUIRE(std::isfinite(bias[e]), kInvalidArgument, "bias[" << e << "]=" << bias[e] << " is not finite");
    }
  }
  std::vector<float> score(E), biased(E), node_score(N), node_scratch(per_node);
  std::vector<int> nodes(N), candidates;
  candidates.reserve(E);
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
      // Subtracting the max keeps exp() in range; the normalisation cancels it.
      float sum = 0.0f;
      for (int e = 0; e < E; ++e) sum += score[e] = std::exp(row[e] - max_logit);
      for (int e = 0; e < E; ++e) score[e] /= sum;
    }
    for (int e = 0; e < E; ++e) biased[e] = score[e] + (bias ? bias[e] : 0.0f);

    // Node score: sum of the node's top node_topk biased scores.
    for (int n = 0; n < N; ++n) {
      std::copy(biased.begin() + n * per_node, biased.begin() + (n + 1) * per_node, node_scratch.begin());
      std::partial_sort(node_scratch.begin(), node_scratch.begin() + node_topk_, node_scratch.end(),
                        std::greater<float>());
      node_score[n] = std::accumulate(node_scratch.begin(), node_scratch.begin() + node_topk_, 0.0f);
    }
    std::iota(nodes.begin(), nodes.end(), 0);
    std::partial_sort(nodes.begin(), nodes.begin() + max_nodes_, nodes.end(), ByValueThenIndex{node_score.data()});

    candidates.clear();
    for (int i = 0; i < max_nodes_; ++i) {
      for (int e = nodes[i] * per_node; e < (nodes[i] + 1) * per_node; ++e) candidates.push_back(e);
    }
    std::partial_sort(candidates.begin(), candidates.begin() + K, candidates.end(), ByValueThenIndex{biased.data()});

    int32_t* idx = topk_idx + static_cast<std::size_t>(t) * K;
    float* w = topk_weights + static_cast<std::size_t>(t) * K;
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) {
      idx[k] = candidates[k];
      sum += score[candidates[k]];
    }
    // Gating uses unbiased scores; the bias only steered the choice. A zero sum
    // (softmax underflow) falls back to equal weights.
    for (int k = 0; k < K; ++k) {
      w[k] = sum > 0.0f ? config_.route_scale * score[idx[k]] / sum : config_.route_scale / K;
    }
  }
}

void count_expert_load(const int32_t* topk_idx, int num_tokens, int topk, int num_experts, int64_t* load) {
  std::fill(load, load + num_experts, int64_t{0});
  for (int t = 0; t < num_tokens; ++t) {
    for (int k = 0; k < topk; ++k) {
      const int32_t e = topk_idx[static_cast<std::size_t>(t) * topk + k];
      if (e == -1) continue;
      EPCOMM_REQUIRE(e >= 0 && e < num_experts, kInvalidArgument,
                     "topk_idx[" << t << "][" << k << "]=" << e << " is outside [-1, " << num_experts << ")");
      ++load[e];
    }
  }
}

void update_expert_bias(float* bias, const int64_t* load, int num_experts, float gamma) {
  if (num_experts <= 0) return;
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
