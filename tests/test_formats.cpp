// SPDX-License-Identifier: MIT
// FP8 E4M3 and LogFMT-n against references computed here, in double precision and
// from the formats' definitions (docs/formats.md), never from kernels/common.
#include <epcomm/error.hpp>
#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace {

using epcomm::DType;
using epcomm::Format;
using epcomm::kernels::codec_for;

constexpr double kInf = std::numeric_limits<double>::infinity();

float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// E4M3 by definition: (-1)^s * 2^(e-7) * (1 + m/8), subnormal 2^-6 * m/8, S.1111.111 NaN.
double e4m3_value(int code) {
  const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
  return s ? -mag : mag;
}

// The finite E4M3 code nearest to v (ties to the even code, which is the one with
// the even mantissa); beyond 448 that is 448, the saturating rule. NaN -> S.1111.111.
uint8_t nearest_e4m3(double v) {
  const uint8_t sign = std::signbit(v) ? 0x80 : 0x00;
  if (std::isnan(v)) return sign | 0x7f;
  const double a = std::fabs(v);
  int best = 0;
  double best_d = kInf;
  for (int c = 0; c <= 0x7e; ++c) {
    const double d = std::fabs(e4m3_value(c) - a);
    if (d < best_d || (d == best_d && (c & 1) == 0)) {
      best = c;
      best_d = d;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

std::vector<float> gaussian_row(std::mt19937& rng, int n, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// |x| log-normal over many binades, random signs.
std::vector<float> lognormal_row(std::mt19937& rng, int n, float sigma) {
  std::lognormal_distribution<float> d(0.0f, sigma);
  std::bernoulli_distribution neg(0.5);
  std::vector<float> x(n);
  for (float& v : x) v = neg(rng) ? -d(rng) : d(rng);
  return x;
}

std::vector<std::byte> encode(Format f, const std::vector<float>& x) {
  const auto& c = codec_for(f);
  std::vector<std::byte> row(c.row_bytes(static_cast<int>(x.size())));
  EXPECT_EQ(c.encode_row(x.data(), DType::kF32, static_cast<int>(x.size()), row.data()), -1);
  return row;
}

std::vector<float> decode(Format f, const std::vector<std::byte>& row, int hidden) {
  std::vector<float> y(hidden);
  codec_for(f).decode_row(row.data(), hidden, y.data(), DType::kF32);
  return y;
}

TEST(Fp8, All256CodesDecodeToTheirDefinition) {
  std::vector<std::byte> row(epcomm::encoded_row_bytes(Format::kFP8, 256));
  const epcomm::RowLayout l = epcomm::row_layout(Format::kFP8, 256);
  for (int c = 0; c < 256; ++c) row[l.payload_offset + c] = static_cast<std::byte>(c);
  const float one = 1.0f;
  for (int t = 0; t < 2; ++t) std::memcpy(row.data() + l.meta_offset + 4 * t, &one, 4);
  const std::vector<float> y = decode(Format::kFP8, row, 256);
  for (int c = 0; c < 256; ++c) {
    const double want = e4m3_value(c);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(y[c])) << "code " << c;
    } else {
      EXPECT_EQ(static_cast<double>(y[c]), want) << "code " << c;
      EXPECT_EQ(std::signbit(y[c]), (c & 0x80) != 0) << "code " << c;
    }
  }
}

// Every BF16 bit pattern, scaled by 1, rounds to the nearest E4M3 value.
TEST(Fp8, EveryBf16PatternRoundsCorrectly) {
  for (const auto* k : {&epcomm::kernels::reference_kernels(), &epcomm::kernels::active_kernels()}) {
    std::vector<float> x(128);
    std::vector<uint8_t> q(128);
    for (uint32_t base = 0; base < 65536; base += 128) {
      for (uint32_t i = 0; i < 128; ++i) x[i] = f32_from_bits((base + i) << 16);
      k->fp8_encode(x.data(), 128, 1.0f, q.data());
      for (uint32_t i = 0; i < 128; ++i) {
        ASSERT_EQ(q[i], nearest_e4m3(x[i])) << k->name << " bf16 pattern 0x" << std::hex << base + i << " = " << x[i];
      }
    }
  }
}

// Rows: FP32 scale = amax/448 per tile (UE8M0: 2^ceil(log2(amax/448))), each code
// the nearest E4M3 of x / scale, NaN kept, infinities saturated, amax over finite
// values only, all-zero tiles fine, short last tile.
TEST(Fp8, RowsScalePerTileAndRoundEachElement) {
  std::mt19937 rng(3);
  for (Format f : {Format::kFP8, Format::kFP8UE8M0}) {
    for (int hidden : {1, 100, 128, 200, 7168}) {
      std::vector<float> x = lognormal_row(rng, hidden, 3.0f);
      if (hidden >= 200) {
        std::fill(x.begin() + 128, x.begin() + 200, 0.0f);  // an all-zero (short) tile
        x[5] = std::numeric_limits<float>::infinity();
        x[6] = -std::numeric_limits<float>::infinity();
        x[7] = std::numeric_limits<float>::quiet_NaN();
      }
      const std::vector<std::byte> row = encode(f, x);
      const epcomm::RowLayout l = epcomm::row_layout(f, hidden);
      const std::vector<float> y = decode(f, row, hidden);
      for (int t = 0; t * 128 < hidden; ++t) {
        const int n = std::min(128, hidden - t * 128);
        double amax = 0;
        for (int i = 0; i < n; ++i) {
          if (std::isfinite(x[t * 128 + i])) amax = std::max(amax, std::fabs(double{x[t * 128 + i]}));
        }
        amax = std::max(amax, std::ldexp(1.0, -96));
        float scale;
        if (f == Format::kFP8) {
          std::memcpy(&scale, row.data() + l.meta_offset + 4 * t, 4);
          ASSERT_EQ(scale, static_cast<float>(amax) / 448.0f);
        } else {
          const int e = static_cast<int>(std::to_integer<uint8_t>(row[l.meta_offset + t]));
          const int want = 127 + static_cast<int>(std::ceil(std::log2(static_cast<double>(static_cast<float>(amax) / 448.0f))));
          ASSERT_EQ(e, want) << "tile " << t;
          scale = static_cast<float>(std::ldexp(1.0, e - 127));
        }
        for (int i = 0; i < n; ++i) {
          const int h = t * 128 + i;
          const uint8_t q = std::to_integer<uint8_t>(row[l.payload_offset + h]);
          ASSERT_EQ(q, nearest_e4m3(x[h] / scale)) << epcomm::to_string(f) << " h " << h << " x " << x[h];
          if (std::isnan(x[h])) {
            ASSERT_TRUE(std::isnan(y[h]));
          } else {
            ASSERT_EQ(y[h], static_cast<float>(e4m3_value(q)) * scale);
          }
        }
      }
    }
  }
}

// ---- LogFMT ----

struct LogTileView {
  int min_q, max_q;
};

LogTileView tile_meta(Format f, const std::vector<std::byte>& row, int hidden, int tile) {
  const epcomm::RowLayout l = epcomm::row_layout(f, hidden);
  int16_t mm[2];
  std::memcpy(mm, row.data() + l.meta_offset + 4 * tile, 4);
  return {mm[0], mm[1]};
}

// Checks one encoded LogFMT row against the format's definition: stored range,
// every decoded value a level of the tile (or zero), the error within half the gap
// to the next level (linear-space rounding), zero below half of level 1.
void check_logfmt_row(int bits, const std::vector<float>& x) {
  const Format f = epcomm::logfmt_format(bits);
  const int hidden = static_cast<int>(x.size());
  const std::vector<std::byte> row = encode(f, x);
  const std::vector<float> y = decode(f, row, hidden);
  const int levels = (1 << (bits - 1)) - 1;
  for (int t = 0; t * 128 < hidden; ++t) {
    const int n = std::min(128, hidden - t * 128);
    double amin = kInf, amax = 0;
    for (int i = 0; i < n; ++i) {
      const double a = std::fabs(double{x[t * 128 + i]});
      if (a < std::ldexp(1.0, -126)) continue;
      amin = std::min(amin, a);
      amax = std::max(amax, a);
    }
    const LogTileView m = tile_meta(f, row, hidden, t);
    if (amax == 0) {
      ASSERT_EQ(m.min_q, 0);
      ASSERT_EQ(m.max_q, 0);
      for (int i = 0; i < n; ++i) ASSERT_EQ(y[t * 128 + i], 0.0f);
      continue;
    }
    // The range is log2 of the extremes on a 1/128 grid, rounded outwards (the
    // implementation's log2 is a polynomial: allow one grid step).
    const int want_max = static_cast<int>(std::ceil(std::log2(amax) * 128));
    ASSERT_NEAR(m.max_q, want_max, 1) << "tile " << t;
    const int want_min = std::max(static_cast<int>(std::floor(std::log2(amin) * 128)), m.max_q - 32 * 128);
    ASSERT_NEAR(m.min_q, want_min, 1) << "tile " << t;
    const double lo = m.min_q / 128.0, step = (m.max_q - m.min_q) / 128.0 / (levels - 1);
    for (int i = 0; i < n; ++i) {
      const int h = t * 128 + i;
      const double a = std::fabs(double{x[h]}), d = std::fabs(double{y[h]});
      if (d != 0) {
        ASSERT_EQ(std::signbit(y[h]), std::signbit(x[h])) << "h " << h;
        // d is a level: 2^(lo + j*step) for an integer j in [0, levels).
        const double j = step > 0 ? (std::log2(d) - lo) / step : 0.0;
        ASSERT_NEAR(j, std::round(j), 1e-3 + 1e-5 / std::max(step, 1e-9)) << "h " << h;
        ASSERT_GE(std::round(j), 0);
        ASSERT_LE(std::round(j), levels - 1);
      }
      const double level1 = std::exp2(lo);
      if (a < level1) {
        // Between zero and level 1: the nearer of the two.
        ASSERT_LE(std::fabs(d - a), std::max(a, level1 - a) * (1 + 1e-5) + 1e-30) << "h " << h;
        if (a < 0.49 * level1) {
          ASSERT_EQ(d, 0.0) << "h " << h;
        }
        if (a > 0.51 * level1) {
          ASSERT_NE(d, 0.0) << "h " << h;
        }
      } else {
        const double gap = std::exp2(step) - 1;  // relative distance between levels
        ASSERT_LE(std::fabs(d - a), a * gap / 2 * (1 + 1e-3) + a * 1e-6)
            << "bits " << bits << " h " << h << " x " << x[h] << " y " << y[h];
      }
    }
  }
}

TEST(LogFmt, RoundTripWithinTheStepBoundForEveryWidth) {
  std::mt19937 rng(4);
  for (int bits = 3; bits <= 16; ++bits) {
    for (int hidden : {1, 5, 128, 300}) {
      check_logfmt_row(bits, gaussian_row(rng, hidden));
      check_logfmt_row(bits, lognormal_row(rng, hidden, 2.0f));
      check_logfmt_row(bits, lognormal_row(rng, hidden, 12.0f));  // wider than the clamp
    }
  }
}

TEST(LogFmt, EdgeCases) {
  for (int bits : {3, 8, 10, 16}) {
    const Format f = epcomm::logfmt_format(bits);
    // All zero (and subnormal, which count as zero): range (0, 0), all codes zero.
    std::vector<float> zeros(130, 0.0f);
    zeros[3] = -0.0f;
    zeros[4] = f32_from_bits(0x00000005u);
    zeros[129] = -f32_from_bits(0x007fffffu);
    check_logfmt_row(bits, zeros);
    for (float v : decode(f, encode(f, zeros), 130)) EXPECT_EQ(v, 0.0f);
    // One distinct magnitude that is a power of two decodes exactly.
    std::vector<float> pow2(128);
    for (int i = 0; i < 128; ++i) pow2[i] = i % 3 ? 4.0f : -4.0f;
    const std::vector<float> y = decode(f, encode(f, pow2), 128);
    for (int i = 0; i < 128; ++i) EXPECT_EQ(y[i], pow2[i]) << "bits " << bits;
    // One distinct magnitude in general, and zeros mixed in.
    std::vector<float> three(128, 3.0f);
    for (int i = 0; i < 128; i += 7) three[i] = 0.0f;
    check_logfmt_row(bits, three);
    // Below the clamp (max - 32 in log2): tiny values become 0 or level 1, whichever
    // is nearer.
    std::vector<float> wide(128, 1.0f);
    const double level1 = std::exp2(0.0 - 32.0);
    wide[1] = 1e-30f;
    wide[2] = static_cast<float>(0.4 * level1);
    wide[3] = static_cast<float>(0.6 * level1);
    const std::vector<float> w = decode(f, encode(f, wide), 128);
    EXPECT_EQ(w[1], 0.0f);
    EXPECT_EQ(w[2], 0.0f);
    EXPECT_NEAR(w[3], level1, level1 * 1e-5);
    check_logfmt_row(bits, wide);
  }
}

TEST(LogFmt, NonFiniteInputIsReportedWithItsColumn) {
  const auto& c = codec_for(Format::kLogFMT8);
  for (int col : {0, 127, 128, 299}) {
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
      std::vector<float> x(300, 1.5f);
      x[col] = bad;
      std::vector<std::byte> row(c.row_bytes(300));
      EXPECT_EQ(c.encode_row(x.data(), DType::kF32, 300, row.data()), col);
    }
  }
}

// Linear-space rounding (nearest level) is closer to unbiased than rounding log2|x|
// to the nearest level index. Each tile's range is pinned to [2^-4, 2^4] by two
// elements; the others are drawn uniformly between two neighbouring levels, where an
// unbiased quantiser has zero mean error. The test rounds in log space itself, on
// the same levels, and compares mean signed errors in units of the level gap.
TEST(LogFmt, LinearRoundingHasSmallerBiasThanLogRounding) {
  std::mt19937 rng(5);
  // Log rounding's bias shrinks with the step (about step * ln2 / 8 gaps); past 8
  // bits it drowns in the sampling noise of this many draws (~6e-4 gaps).
  for (int bits : {4, 6, 8}) {
    const Format f = epcomm::logfmt_format(bits);
    const int levels = (1 << (bits - 1)) - 1;
    const double lo = -4.0, step = 8.0 / (levels - 1);
    std::uniform_int_distribution<int> pick_level(0, levels - 2);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    double bias_linear = 0, bias_log = 0;
    int64_t count = 0;
    std::vector<float> x(128);
    std::vector<int> lower(128);
    for (int rep = 0; rep < 2000; ++rep) {
      x[0] = 0.0625f;
      x[1] = -16.0f;
      for (int i = 2; i < 128; ++i) {
        lower[i] = pick_level(rng);
        const double a = std::exp2(lo + lower[i] * step), b = std::exp2(lo + (lower[i] + 1) * step);
        x[i] = static_cast<float>(a + (b - a) * unit(rng));
      }
      const std::vector<float> y = decode(f, encode(f, x), 128);
      for (int i = 2; i < 128; ++i) {
        const double a = x[i], v0 = std::exp2(lo + lower[i] * step), v1 = std::exp2(lo + (lower[i] + 1) * step);
        const double in_log = std::log2(a) - lo < (lower[i] + 0.5) * step ? v0 : v1;
        bias_log += (in_log - a) / (v1 - v0);
        bias_linear += (double{y[i]} - a) / (v1 - v0);
        ++count;
      }
    }
    bias_linear /= static_cast<double>(count);
    bias_log /= static_cast<double>(count);
    EXPECT_GT(bias_log, 0.0) << "bits " << bits;  // log-space rounding rounds up too often
    EXPECT_LT(std::fabs(bias_linear), 0.25 * bias_log) << "bits " << bits << " linear " << bias_linear;
  }
}

// ---- every format ----

std::vector<Format> all_quantised() {
  std::vector<Format> fs = {Format::kFP8, Format::kFP8UE8M0};
  for (int b = 3; b <= 16; ++b) fs.push_back(epcomm::logfmt_format(b));
  return fs;
}

TEST(Formats, Bf16InputEncodesLikeItsFp32Value) {
  std::mt19937 rng(6);
  for (Format f : all_quantised()) {
    std::vector<float> x = lognormal_row(rng, 333, 2.0f);
    std::vector<uint16_t> xb(x.size());
    codec_for(Format::kBF16).encode_row(x.data(), DType::kF32, 333, xb.data());
    codec_for(Format::kBF16).decode_row(xb.data(), 333, x.data(), DType::kF32);  // x exactly representable now
    const auto& c = codec_for(f);
    std::vector<std::byte> from_f32(c.row_bytes(333)), from_bf16(c.row_bytes(333));
    ASSERT_EQ(c.encode_row(x.data(), DType::kF32, 333, from_f32.data()), -1);
    ASSERT_EQ(c.encode_row(xb.data(), DType::kBF16, 333, from_bf16.data()), -1);
    ASSERT_EQ(from_f32, from_bf16) << epcomm::to_string(f);
    // Decoding to BF16 is decoding to FP32, then rounding.
    std::vector<float> y(333);
    std::vector<uint16_t> yb(333), yb_want(333);
    c.decode_row(from_f32.data(), 333, y.data(), DType::kF32);
    c.decode_row(from_f32.data(), 333, yb.data(), DType::kBF16);
    codec_for(Format::kBF16).encode_row(y.data(), DType::kF32, 333, yb_want.data());
    ASSERT_EQ(yb, yb_want);
    // accumulate: acc + w * decoded, multiply then add.
    std::vector<float> acc(333, 0.25f);
    c.accumulate_row(from_f32.data(), 333, 0.75f, acc.data());
    for (int i = 0; i < 333; ++i) {
      volatile float prod = 0.75f * y[i];
      ASSERT_EQ(acc[i], 0.25f + prod) << i;
    }
  }
}

// Any byte string decodes without touching memory outside the row and the output
// (ASan runs this), and LogFMT never yields NaN.
TEST(Formats, ArbitraryBytesDecodeSafely) {
  std::mt19937 rng(7);
  for (Format f : all_quantised()) {
    for (int hidden : {1, 7, 128, 129, 1000}) {
      const auto& c = codec_for(f);
      std::vector<std::byte> row(c.row_bytes(hidden));
      for (int rep = 0; rep < 20; ++rep) {
        for (std::byte& b : row) b = static_cast<std::byte>(rng());
        std::vector<float> y(hidden), acc(hidden, 0.0f);
        std::vector<uint16_t> yb(hidden);
        c.decode_row(row.data(), hidden, y.data(), DType::kF32);
        c.decode_row(row.data(), hidden, yb.data(), DType::kBF16);
        c.accumulate_row(row.data(), hidden, 1.0f, acc.data());
        if (epcomm::logfmt_bits(f) != 0) {
          for (float v : y) ASSERT_FALSE(std::isnan(v)) << epcomm::to_string(f);
        }
      }
    }
  }
}

TEST(Formats, NamesAndRowSizes) {
  for (Format f : all_quantised()) {
    EXPECT_EQ(epcomm::parse_format(epcomm::to_string(f)), f);
    EXPECT_TRUE(epcomm::is_known_format(f));
  }
  EXPECT_EQ(epcomm::parse_format("logfmt10"), Format::kLogFMT10);
  EXPECT_EQ(epcomm::logfmt_bits(Format::kLogFMT8), 8);
  EXPECT_EQ(epcomm::logfmt_bits(Format::kFP8), 0);
  EXPECT_FALSE(epcomm::is_known_format(static_cast<Format>(102)));
  for (const char* bad : {"logfmt2", "logfmt17", "logfmt", "fp4", "logfmt8x"}) {
    try {
      epcomm::parse_format(bad);
      ADD_FAILURE() << bad << " accepted";
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  // hidden 7168 = 56 tiles.
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kBF16, 7168), 14336u);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kFP8, 7168), 7168u + 56 * 4);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kFP8UE8M0, 7168), 7168u + 56);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kLogFMT8, 7168), 56u * 4 + 7168);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kLogFMT10, 7168), 56u * 4 + 8960);
  // Odd sizes: FP32 scales stay 4-byte aligned; LogFMT codes round up to bytes.
  EXPECT_EQ(epcomm::row_layout(Format::kFP8, 130).meta_offset, 132u);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kFP8, 130), 132u + 8);
  EXPECT_EQ(epcomm::encoded_row_bytes(Format::kLogFMT3, 130), 8u + 49);
}

}  // namespace
