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

// static_cast<int>(floorf(y)) and static_cast<int>(ceilf(y)) for |y| < 2^22:
// 1.5 * 2^23 + y rounds y to the nearest integer n, held in the sum's mantissa,
// and n is one off the floor (ceiling) when it lies above (below) y.
EPCOMM_HD int floor_small(float y) {
  const float m = y + 12582912.0f;
  const int n = static_cast<int>(to_bits(m) - 0x4b400000u);
  return m - 12582912.0f > y ? n - 1 : n;
}
EPCOMM_HD int ceil_small(float y) {
  const float m = y + 12582912.0f;
  const int n = static_cast<int>(to_bits(m) - 0x4b400000u);
  return m - 12582912.0f < y ? n + 1 : n;
}

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
// f32_to_e4m3(fp8_quotient(x, s, RN(1/s)))), for s = fp8_scale(amax) >= 2^-64, x
// not NaN and |x| <= amax or infinite. Where |x * y| lies in [2^-11, 512] it is
// the quotient itself (above); below, every candidate rounds to a signed zero code,
// and x * y has x's sign; above, x is infinite and x * y too (code +-448).
inline constexpr float kFp8FastScaleMin = 0x1p-64f;
EPCOMM_HD float fp8_quotient(float x, float s, float y) {
  const float q = x * y;
  const float a = abs_f(q);
  return a >= 0x1p-11f && a <= 512.0f ? fma_rn(fma_rn(-q, s, x), y, q) : q;
}

// exp2_poly(y), with floor(y) and 2^floor(y) from float adds and bit moves instead
// of conversion instructions. After the clamps |y| < 2^22, so 1.5 * 2^23 + y rounds
// y to an integer that the sum holds exactly in its mantissa.
EPCOMM_HD float exp2_poly_fast(float y) {
  y = y < kExp2Lowest ? kExp2Lowest : y;
  y = y > kExp2Highest ? kExp2Highest : y;
  const float m = y + 12582912.0f;
  const float nearest = m - 12582912.0f;
  const bool above = nearest > y;
  const float i = above ? nearest - 1.0f : nearest;  // floorf(y)
  // floor(y) + 127, in [1, 254]: the exponent field of pow2i(floor(y)).
  const uint32_t biased = to_bits(m) - (above ? 1u : 0u) - 0x4b400000u + 127u;
  return exp2_frac_poly(y - i) * from_bits(biased << 23);
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

// log_level(t, k) for k in [1, 2^22].
EPCOMM_HD float log_level_fast(LogTile t, int k) {
  return exp2_poly_fast(small_int_to_float(k - 1) * t.step + t.min);
}

// log_decode(code, t, bits).
EPCOMM_HD float log_decode_fast(uint32_t code, LogTile t, int bits) {
  const uint32_t mag = code & ((1u << (bits - 1)) - 1u);
  const uint32_t sign = (code >> (bits - 1)) & 1u;
  const float v = mag == 0u ? 0.0f : log_level_fast(t, static_cast<int>(mag));
  return from_bits(to_bits(v) | (sign << 31));
}

}  // namespace epcomm::kernels::elem
