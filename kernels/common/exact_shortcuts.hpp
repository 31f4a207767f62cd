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

// RN(1 / x): the GPU's correctly rounded reciprocal instruction; the host divides.
EPCOMM_HD float recip_rn(float x) {
#if defined(__CUDA_ARCH__)
  return __frcp_rn(x);
#else
  return 1.0f / x;
#endif
}

// LogFMT's magnitude codes (log_encode_magnitude) from an approximate log2, for
// tiles whose step lies in [kLogMidpointStepMin, kLogMidpointStepMax] and
// elements above level 1.
//
// The reference takes the level just below |x| from log2_poly and an IEEE
// division, then returns the nearer of that level and the next one (compared in
// linear space). Write L_k for the log2 of level k as computed, P(a) for the
// tile-relative position (log2 a - min) / step. Every error involved, in log2
// units, is below E = B * 2^-20 + 2^-16, B = max(|min|, |max|) + 1: log2_poly is
// within 3.1e-6, the approximate log2 within B * 2^-22 (kLog2Error: __log2f,
// lg2.approx, is within 2 ulp, or 2^-22 absolute on [1/2, 2]), exp2_poly within
// ~4e-7 relative, and the few roundings of the positions (min + k * step, log2 a -
// min, the multiply by 1/step) are below B * 2^-24 or 32 * 2^-23 each. With step
// >= 2^-9, E / step < 0.072, so:
//  - the reference's bracket is the true one ([L_k, L_k+1] holding log2 a) unless
//    log2 a is within E of some L_j, and then both brackets it may pick contain
//    level j on the near side and the comparison returns j (a - lo and hi - a have
//    opposite signs or are exact), which is also the nearest level;
//  - with the true bracket, a - lo and hi - a are exact (Sterbenz: step <= 1/2
//    keeps hi < 2 lo), so the result is the exact nearest level, ties lower:
//    level k + 1 iff log2 a > log2((lo + hi) / 2) = L_k + g(L_k+1 - L_k), with
//    g(s) = log2((1 + 2^s) / 2), g' <= 0.59 for s <= 1/2.
// So for a > level 1 the code is 1 + the number of midpoints (lo + hi) / 2 below
// a, and midpoint k (between levels k and k + 1) sits at position k - 1 + m, m =
// g(step) / step, up to 2.2 E / step. log_midpoint_position computes t = P(a) + 1
// - m with one fused multiply-add of the log2 with RN(1/step) and a per-tile
// constant: midpoint k is at t = k, and the code is floor(t) + 1 unless t lies
// within d = 4 E / step + B / step * 2^-21 + 2^-18 of an integer (E for P(a) and
// 2.2 E for the midpoint; B / step * 2^-21 for the roundings of RN(1/step), of
// the constant and of the fused multiply-add, together below (5 B / step + 3) *
// 2^-24 in t, as P(a) <= K <= 2 B / step + 1 and the constant is at most 1 + B /
// step; 2^-18 for m's series, whose error in float is below 1.8e-6 over the
// steps taken). Positions need no clamping: a > level 1 gives t > 1 - m - 0.072
// > 0, and a <= amax <= 2^max gives t < K - m + 0.072 < K, so the code is in [1,
// K].
//
// Elements within d of a midpoint (about 1 % for n = 10 on Gaussian data) are
// decided as the reference does once its bracket is known
// (log_magnitude_near_midpoint). With j the integer nearest t, P(a) then lies in
// [j - 1 + 0.12, j - 0.07] (d <= 0.3, m in [1/2, 0.55]), farther from both ends
// than the reference's own error (E / step), so its bracket is levels j and
// j + 1, and it returns the nearer of the two.
inline constexpr float kLogMidpointStepMin = 0x1p-9f, kLogMidpointStepMax = 0.5f;
inline constexpr float kLog2Error = 0x1p-22f;  // per unit of B, as above
struct LogMidpoints {
  float inv;   // RN(1 / step)
  float bias;  // RN(1 - m - min * inv)
  float cut;   // 1/2 - d: |t - floor(t) - 1/2| > cut needs the exact decision
};
// m = log2((1 + 2^step) / 2) / step, the midpoints' offset inside a bracket, by
// its series (error below 1.8e-6 for steps in [kLogMidpointStepMin,
// kLogMidpointStepMax], rounding included).
EPCOMM_HD float log_midpoint_offset(float step) {
  return 0.5f + step * (0.08664340f - 0.0017345034f * step * step);
}
EPCOMM_HD LogMidpoints log_midpoints(LogTile t, float max) {
  LogMidpoints f;
  f.inv = recip_rn(t.step);
  const float m = log_midpoint_offset(t.step);
  f.bias = fma_rn(-t.min, f.inv, 1.0f - m);
  const float b = (abs_f(t.min) > abs_f(max) ? abs_f(t.min) : abs_f(max)) + 1.0f;
  const float e = b * 0x1p-20f + 0x1p-16f;
  f.cut = 0.5f - ((4.0f * e + 2.0f * b * kLog2Error) * f.inv + 0x1p-18f);
  return f;
}
// t = P(a) + 1 - m from lg2a, an approximate log2(a) (-inf gives -inf).
EPCOMM_HD float log_midpoint_position(float lg2a, LogMidpoints f) { return fma_rn(lg2a, f.inv, f.bias); }
// 2^23 + floor(t) for t in [0, 2^22), exactly; a finite value for t in (-2^23, 0)
// and -inf for -inf. The GPU rounds down in one add.
EPCOMM_HD float floor_plus_2p23(float t) {
#if defined(__CUDA_ARCH__)
  return __fadd_rd(t, 0x1p23f);
#else
  const float m = t + 0x1p23f;
  return m - 0x1p23f > t ? m - 1.0f : m;
#endif
}
// The code floor(t) + 1 from floor_plus_2p23(t) (garbage for t < 0).
EPCOMM_HD uint32_t log_midpoint_code(float floor_sum) { return to_bits(floor_sum) - (0x4b000000u - 1u); }
// |t - floor(t) - 1/2|, exactly, from floor_sum = floor_plus_2p23(t) (NaN for t =
// -inf): above LogMidpoints::cut, t lies too near a midpoint for floor(t) + 1.
EPCOMM_HD float log_off_centre(float t, float floor_sum) { return abs_f(t - (floor_sum - 8388607.5f)); }
// log_encode_magnitude(a, t, K) for an element with t = log_midpoint_position
// near a midpoint (and a above level 1).
EPCOMM_HD uint32_t log_magnitude_near_midpoint(float a, float t_pos, LogTile t) {
  const float floor_sum = floor_plus_2p23(t_pos);
  // The integer nearest t_pos (never a half-integer here).
  const int j = static_cast<int>(to_bits(floor_sum) - 0x4b000000u) + (t_pos - (floor_sum - 0x1p23f) > 0.5f ? 1 : 0);
  const float lo = log_level_fast(t, j), hi = log_level_fast(t, j + 1);
  return static_cast<uint32_t>(a - lo > hi - a ? j + 1 : j);
}

}  // namespace epcomm::kernels::elem
