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
