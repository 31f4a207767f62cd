// SPDX-License-Identifier: MIT
// epcomm — node-limited top-k routing (DeepSeek-V3 style).
//
// Experts are laid out in contiguous blocks: expert e lives on epcomm rank
// e / (num_experts / ranks) and so on node e / (num_experts / num_nodes).
// For each token:
//   score[e]  = sigmoid(logit[e])  or  softmax(logits)[e]
//   biased[e] = score[e] + bias[e]                  (bias only steers selection)
//   node score = sum of the top-`node_topk` biased scores among the node's experts
//                (or their max, see NodeScore)
//   keep the top-`max_nodes` nodes, then the top-`topk` experts among them by
//   biased score; weight[k] = route_scale * score[e_k] / sum_j score[e_j]
//   (route_scale * score[e_k] without normalize_weights).
// Ties are broken towards the lower node / expert index, so routing is a pure
// function of its inputs.
#pragma once

#include <epcomm/export.hpp>

#include <cstdint>
#include <vector>

namespace epcomm {

enum class ScoreFunction : int { kSigmoid = 0, kSoftmax = 1 };

// How a node's score is formed from its experts' biased scores.
enum class NodeScore : int {
  kTopSum = 0,          // sum of the top node_topk (DeepSeek-V3 with a bias)
  // The max of the node's scores when route() gets no bias, else kTopSum: what the
  // public DeepSeek gate code does (group_scores = amax without a bias).
  kMaxWithoutBias = 1,
};

struct RouterConfig {
  int num_experts = 0;
  int topk = 0;
  int num_nodes = 1;        // nodes the experts are spread over (Group::num_nodes())
  int max_nodes = 0;        // M; 0 or >= num_nodes disables the node limit
  int node_topk = 0;        // experts summed per node score; 0: max(1, topk / M) with
                            // M after the rule above; must not exceed experts per node
  ScoreFunction score = ScoreFunction::kSigmoid;
  float route_scale = 1.0f;
  // false: weight[k] = route_scale * score[e_k], not divided by the sum over the
  // chosen experts (DeepSeek-V2-style softmax gating keeps them so).
  bool normalize_weights = true;
  NodeScore node_score = NodeScore::kTopSum;
};

class EPCOMM_API NodeLimitedRouter {
 public:
  // Throws Error(kInvalidArgument) when the config is impossible: num_experts < 1,
  // num_nodes < 1, experts not divisible by nodes, topk outside [1, num_experts], a
  // topk that max_nodes nodes cannot hold, a negative max_nodes or node_topk, a
  // node_topk above experts per node, an unknown score function or node score, or a
  // non-finite route_scale.
  explicit NodeLimitedRouter(const RouterConfig& config);

  const RouterConfig& config() const { return config_; }
  int experts_per_node() const { return experts_per_node_; }
  int effective_max_nodes() const { return max_nodes_; }
  int effective_node_topk() const { return node_topk_; }

  // logits: [num_tokens, num_experts] row-major. bias: [num_experts] or nullptr
  // (all zero). Outputs topk_idx [num_tokens, topk] (int32 expert ids, sorted by
  // descending biased score, ties lower id first) and topk_weights [num_tokens,
  // topk], summing to route_scale (up to rounding) with normalize_weights. If every
  // chosen score underflows to 0 (softmax far below the token's max, sigmoid of a
  // very negative logit) each normalised weight is route_scale / topk. A non-finite logit throws Error(kInvalidArgument)
  // naming the token, expert and value; so do a non-finite bias (naming the expert)
  // and a negative num_tokens. After a throw the outputs are unspecified.
  void route(const float* logits, int num_tokens, const float* bias,
             int32_t* topk_idx, float* topk_weights) const;

 private:
  RouterConfig config_;
  int experts_per_node_ = 0;
  int max_nodes_ = 0;
  int node_topk_ = 0;
};

// Counts how many (token, k) selections hit each expert: load[e] for e in
// [0, num_experts), overwritten (not accumulated). Entries of -1 are ignored; other
// out-of-range ids throw Error(kInvalidArgument) naming the token, k and the id, as
// do negative sizes.
EPCOMM_API void count_expert_load(const int32_t* topk_idx, int num_tokens, int topk,
                       int num_experts, int64_t* load);

// Auxiliary-loss-free balancing step: bias[e] -= gamma where load[e] is above the
// mean load (sum / num_experts, not rounded), += gamma where below, unchanged where
// equal. `load` is normally the global load (all-reduced by the caller over the
// data-parallel group). A negative num_experts or non-finite gamma throws
// Error(kInvalidArgument).
EPCOMM_API void update_expert_bias(float* bias, const int64_t* load, int num_experts,
                        float gamma);

}  // namespace epcomm
