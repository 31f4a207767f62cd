// BF16 <-> FP32 conversion: round-to-nearest-even, NaN stays NaN (quietened).
#pragma once

#include <cstdint>
#include <cstring>

namespace epcomm::kernels {

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Adding 0x7fff plus the lowest kept bit rounds half to even; overflow of the
  // mantissa carries into the exponent, which is exactly the correctly rounded value
  // (up to infinity).
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Row kernels, written as plain loops the compiler vectorises (kernels/ builds them
// at -O3).
void f32_to_bf16_row(const float* src, int n, uint16_t* dst);
void bf16_to_f32_row(const uint16_t* src, int n, float* dst);
void accumulate_bf16_row(const uint16_t* src, int n, float weight, float* acc);
void accumulate_f32_row(const float* src, int n, float weight, float* acc);

}  // namespace epcomm::kernels
