// SPDX-License-Identifier: MIT
// Device-side proofs for fp8_convert.cuh, for the tests: how many of the 2^32
// floats (and, for E4M3, the 256 codes) the conversion instructions convert
// differently from the reference element math (kernels/common/fp8_e4m3.hpp,
// bf16.hpp). Synchronous.
#pragma once

#include <cstdint>

namespace epcomm::kernels::cuda::detail {

int64_t count_e4m3_mismatches();
int64_t count_bf16_mismatches();

}  // namespace epcomm::kernels::cuda::detail
