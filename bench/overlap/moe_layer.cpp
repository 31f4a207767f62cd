// SPDX-License-Identifier: MIT
#include "overlap/moe_layer.hpp"

#include <random>

namespace epcomm_bench {
namespace {

RowMatrix random_matrix(int rows, int cols, float scale, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, scale);
  RowMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(rng);
  return m;
}

}  // namespace

// Accumulates the wall time of one compute stage.
struct MicroBatch::Timer {
  double& total;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  ~Timer() { total += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); }
};

LayerWeights::LayerWeights(const LayerShape& s, int local_experts, uint64_t seed) {
  std::mt19937_64 rng(seed);
  // Scales keep activations O(1) through the stack.
  const float h = 1.0f / std::sqrt(static_cast<float>(s.hidden)), f = 1.0f / std::sqrt(static_cast<float>(s.ffn));
  attn = random_matrix(s.hidden, s.hidden, h, rng);
  shared1 = random_matrix(s.hidden, s.ffn, h, rng);
  shared2 = random_matrix(s.ffn, s.hidden, f, rng);
  gate = random_matrix(s.hidden, s.experts, h, rng);
  for (int j = 0; j < local_experts; ++j) {
    w1.push_back(random_matrix(s.hidden, s.ffn, h, rng));
    w2.push_back(random_matrix(s.ffn, s.hidden, f, rng));
  }
}

MicroBatch::MicroBatch(const LayerShape& s, const LayerWeights& w, const epcomm::Group& group, int id, uint64_t seed)
    : shape_(s), w_(w), local_expert_base_(group.rank() * (s.experts / group.size())) {
  std::mt19937_64 rng(seed * 7919 + static_cast<uint64_t>(group.rank()) * 31 + static_cast<uint64_t>(id));
  x_ = random_matrix(s.tokens, s.hidden, 1.0f, rng);
  attn_ = x_;  // what a compute-off run dispatches
  combined_.assign(s.layers, RowMatrix::Zero(s.tokens, s.hidden));
  shared_out_.assign(s.layers, RowMatrix::Zero(s.tokens, s.hidden));
  // Routing per layer from gate logits of random activations: fixed up front so the
  // compute-off run moves exactly the same bytes.
  epcomm::RouterConfig rc;
  rc.num_experts = s.experts;
  rc.topk = s.topk;
  rc.num_nodes = group.num_nodes();
  rc.max_nodes = s.max_nodes;
  epcomm::NodeLimitedRouter router(rc);
  for (int l = 0; l < s.layers; ++l) {
    RowMatrix logits = random_matrix(s.tokens, s.hidden, 1.0f, rng) * w.gate;
    topk_idx_.emplace_back(static_cast<std::size_t>(s.tokens) * s.topk);
    topk_w_.emplace_back(static_cast<std::size_t>(s.tokens) * s.topk);
    router.route(logits.data(), s.tokens, nullptr, topk_idx_.back().data(), topk_w_.back().data());
  }
}

epcomm::MicroBatchStages MicroBatch::stages(bool compute) {
  epcomm::MicroBatchStages st;
  st.attention = [this, compute](int layer) {
    if (compute) {
      Timer t{attn_s_};
      attn_ = layer == 0 ? x_ : RowMatrix(combined_[layer - 1] + shared_out_[layer - 1]);
      for (int g = 0; g < shape_.attn_gemms; ++g) {
        tmp_.noalias() = attn_ * w_.attn;
        attn_ = tmp_;
      }
    }
    epcomm::DispatchInput in;
    in.x = attn_.data();
    in.topk_idx = topk_idx_[layer].data();
    in.topk_weights = topk_w_[layer].data();
    in.num_tokens = shape_.tokens;
    return in;
  };
  st.experts = [this, compute](int, const epcomm::DispatchHandle& h) {
    if (!compute) return;
    Timer t{experts_s_};
    const auto* rows = static_cast<const float*>(h.rows());
    auto* out = static_cast<float*>(h.expert_out_buffer());
    const int H = shape_.hidden;
    RowMatrix& mid = mid_;
    for (int j = 0; j < h.num_local_experts(); ++j) {
      const auto n = static_cast<Eigen::Index>(h.expert_count(j));
      if (n == 0) continue;
      Eigen::Map<const RowMatrix> in(rows + h.expert_offset(j) * H, n, H);
      Eigen::Map<RowMatrix> y(out + h.expert_offset(j) * H, n, H);
      mid.noalias() = in * w_.w1[j];
      mid = mid.cwiseMax(0.0f);
      y.noalias() = mid * w_.w2[j];
    }
  };
  st.shared = [this, compute](int layer) {
    if (!compute) return;
    Timer t{shared_s_};
    mid_.noalias() = attn_ * w_.shared1;
    mid_ = mid_.cwiseMax(0.0f);
    shared_out_[layer].noalias() = mid_ * w_.shared2;
  };
  st.combine_output = [this](int layer) { return static_cast<void*>(combined_[layer].data()); };
  return st;
}

}  // namespace epcomm_bench
