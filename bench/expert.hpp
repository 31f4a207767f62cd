// SPDX-License-Identifier: MIT
// The stand-in expert both paths apply between dispatch and combine:
// y = x * (1 + 0.01 * e) for global expert e. Cheap, but different per expert, so
// a row combined with the wrong expert's output or weight shows up in the check.
#pragma once

#include <epcomm/types.hpp>

#include <cstdint>

namespace epcomm_bench {

float expert_scale(int global_expert);

// In place on `num_rows` rows of `hidden` elements of `dtype`; BF16 results are
// rounded back to BF16, as a BF16 expert would write them.
void apply_expert(void* rows, epcomm::DType dtype, int64_t num_rows, int hidden,
                  int global_expert);

}  // namespace epcomm_bench
