// SPDX-License-Identifier: MIT
// The codec seam with the plain formats: BF16 rounding against an independent
// nearest-value search, and the table's encode/decode/accumulate contracts.
#include <epcomm/error.hpp>
#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/bf16.hpp"
#include "epcomm_kernels/codec.hpp"

namespace {

using epcomm::DType;
using epcomm::Format;

using epcomm::kernels::elem::from_bits;

// Reference: of the two BF16 neighbours of f, the one nearer in exact (double)
// arithmetic; on a tie the one with an even last mantissa bit.
uint16_t reference_bf16(float f) {
  const uint32_t u = epcomm::kernels::elem::to_bits(f);
  const uint16_t down = static_cast<uint16_t>(u >> 16);
  const uint16_t up = static_cast<uint16_t>(down + 1);
  const double lo = from_bits(static_cast<uint32_t>(down) << 16);
  const double hi_bits_value = from_bits(static_cast<uint32_t>(up) << 16);  // may be inf
  const double d_lo = std::fabs(static_cast<double>(f) - lo);
  // Past the largest finite BF16 the upper neighbour is infinity; its distance is
  // measured to where the next binade would start, as IEEE rounding does.
  const double hi = std::isinf(hi_bits_value) ? std::copysign(std::ldexp(1.0, 128), f) : hi_bits_value;
  const double d_hi = std::fabs(hi - static_cast<double>(f));
  if (d_lo < d_hi) return down;
  if (d_hi < d_lo) return up;
  return (down & 1) ? up : down;
}

TEST(Bf16, RoundsToNearestEvenLikeTheReference) {
  std::mt19937 rng(1);
  for (int i = 0; i < 2000000; ++i) {
    uint32_t u = rng();
    if ((u & 0x7f800000u) == 0x7f800000u) continue;  // NaN/Inf checked separately
    ASSERT_EQ(epcomm::kernels::elem::f32_to_bf16(from_bits(u)), reference_bf16(from_bits(u))) << std::hex << u;
  }
  // Exact ties both ways, subnormals, the largest finite values.
  for (uint32_t u : {0x3f808000u, 0x3f818000u, 0x00008000u, 0x00018000u, 0x7f7f7fffu, 0x7f7f8000u, 0x80000001u}) {
    EXPECT_EQ(epcomm::kernels::elem::f32_to_bf16(from_bits(u)), reference_bf16(from_bits(u))) << std::hex << u;
  }
}

TEST(Bf16, KeepsNanAndInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(epcomm::kernels::elem::bf16_to_f32(epcomm::kernels::elem::f32_to_bf16(nan))));
  // A NaN whose payload sits only in the low bits must not round to infinity.
  EXPECT_TRUE(std::isnan(epcomm::kernels::elem::bf16_to_f32(epcomm::kernels::elem::f32_to_bf16(from_bits(0x7f800001u)))));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(epcomm::kernels::elem::bf16_to_f32(epcomm::kernels::elem::f32_to_bf16(-inf)), -inf);
}

TEST(CodecTable, EncodeDecodeAccumulate) {
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  for (int hidden : {1, 7, 128, 1000}) {
    std::vector<float> x(hidden), back(hidden), acc(hidden, 1.0f);
    for (float& v : x) v = dist(rng);
    for (Format f : {Format::kF32, Format::kBF16}) {
      const auto& codec = epcomm::kernels::codec_for(f);
      ASSERT_EQ(codec.format, f);
      ASSERT_EQ(codec.row_bytes(hidden), epcomm::encoded_row_bytes(f, hidden));
      ASSERT_EQ(codec.row_bytes(hidden), static_cast<std::size_t>(hidden) * (f == Format::kF32 ? 4 : 2));
      std::vector<std::byte> enc(codec.row_bytes(hidden));
      codec.encode_row(x.data(), DType::kF32, hidden, enc.data());
      codec.decode_row(enc.data(), hidden, back.data(), DType::kF32);
      std::vector<float> acc2 = acc;
      codec.accumulate_row(enc.data(), hidden, 0.5f, acc2.data());
      for (int h = 0; h < hidden; ++h) {
        const float want = f == Format::kF32 ? x[h] : from_bits(static_cast<uint32_t>(reference_bf16(x[h])) << 16);
        ASSERT_EQ(back[h], want) << "format " << epcomm::to_string(f) << " h " << h;
        ASSERT_EQ(acc2[h], 1.0f + 0.5f * want);
      }
      // Decoding to BF16 and encoding from BF16 go through the same rounding.
      std::vector<uint16_t> as_bf16(hidden);
      codec.decode_row(enc.data(), hidden, as_bf16.data(), DType::kBF16);
      for (int h = 0; h < hidden; ++h) ASSERT_EQ(as_bf16[h], reference_bf16(back[h]));
    }
  }
}

// accumulate_row against decode_row to FP32 followed by the weighted sum done here
// in double and rounded to float after each operation (for + and * on floats that
// is exactly FP32 arithmetic, whatever this file is compiled with), for every
// format, through both the reference and the active kernels; NaN results must be
// NaN, every other result the same bits.
TEST(CodecTable, AccumulateIsDecodeThenWeightedAdd) {
  std::vector<Format> formats{Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0};
  for (int bits = 3; bits <= 16; ++bits) formats.push_back(epcomm::logfmt_format(bits));
  std::mt19937 rng(81);
  std::normal_distribution<float> dist;
  for (Format f : formats) {
    for (const epcomm::kernels::Codec* codec : {&epcomm::kernels::reference_codec_for(f), &epcomm::kernels::codec_for(f)}) {
      for (int hidden : {1, 129, 7168, 65 * 128 + 1}) {  // the last: more tiles than one kernel call takes
        std::vector<float> x(static_cast<std::size_t>(hidden));
        for (float& v : x) v = dist(rng) * ((rng() & 1u) ? 1.0f : 0x1p-20f);
        std::vector<uint8_t> encoded(codec->row_bytes(hidden)), arbitrary(encoded.size());
        x[static_cast<std::size_t>(hidden) / 2] = 0.0f;  // a zero code
        codec->encode_row(x.data(), DType::kF32, hidden, encoded.data());
        for (uint8_t& b : arbitrary) b = static_cast<uint8_t>(rng());  // NaN and infinite values too
        for (const std::vector<uint8_t>* row : {&encoded, &arbitrary}) {
          std::vector<float> decoded(static_cast<std::size_t>(hidden));
          codec->decode_row(row->data(), hidden, decoded.data(), DType::kF32);
          for (float w : {0.37f, -2.5f, 0.0f, INFINITY}) {
            std::vector<float> acc(static_cast<std::size_t>(hidden));
            for (float& a : acc) a = dist(rng);
            acc[0] = rng() % 2 ? -INFINITY : NAN;
            std::vector<float> got = acc;
            codec->accumulate_row(row->data(), hidden, w, got.data());
            for (int h = 0; h < hidden; ++h) {
              const float product = static_cast<float>(static_cast<double>(w) * static_cast<double>(decoded[h]));
              const float want = static_cast<float>(static_cast<double>(acc[h]) + static_cast<double>(product));
              if (std::isnan(want)) {
                ASSERT_TRUE(std::isnan(got[h])) << epcomm::to_string(f) << " hidden " << hidden << " h " << h;
              } else {
                ASSERT_EQ(epcomm::kernels::elem::to_bits(want), epcomm::kernels::elem::to_bits(got[h]))
                    << epcomm::to_string(f) << " hidden " << hidden << " h " << h << " w " << w;
              }
            }
          }
        }
      }
    }
  }
}

TEST(Types, ParseAndNames) {
  EXPECT_EQ(epcomm::parse_dtype("bf16"), DType::kBF16);
  EXPECT_EQ(epcomm::parse_dtype("f32"), DType::kF32);
  EXPECT_EQ(epcomm::parse_format("bf16"), Format::kBF16);
  try {
    epcomm::parse_dtype("fp64");
    FAIL() << "fp64 accepted";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("fp64"), std::string::npos);
  }
}

}  // namespace
