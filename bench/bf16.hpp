// SPDX-License-Identifier: MIT
// BF16 <-> FP32 conversion for the bench's own data and reference results.
//
// Deliberately not kernels/'s codec: the bench checks epcomm against a reference,
// so the reference must not share the code under test.
#pragma once

#include <cstdint>
#include <cstring>

namespace epcomm_bench {

// Round to nearest, ties to even. Inputs are finite by construction (random data
// scaled by small factors), so NaN payloads need no special case.
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace epcomm_bench
