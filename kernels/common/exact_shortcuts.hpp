// SPDX-License-Identifier: MIT
// Cheaper routes to some values of the element math (logfmt_math.hpp,
// fp8_e4m3.hpp), for the CUDA kernels: on a GPU, float <-> int conversions and
// floor run at 1/8 of the FP32 rate and an IEEE division is a ~10-instruction
// sequence with a slow path, which made the LogFMT and FP8 codecs compute-bound.
// Each function here returns the same bits as the reference expression it names,
// for the inputs it states; tests/test_exact_shortcuts.cpp checks that on the
// host, exhaustively where the input space allows. The reference functions stay
// the readable spec (and what the CPU codecs run).
#pragma once

#include <cmath>

#include "fp8_e4m3.hpp"
#include "logfmt_math.hpp"

namespace epcomm::kernels::elem {

// static_cast<float>(n) for |n| < 2^22: the float 1.5 * 2^23 + n holds n in its
// mantissa (one integer add), and subtracting 1.5 * 2^23 is exact.
EPCOMM_HD float small_int_to_float(int32_t n) {
  return from_bits(0x4b400000u + static_cast<uint32_t>(n)) - 12582912.0f;
}

// 1.5 * 2^23 + floor(y) for |y| < 2^22, exactly: the sum lies in [2^23, 2^24),
// where floats are the integers, so rounding it down gives it. The GPU rounds down
// in one add (FADD.RM, as the LogFMT encoder's bracket does); the host rounds to
// nearest and steps down when that went up (what the tests check).
EPCOMM_HD float magic_plus_floor(float y) {
#if defined(__CUDA_ARCH__)
  return __fadd_rd(y, 12582912.0f);
#else
  const float m = y + 12582912.0f;
  return m - 12582912.0f > y ? m - 1.0f : m;
#endif
}

// static_cast<int>(floorf(y)) and static_cast<int>(ceilf(y)) for |y| < 2^22.
EPCOMM_HD int floor_small(float y) { return static_cast<int>(to_bits(magic_plus_floor(y)) - 0x4b400000u); }
EPCOMM_HD int ceil_small(float y) { return -floor_small(-y); }

// a * b + c rounded once (the GPU's FFMA; std::fma is the correctly rounded one on
// the host).
EPCOMM_HD float fma_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// a / b rounded to nearest, from y = RN(1/b) (Markstein's correction): q = RN(a * y)
// is within an ulp of a / b, r = a - b * q is then exact, and RN(q + r * y) is the
// correctly rounded quotient. Valid while q, r and a stay normal numbers (no
// underflow, no overflow); callers keep to ranges the tests cover.
EPCOMM_HD float div_by_reciprocal(float a, float b, float y) {
  const float q = a * y;
  const float r = fma_rn(-q, b, a);
  return fma_rn(r, y, q);
}

// fp8_scale(amax) for finite amax >= 0: the division by 448 as above, exact for every
// such amax (the floor keeps the quotient and the remainder normal, or at least
// multiples of 2^-149; division by a constant scales exactly with the binade).
EPCOMM_HD float fp8_scale_fast(float amax) {
  return div_by_reciprocal(amax > kFp8AmaxFloor ? amax : kFp8AmaxFloor, kE4M3Max, 1.0f / kE4M3Max);
}

// A value with the same E4M3 code as x / s (f32_to_e4m3(x / s) ==
// f32_to_e4m3(fp8_quotient(x, s, RN(1/s)))), for s = fp8_scale(amax) >= 2^-64 and
// finite x with |x| <= amax: div_by_reciprocal's quotient with x's sign. Where
// |x / s| >= 2^-11 that is the IEEE quotient (q and r = x - s * q are multiples of
// at least 2^-121, so r is exact); below, the result is below 2^-10 as well and
// rounds to the zero code, whose sign x gives (the correction can lose it).
inline constexpr float kFp8FastScaleMin = 0x1p-64f;
EPCOMM_HD float fp8_quotient(float x, float s, float y) {
  return from_bits((to_bits(div_by_reciprocal(x, s, y)) & 0x7fffffffu) | (to_bits(x) & 0x80000000u));
}

// exp2_poly(y) for y inside its clamps ([kExp2Lowest, kExp2Highest]), with floor(y)
// and 2^floor(y) from magic_plus_floor's sum instead of conversion instructions.
EPCOMM_HD float exp2_poly_in_range(float y) {
  const float m = magic_plus_floor(y);
  const float i = m - 12582912.0f;  // floorf(y)
  // floor(y) + 127, in [1, 254]: the exponent field of pow2i(floor(y)).
  return exp2_frac_poly(y - i) * from_bits((to_bits(m) - 0x4b400000u + 127u) << 23);
}

// exp2_poly(y).
EPCOMM_HD float exp2_poly_fast(float y) {
  y = y < kExp2Lowest ? kExp2Lowest : y;
  y = y > kExp2Highest ? kExp2Highest : y;
  return exp2_poly_in_range(y);
}

// log_tile_from_stored(min_q, max_q, bits): the int16s converted as above and the
// step's division by K - 1 done with the reciprocal of that constant (exact for
// every pair of int16, tested exhaustively for every width).
EPCOMM_HD LogTile log_tile_fast(int16_t min_q, int16_t max_q, int bits) {
  const float min = small_int_to_float(min_q) / static_cast<float>(kLogFixedOne);
  const float max = small_int_to_float(max_q) / static_cast<float>(kLogFixedOne);
  const float k1 = static_cast<float>((1 << (bits - 1)) - 2);
  return LogTile{min, div_by_reciprocal(max - min, k1, 1.0f / k1)};
}

// log_level(t, k) for k in [1, 2^22]. With kInRange, for tiles whose levels all lie
// inside exp2_poly's clamps (log_levels_in_range), which then need no clamping.
template <bool kInRange = false>
EPCOMM_HD float log_level_fast(LogTile t, int k) {
  const float y = small_int_to_float(k - 1) * t.step + t.min;
  return kInRange ? exp2_poly_in_range(y) : exp2_poly_fast(y);
}

// Whether the positions (k - 1) * step + min of levels 1..K all lie inside
// exp2_poly's clamps. Both roundings are monotone, so the positions are monotone
// in k and the first and last decide.
EPCOMM_HD bool log_levels_in_range(LogTile t, int levels) {
  const float first = t.min, last = small_int_to_float(levels - 1) * t.step + t.min;
  const float lo = first < last ? first : last, hi = first < last ? last : first;
  return lo >= kExp2Lowest && hi <= kExp2Highest;
}

// log_decode(code, t, bits); kInRange as for log_level_fast.
template <bool kInRange = false>
EPCOMM_HD float log_decode_fast(uint32_t code, LogTile t, int bits) {
  const uint32_t mag = code & ((1u << (bits - 1)) - 1u);
  const uint32_t sign = (code >> (bits - 1)) & 1u;
  const float v = mag == 0u ? 0.0f : log_level_fast<kInRange>(t, static_cast<int>(mag));
  return from_bits(to_bits(v) | (sign << 31));
}

}  // namespace epcomm::kernels::elem
