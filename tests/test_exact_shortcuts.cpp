// SPDX-License-Identifier: MIT
// kernels/common/exact_shortcuts.hpp against the reference element math it stands
// in for (the CUDA codecs use the shortcuts, the CPU codecs the reference):
// identical bits, exhaustively where the input space allows, else over every
// float of the ranges that decide the result plus seeded random samples.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include "common/exact_shortcuts.hpp"
#include "common/fp8_e4m3.hpp"

namespace {

namespace elem = epcomm::kernels::elem;

uint32_t bits(float f) { return elem::to_bits(f); }

TEST(ExactShortcuts, SmallIntToFloatIsTheConversion) {
  for (int32_t n = -(1 << 22) + 1; n < (1 << 22); ++n) {
    ASSERT_EQ(bits(elem::small_int_to_float(n)), bits(static_cast<float>(n))) << n;
  }
}

// Floats of magnitude below 2^22: every 5th from 0.5 on (every 4099th below), and
// every float next to the integers up to 2^12 and to every 997th beyond.
TEST(ExactShortcuts, FloorAndCeilSmallAreTheConversions) {
  auto check = [](float y) {
    ASSERT_EQ(elem::floor_small(y), static_cast<int>(std::floor(y))) << y;
    ASSERT_EQ(elem::ceil_small(y), static_cast<int>(std::ceil(y))) << y;
    ASSERT_EQ(elem::floor_small(-y), static_cast<int>(std::floor(-y))) << -y;
    ASSERT_EQ(elem::ceil_small(-y), static_cast<int>(std::ceil(-y))) << -y;
  };
  for (uint32_t u = 0; u < 0x4a800000u; u += u < 0x3f000000u ? 4099 : 5) check(elem::from_bits(u));
  for (int k = 0; k < (1 << 22); k += k < 4096 ? 1 : 997) {
    float lo = static_cast<float>(k), hi = lo;
    for (int i = 0; i < 16; ++i) {
      check(lo);
      check(hi);
      lo = std::nextafter(lo, -1.0f);
      hi = std::nextafter(hi, 1e9f);
    }
  }
}

TEST(ExactShortcuts, Exp2PolyFastIsExp2Poly) {
  // Near every integer of the range (where floor changes) every float, elsewhere
  // every 61st float, and the clamped ends.
  for (int k = -128; k <= 129; ++k) {
    const float c = static_cast<float>(k);
    float lo = c, hi = c;
    for (int i = 0; i < 4096; ++i) {
      ASSERT_EQ(bits(elem::exp2_poly_fast(lo)), bits(elem::exp2_poly(lo))) << lo;
      ASSERT_EQ(bits(elem::exp2_poly_fast(hi)), bits(elem::exp2_poly(hi))) << hi;
      lo = std::nextafter(lo, -1e30f);
      hi = std::nextafter(hi, 1e30f);
    }
  }
  for (uint32_t u = 0; u < 0xff800000u; u += 61) {
    const float y = elem::from_bits(u);
    if (elem::is_nan(y)) continue;
    ASSERT_EQ(bits(elem::exp2_poly_fast(y)), bits(elem::exp2_poly(y))) << y;
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (float y : {inf, -inf, 1e30f, -1e30f, 128.0f, -127.0f}) {
    EXPECT_EQ(bits(elem::exp2_poly_fast(y)), bits(elem::exp2_poly(y))) << y;
  }
}

// max - min of two stored int16s is d / 128 exactly for an integer d in
// [-65535, 65535], so every difference covers every pair.
TEST(ExactShortcuts, LogTileFastIsLogTileFromStoredForEveryPair) {
  for (int bits_n = 3; bits_n <= 16; ++bits_n) {
    for (int d = -65535; d <= 65535; ++d) {
      const int16_t min_q = static_cast<int16_t>(d > 0 ? -32768 : 32767);
      const int16_t max_q = static_cast<int16_t>(min_q + d);
      const elem::LogTile want = elem::log_tile_from_stored(min_q, max_q, bits_n);
      const elem::LogTile got = elem::log_tile_fast(min_q, max_q, bits_n);
      ASSERT_EQ(bits(got.step), bits(want.step)) << "bits " << bits_n << " d " << d;
      ASSERT_EQ(bits(got.min), bits(want.min));
    }
  }
  for (int q = -32768; q <= 32767; ++q) {
    const auto s = static_cast<int16_t>(q);
    const elem::LogTile want = elem::log_tile_from_stored(s, s, 8);
    ASSERT_EQ(bits(elem::log_tile_fast(s, s, 8).min), bits(want.min)) << q;
  }
}

TEST(ExactShortcuts, LogDecodeFastIsLogDecode) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> q(-32768, 32767), near(-16128, 12000), width(0, 4096);
  int in_range_tiles = 0;
  for (int bits_n = 3; bits_n <= 16; ++bits_n) {
    const uint32_t codes = 1u << bits_n;
    for (int tile = 0; tile < (bits_n <= 10 ? 400 : 40); ++tile) {
      // Arbitrary stored pairs, and pairs as encoders write them.
      int lo = q(rng), hi = q(rng);
      if (tile % 2 == 0) {
        lo = near(rng);
        hi = lo + width(rng);
      }
      const elem::LogTile want = elem::log_tile_from_stored(static_cast<int16_t>(lo), static_cast<int16_t>(hi), bits_n);
      const elem::LogTile t = elem::log_tile_fast(static_cast<int16_t>(lo), static_cast<int16_t>(hi), bits_n);
      const bool in_range = elem::log_levels_in_range(t, (1 << (bits_n - 1)) - 1);
      in_range_tiles += in_range;
      for (uint32_t c = 0; c < codes; ++c) {
        const float want_v = elem::log_decode(c, want, bits_n);
        ASSERT_EQ(bits(elem::log_decode_fast(c, t, bits_n)), bits(want_v))
            << "bits " << bits_n << " min_q " << lo << " max_q " << hi << " code " << c;
        if (in_range) {
          ASSERT_EQ(bits(elem::log_decode_fast<true>(c, t, bits_n)), bits(want_v))
              << "in range: bits " << bits_n << " min_q " << lo << " max_q " << hi << " code " << c;
        }
      }
    }
  }
  EXPECT_GT(in_range_tiles, 1000);  // the encoders' tiles, and some arbitrary ones
}

// The margin of the encoder's route allows 2^-18 for the series of the midpoints'
// offset m: every float step of [2^-9, 1/2] against the offset in double.
TEST(ExactShortcuts, LogMidpointOffsetIsWithinItsMargin) {
  double worst = 0.0;
  for (float s = elem::kLogMidpointStepMin; s <= elem::kLogMidpointStepMax; s = std::nextafter(s, 1.0f)) {
    const double step = s;
    const double m = std::log2((1.0 + std::exp2(step)) / 2.0) / step;
    worst = std::max(worst, std::fabs(static_cast<double>(elem::log_midpoint_offset(s)) - m));
  }
  EXPECT_LT(worst, 1.8e-6);
}

// The CUDA LogFMT encoder's route (elem::LogMidpoints), with the hardware log2
// played by log2 rounded to float and then moved by the whole error bound either
// way, against log_encode_magnitude: tiles of every width and many ranges, and
// elements spread over the tile plus every float next to some midpoints and
// levels, where the route must take the exact decision.
TEST(ExactShortcuts, LogMidpointCodesAreTheReference) {
  std::mt19937 rng(13);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int> centre(-120, 120);
  std::uniform_real_distribution<double> span(0.1, 33.0);
  long decided_fast = 0, decided_exact = 0;
  for (int bits_n = 3; bits_n <= 16; ++bits_n) {
    const int levels = (1 << (bits_n - 1)) - 1;
    for (int tile = 0; tile < 300; ++tile) {
      // A tile as the encoder writes it: the range of amin and amax.
      const double hi_log = centre(rng) + unit(rng), lo_log = hi_log - span(rng);
      const float amax = static_cast<float>(std::exp2(hi_log));
      const float amin = static_cast<float>(std::exp2(std::max(lo_log, -125.9)));
      int16_t min_q = 0, max_q = 0;
      const elem::LogTile t = elem::log_tile_params(amin, amax, bits_n, &min_q, &max_q);
      if (t.step < elem::kLogMidpointStepMin || t.step > elem::kLogMidpointStepMax) continue;
      const float max = static_cast<float>(max_q) / static_cast<float>(elem::kLogFixedOne);
      const elem::LogMidpoints f = elem::log_midpoints(t, max);
      const float v1 = elem::log_level(t, 1);
      const double b = std::max(std::fabs(t.min), std::fabs(max)) + 1.0;
      auto check = [&](float a) {
        if (!(a > v1) || a > amax) return;
        const float lg = static_cast<float>(std::log2(static_cast<double>(a)));
        const uint32_t want = static_cast<uint32_t>(elem::log_encode_magnitude(a, t, levels));
        for (double error : {-1.0, 0.0, 1.0}) {
          const float approx = static_cast<float>(lg + error * b * 0x1p-22);
          const float pos = elem::log_midpoint_position(approx, f);
          const float floor_sum = elem::floor_plus_2p23(pos);
          const bool exact = elem::log_off_centre(pos, floor_sum) > f.cut;
          const uint32_t got = exact ? elem::log_magnitude_near_midpoint(a, pos, t) : elem::log_midpoint_code(floor_sum);
          ++(exact ? decided_exact : decided_fast);
          ASSERT_EQ(got, want) << "bits " << bits_n << " min_q " << min_q << " max_q " << max_q << " a " << a
                               << " log2 error " << error << (exact ? " (exact decision)" : " (from floor)");
        }
      };
      for (int i = 0; i < 2000; ++i) {
        check(static_cast<float>(std::exp2(t.min + (max - t.min) * unit(rng))));
      }
      for (int i = 0; i < 20; ++i) {
        const int k = 1 + static_cast<int>(unit(rng) * (levels - 1));
        const float lo = elem::log_level(t, k), hi = elem::log_level(t, k + 1);
        const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
        float up = mid, down = mid, lo_up = lo, lo_down = lo;
        for (int s = 0; s < 64; ++s) {
          check(up);
          check(down);
          check(lo_up);
          check(lo_down);
          up = std::nextafter(up, 1e30f);
          down = std::nextafter(down, 0.0f);
          lo_up = std::nextafter(lo_up, 1e30f);
          lo_down = std::nextafter(lo_down, 0.0f);
        }
      }
    }
  }
  EXPECT_GT(decided_fast, 1000000);
  EXPECT_GT(decided_exact, 100000);
}

// Every float of [2^-97, 2^-94) (around the floor) and of [1, 4), and every 29th
// float elsewhere up to the largest.
TEST(ExactShortcuts, Fp8ScaleFastIsFp8Scale) {
  for (uint32_t u = 0; u < 0x7f800000u;
       u += (u >= 0x0f000000u && u < 0x10800000u) || (u >= 0x3f800000u && u < 0x40800000u) ? 1 : 29) {
    const float amax = elem::from_bits(u);
    ASSERT_EQ(bits(elem::fp8_scale_fast(amax)), bits(elem::fp8_scale(amax))) << amax;
  }
}

uint8_t e4m3_fast(float x, float s) { return elem::f32_to_e4m3(elem::fp8_quotient(x, s, 1.0f / s)); }

// The tile's finite amax, a random element at most that large, and the tile's
// scale, over amax from 2^-55 (the smallest with a scale >= 2^-64) to the largest
// float; x over its whole range below amax, including subnormals and signed zeros.
TEST(ExactShortcuts, Fp8QuotientGivesTheCodeOfTheQuotient) {
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<uint32_t> mant(0, 0x7fffffu), amax_exp(72, 254), below(0, 60);
  std::uniform_int_distribution<int> coin(0, 1), pick(0, 15);
  int64_t exact_quotients = 0;
  for (int i = 0; i < 20'000'000; ++i) {
    const float amax = elem::from_bits(amax_exp(rng) << 23 | mant(rng));
    const float s = elem::fp8_scale(amax);
    if (s < elem::kFp8FastScaleMin) continue;
    float x;
    switch (pick(rng)) {
      case 0: x = amax; break;
      case 1: x = 0.0f; break;
      case 2: x = -0.0f; break;
      case 3: x = elem::from_bits(static_cast<uint32_t>(mant(rng))); break;  // subnormal
      case 4: {
        // Close to an E4M3 rounding boundary: a midpoint of two codes times s.
        const float mid = elem::e4m3_to_f32(static_cast<uint8_t>(rng() % 0x7e)) * 1.0625f;
        x = std::nextafter(mid * s, coin(rng) ? 0.0f : 1e38f);
        if (!(x <= amax)) x = amax;
        break;
      }
      default: {
        const uint32_t e = (bits(amax) >> 23) - std::min<uint32_t>(bits(amax) >> 23, below(rng));
        x = elem::from_bits(e << 23 | mant(rng));
        if (!(x <= amax)) x = amax;
      }
    }
    if (coin(rng)) x = -x;
    const float want = x / s;
    ASSERT_EQ(e4m3_fast(x, s), elem::f32_to_e4m3(want)) << "x " << x << " amax " << amax;
    const float got = elem::fp8_quotient(x, s, 1.0f / s);
    if (elem::abs_f(want) >= 0x1p-11f) {
      ASSERT_EQ(bits(got), bits(want)) << "x " << x << " amax " << amax;
      ++exact_quotients;
    }
  }
  EXPECT_GT(exact_quotients, 5'000'000);
}

// BF16 inputs, the common case: every BF16 x against every 64th BF16 amax above it.
TEST(ExactShortcuts, Fp8QuotientOfBf16Rows) {
  for (uint32_t a = 0x0c80; a < 0x7f80; a += 64) {
    const float amax = elem::from_bits(a << 16);
    const float s = elem::fp8_scale(amax);
    if (s < elem::kFp8FastScaleMin) continue;
    for (uint32_t b = 0; b <= a; ++b) {
      for (uint32_t sign : {0u, 0x8000u}) {
        const float x = elem::from_bits((b | sign) << 16);
        ASSERT_EQ(e4m3_fast(x, s), elem::f32_to_e4m3(x / s)) << "x " << x << " amax " << amax;
      }
    }
  }
}

}  // namespace
