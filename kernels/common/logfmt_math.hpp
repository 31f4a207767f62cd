// SPDX-License-Identifier: MIT
// LogFMT-nBit element math (docs/formats.md is the spec). A tile of up to 128
// values keeps (min, max) of log2|x| as fixed-point numbers in 1/128 units; a code
// has a sign bit and n-1 magnitude bits: magnitude 0 is zero, magnitude k in
// [1, K = 2^(n-1) - 1] decodes to exp2(min + (k - 1) * step), step = (max - min) /
// (K - 1). Encoding rounds in linear space: between two neighbouring levels the
// nearer one wins (the boundary is their arithmetic mean), ties go to the lower one.
// log2 and exp2 are polynomials written out here, so every implementation (CPU
// scalar, SIMD, CUDA) computes the very same levels.
#pragma once

#include "host_device.hpp"

namespace epcomm::kernels::elem {

inline constexpr int kLogTileMetaBytes = 4;   // int16 min_q, int16 max_q
inline constexpr int kLogFixedOne = 128;      // min/max are stored in 1/128 units
inline constexpr int kLogMaxRange = 32;       // min >= max - 32 (in log2 units)
// |x| below the smallest normal FP32 number (zero and FP32 subnormals) counts as zero.
inline constexpr float kLogZeroBelow = 0x1p-126f;

// log2(x) for a normal positive x: exponent plus x * p(x) on the mantissa's
// fraction (|error| < 3.1e-6; exact 0 at powers of two).
EPCOMM_HD float log2_poly(float x) {
  const uint32_t u = to_bits(x);
  const float e = static_cast<float>(static_cast<int>(u >> 23) - 127);
  const float f = from_bits((u & 0x7fffffu) | 0x3f800000u) - 1.0f;  // [0, 1)
  float p = 0.020236155f;
  p = p * f + -0.094884835f;
  p = p * f + 0.21367069f;
  p = p * f + -0.33783957f;
  p = p * f + 0.47722548f;
  p = p * f + -0.7210956f;
  p = p * f + 1.4426907f;
  return e + f * p;
}

// 2^f for f in [0, 1) (relative error < 1.4e-8 before rounding), kept below 2 so
// that p * 2^i stays finite.
EPCOMM_HD float exp2_frac_poly(float f) {
  float p = 0.00021871246f;
  p = p * f + 0.0012382413f;
  p = p * f + 0.009686188f;
  p = p * f + 0.05547891f;
  p = p * f + 0.2402311f;
  p = p * f + 0.6931468f;
  p = p * f + 1.0f;
  return p < 1.9999999f ? p : 1.9999999f;
}

// 2^y for y clamped to [-126, 128): 2^floor(y) from the exponent field times
// exp2_frac_poly of the fraction.
inline constexpr float kExp2Lowest = -126.0f, kExp2Highest = 127.99998f;
EPCOMM_HD float exp2_poly(float y) {
  y = y < kExp2Lowest ? kExp2Lowest : y;
  y = y > kExp2Highest ? kExp2Highest : y;
  const float i = floorf(y);
  return exp2_frac_poly(y - i) * pow2i(static_cast<int>(i));
}

// The decoding levels of one tile.
struct LogTile {
  float min;   // log2 of level 1
  float step;  // log2 distance between levels; 0 when min == max
};

// Tile parameters from the tile's smallest and largest |x| >= kLogZeroBelow
// (finite); writes the stored fixed-point pair.
EPCOMM_HD LogTile log_tile_params(float amin, float amax, int bits, int16_t* min_q, int16_t* max_q) {
  int hi = static_cast<int>(ceilf(log2_poly(amax) * static_cast<float>(kLogFixedOne)));
  int lo = static_cast<int>(floorf(log2_poly(amin) * static_cast<float>(kLogFixedOne)));
  if (lo < hi - kLogMaxRange * kLogFixedOne) lo = hi - kLogMaxRange * kLogFixedOne;
  *min_q = static_cast<int16_t>(lo);
  *max_q = static_cast<int16_t>(hi);
  const float min = static_cast<float>(lo) / static_cast<float>(kLogFixedOne);
  const float max = static_cast<float>(hi) / static_cast<float>(kLogFixedOne);
  const int levels = (1 << (bits - 1)) - 1;
  return LogTile{min, (max - min) / static_cast<float>(levels - 1)};
}

// The tile parameters a decoder sees in (possibly arbitrary) stored bytes: any pair
// decodes to finite or infinite values, never out-of-range indexing.
EPCOMM_HD LogTile log_tile_from_stored(int16_t min_q, int16_t max_q, int bits) {
  const float min = static_cast<float>(min_q) / static_cast<float>(kLogFixedOne);
  const float max = static_cast<float>(max_q) / static_cast<float>(kLogFixedOne);
  const int levels = (1 << (bits - 1)) - 1;
  return LogTile{min, (max - min) / static_cast<float>(levels - 1)};
}

// Level k >= 1 of a tile.
EPCOMM_HD float log_level(LogTile t, int k) {
  return exp2_poly(static_cast<float>(k - 1) * t.step + t.min);
}

// Magnitude code of a >= 0 (finite) in tile t with K levels.
EPCOMM_HD int log_encode_magnitude(float a, LogTile t, int levels) {
  if (a < kLogZeroBelow) return 0;
  const float v1 = log_level(t, 1);
  if (a <= v1) return a - 0.0f > v1 - a ? 1 : 0;  // between zero and level 1
  if (t.step <= 0.0f) return 1;
  // The level just below a, from log2 (may be off by one near a level; the linear
  // comparison below then still picks the nearer level).
  float pos = floorf((log2_poly(a) - t.min) / t.step);
  pos = pos < 0.0f ? 0.0f : pos;
  pos = pos > static_cast<float>(levels - 2) ? static_cast<float>(levels - 2) : pos;
  const int k = static_cast<int>(pos) + 1;
  const float lo = log_level(t, k), hi = log_level(t, k + 1);
  return a - lo > hi - a ? k + 1 : k;
}

// Value of a full code (sign bit at bit n-1).
EPCOMM_HD float log_decode(uint32_t code, LogTile t, int bits) {
  const uint32_t mag = code & ((1u << (bits - 1)) - 1u);
  const uint32_t sign = (code >> (bits - 1)) & 1u;
  const float v = mag == 0u ? 0.0f : log_level(t, static_cast<int>(mag));
  return from_bits(to_bits(v) | (sign << 31));
}

}  // namespace epcomm::kernels::elem
