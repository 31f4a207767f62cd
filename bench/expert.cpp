// SPDX-License-Identifier: MIT
#include "expert.hpp"

#include "bf16.hpp"

#include <cstddef>

namespace epcomm_bench {

float expert_scale(int global_expert) { return 1.0f + 0.01f * static_cast<float>(global_expert); }

void apply_expert(void* rows, epcomm::DType dtype, int64_t num_rows, int hidden,
                  int global_expert) {
  const float scale = expert_scale(global_expert);
  const std::size_t n = static_cast<std::size_t>(num_rows) * hidden;
  if (dtype == epcomm::DType::kBF16) {
    auto* v = static_cast<uint16_t*>(rows);
    for (std::size_t i = 0; i < n; ++i) v[i] = to_bf16(from_bf16(v[i]) * scale);
  } else {
    auto* v = static_cast<float*>(rows);
    for (std::size_t i = 0; i < n; ++i) v[i] *= scale;
  }
}

}  // namespace epcomm_bench
