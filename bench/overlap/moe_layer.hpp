// SPDX-License-Identifier: MIT
// A synthetic MoE layer for one micro-batch on one rank, with real matrix multiplies
// (Eigen): attention stand-in (attn_gemms [T,H]x[H,H] products), gate + node-limited
// routing, routed experts (per local expert [n,H]x[H,F], ReLU, [n,F]x[F,H]) and a
// shared expert of the same form over all T tokens. Plugs into epcomm's
// two-micro-batch schedules.
#pragma once

#include <epcomm/epcomm.hpp>

#include <Eigen/Core>

#include <chrono>
#include <memory>
#include <vector>

namespace epcomm_bench {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct LayerShape {
  int tokens = 0;   // per micro-batch on this rank
  int hidden = 0;
  int ffn = 0;      // routed expert intermediate size
  int experts = 0;
  int topk = 0;
  int max_nodes = 0;
  int attn_gemms = 1;
  int layers = 1;
};

// Weights shared by every layer and micro-batch of a rank (the cost is what matters).
struct LayerWeights {
  RowMatrix attn, gate, shared1, shared2;
  std::vector<RowMatrix> w1, w2;  // per local expert
  LayerWeights(const LayerShape& s, int local_experts, uint64_t seed);
};

class MicroBatch {
 public:
  MicroBatch(const LayerShape& shape, const LayerWeights& weights, const epcomm::Group& group, int id,
             uint64_t seed);

  // With compute off the stages skip every matrix multiply (communication-only run);
  // routing is fixed at construction either way, so the exchanges are identical.
  epcomm::MicroBatchStages stages(bool compute);
  // Seconds spent inside compute stages since the last reset, in all and per kind
  // of stage (attention, routed experts, shared expert).
  double compute_seconds() const { return attn_s_ + experts_s_ + shared_s_; }
  double attention_seconds() const { return attn_s_; }
  double experts_seconds() const { return experts_s_; }
  double shared_seconds() const { return shared_s_; }
  void reset_timer() { attn_s_ = experts_s_ = shared_s_ = 0; }
  const RowMatrix& output() const { return combined_.back(); }

 private:
  struct Timer;
  const LayerShape shape_;
  const LayerWeights& w_;
  int local_expert_base_;
  RowMatrix x_, attn_, tmp_, mid_;
  std::vector<RowMatrix> combined_, shared_out_;
  std::vector<std::vector<int32_t>> topk_idx_;
  std::vector<std::vector<float>> topk_w_;
  double attn_s_ = 0, experts_s_ = 0, shared_s_ = 0;
};

}  // namespace epcomm_bench
