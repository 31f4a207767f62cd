// SPDX-License-Identifier: MIT
// FP8 E4M3 (OCP "e4m3fn": bias 7, no infinities, S.1111.111 is NaN, subnormals kept)
// and the per-tile scales of the FP8 row formats. docs/formats.md is the spec.
#pragma once

#include "host_device.hpp"

namespace epcomm::kernels::elem {

inline constexpr float kE4M3Max = 448.0f;
// amax is floored here so an all-zero tile gets a finite, normal scale (and its
// reciprocal stays finite): 2^-96 / 448 is still a normal FP32 number.
inline constexpr float kFp8AmaxFloor = 0x1p-96f;

// Round to nearest even, saturating to +-448; NaN -> S.1111.111.
EPCOMM_HD uint8_t f32_to_e4m3(float f) {
  const uint32_t u = to_bits(f);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80u);
  if (is_nan(f)) return sign | 0x7f;
  const float a = abs_f(f);
  if (a >= kE4M3Max) return sign | 0x7e;
  if (a < 0x1p-6f) {
    // Subnormal range: units of 2^-9. a * 512 is exact; rint rounds half to even;
    // 8 units is the smallest normal, whose code is 0x08 as well.
    return sign | static_cast<uint8_t>(static_cast<int>(rintf(a * 512.0f)));
  }
  // Normal: keep 3 mantissa bits, round half to even by adding 0x7ffff plus the lowest
  // kept bit; a carry moves into the exponent, which is the correctly rounded value.
  uint32_t r = to_bits(a);
  r += 0x7ffffu + ((r >> 20) & 1u);
  const uint32_t code = (r >> 20) - (120u << 3);  // rebias 127 -> 7
  return sign | static_cast<uint8_t>(code > 0x7eu ? 0x7eu : code);
}

EPCOMM_HD float e4m3_to_f32(uint8_t q) {
  const uint32_t sign = static_cast<uint32_t>(q & 0x80u) << 24;
  const uint32_t exp = (q >> 3) & 15u, man = q & 7u;
  if (exp == 15u && man == 7u) return from_bits(sign | 0x7fc00000u);
  if (exp == 0u) return from_bits(to_bits(static_cast<float>(man) * 0x1p-9f) | sign);
  return from_bits(sign | ((exp + 120u) << 23) | (man << 20));
}

// FP32 scale of a tile: amax / 448 (amax over finite |x|, floored).
EPCOMM_HD float fp8_scale(float amax) {
  return (amax > kFp8AmaxFloor ? amax : kFp8AmaxFloor) / kE4M3Max;
}

// The UE8M0 byte (biased exponent) of 2^ceil(log2(s)) for a normal s: the
// exponent of s, plus one unless s already is a power of two.
EPCOMM_HD uint8_t ue8m0_ceil(float s) {
  const uint32_t r = to_bits(s);
  return static_cast<uint8_t>((r >> 23) + ((r & 0x7fffffu) != 0u ? 1u : 0u));
}

// Power-of-two scale 2^ceil(log2(amax / 448)) as its UE8M0 byte.
EPCOMM_HD uint8_t fp8_scale_ue8m0(float amax) { return ue8m0_ceil(fp8_scale(amax)); }

// 2^(e - 127): the value of a UE8M0 byte (255 decodes as +inf).
EPCOMM_HD float ue8m0_value(uint8_t e) { return pow2i(static_cast<int>(e) - 127); }

}  // namespace epcomm::kernels::elem
