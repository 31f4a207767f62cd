// SPDX-License-Identifier: MIT
// One rank's input for a configuration: tokens, their routing, and the baseline's
// BF16 copy of the tokens.
#pragma once

#include "args.hpp"

#include <epcomm/routing.hpp>
#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace epcomm_bench {

struct RankData {
  int tokens = 0;
  int hidden = 0;
  int topk = 0;
  epcomm::DType dtype = epcomm::DType::kBF16;
  std::vector<std::byte> x;            // [tokens, hidden] of dtype: epcomm's input
  std::vector<uint16_t> x_bf16;        // the same tokens in BF16: the baseline's input
  std::vector<int32_t> topk_idx;       // [tokens, topk]
  std::vector<float> topk_weights;     // [tokens, topk]

  float x_value(int token, int h) const;  // element of x as float
};

// Deterministic in (seed, rank): random router logits routed by `router`, and
// uniform random token values in [-1, 1) stored in config.dtype.
RankData make_rank_data(const BenchConfig& config, const epcomm::NodeLimitedRouter& router,
                        uint64_t seed, int rank);

}  // namespace epcomm_bench
