// SPDX-License-Identifier: MIT
#include "data.hpp"

#include "bf16.hpp"

#include <cstring>
#include <random>

namespace epcomm_bench {

float RankData::x_value(int token, int h) const {
  const std::size_t i = static_cast<std::size_t>(token) * hidden + h;
  if (dtype == epcomm::DType::kBF16) return from_bf16(x_bf16[i]);
  float f;
  std::memcpy(&f, x.data() + i * sizeof f, sizeof f);
  return f;
}

RankData make_rank_data(const BenchConfig& config, const epcomm::NodeLimitedRouter& router,
                        uint64_t seed, int rank) {
  RankData d;
  d.tokens = config.tokens;
  d.hidden = config.hidden;
  d.topk = config.topk;
  d.dtype = config.dtype;

  // Each rank draws its own stream so ranks route differently, reproducibly.
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(rank)};
  std::mt19937_64 rng(seq);

  const std::size_t tokens = static_cast<std::size_t>(config.tokens);
  std::normal_distribution<float> logit_dist(0.0f, 1.0f);
  std::vector<float> logits(tokens * config.experts);
  for (float& v : logits) v = logit_dist(rng);
  d.topk_idx.resize(tokens * config.topk);
  d.topk_weights.resize(tokens * config.topk);
  router.route(logits.data(), config.tokens, nullptr, d.topk_idx.data(), d.topk_weights.data());

  const std::size_t elems = tokens * config.hidden;
  std::uniform_real_distribution<float> x_dist(-1.0f, 1.0f);
  d.x_bf16.resize(elems);
  if (config.dtype == epcomm::DType::kBF16) {
    for (uint16_t& v : d.x_bf16) v = to_bf16(x_dist(rng));
    d.x.resize(elems * sizeof(uint16_t));
    std::memcpy(d.x.data(), d.x_bf16.data(), d.x.size());
  } else {
    d.x.resize(elems * sizeof(float));
    for (std::size_t i = 0; i < elems; ++i) {
      const float v = x_dist(rng);
      std::memcpy(d.x.data() + i * sizeof v, &v, sizeof v);
      d.x_bf16[i] = to_bf16(v);
    }
  }
  return d;
}

}  // namespace epcomm_bench
