// SPDX-License-Identifier: MIT
// What the low-latency exchange must produce, computed independently of it from
// the scalar reference codecs: the bytes of a dispatched row, the expert outputs
// a test applies, and combine's sum in its documented order (k = 0..topk-1, FP32,
// multiply and add rounded separately, one rounding to the dtype).
#pragma once

#include <epcomm/low_latency.hpp>

#include <cstddef>
#include <vector>

#include "support/test_data.hpp"

namespace epcomm_test {

// FP32 values rounded to dtype and back.
std::vector<float> round_to(const std::vector<float>& v, epcomm::DType t);

// Token t of `in` encoded in the dispatch format from the caller's dtype bytes.
std::vector<std::byte> encoded_source_row(const RankInput& in, int t, const epcomm::LowLatencyConfig& c);

// Expert outputs for rows received as `rows` (row_bytes apart, `counts[j]` real
// rows of local expert j, rows_per_expert apart): expert_fn(first_expert + j) of
// the decoded row, rounded to dtype, [J, rows_per_expert, hidden] of dtype.
std::vector<std::byte> expert_outputs(const epcomm::LowLatencyConfig& c, int first_expert, int num_local_experts,
                                      int64_t rows_per_expert, const void* rows, std::size_t row_bytes,
                                      const int32_t* counts);

// out[t] of the source `in`, [num_tokens, hidden] of dtype, bit for bit, and `seen`:
// `in` with x as the experts saw it (encoded and decoded in the dispatch format).
std::vector<std::byte> expected_low_latency_combine(const RankInput& in, const epcomm::LowLatencyConfig& c,
                                                    RankInput* seen);

}  // namespace epcomm_test
