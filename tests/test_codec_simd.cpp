// SPDX-License-Identifier: MIT
// The Highway tile kernels against the scalar reference, bit for bit, on every SIMD
// target compiled into kernels/cpu/simd_kernels.cpp that this CPU runs (each test
// runs once per target, selected with hwy::SetSupportedTargetsForTest): each tile
// function on fixed-seed data of several shapes, every tile length 1..128 and every
// LogFMT width, the fused accumulate kernels over runs of several tiles, then whole
// rows through the codec table against rows the reference kernels encode.
#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/fp8_e4m3.hpp"
#include "cpu/simd_kernels.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/stream_copy.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace {

using epcomm::DType;
using epcomm::Format;
using epcomm::kTileElems;
using epcomm::kernels::TileKernels;
namespace elem = epcomm::kernels::elem;
using elem::from_bits;

// Equal bytes, or where the first difference is.
testing::AssertionResult same_bytes(const void* want, const void* got, std::size_t bytes) {
  const auto* a = static_cast<const uint8_t*>(want);
  const auto* b = static_cast<const uint8_t*>(got);
  for (std::size_t i = 0; i < bytes; ++i) {
    if (a[i] != b[i]) {
      char msg[128];
      std::snprintf(msg, sizeof msg, "first difference at byte %zu of %zu: reference 0x%02x, simd 0x%02x", i, bytes,
                    a[i], b[i]);
      return testing::AssertionFailure() << msg;
    }
  }
  return testing::AssertionSuccess();
}

template <class T>
testing::AssertionResult same_bits(const std::vector<T>& want, const std::vector<T>& got) {
  if (want.size() != got.size()) return testing::AssertionFailure() << "sizes differ";
  return same_bytes(want.data(), got.data(), want.size() * sizeof(T));
}

// ------------------------------------------------------------------ test data
// Every data set is 16 tiles long; a test of length n reads a window at an offset
// that changes with n, so windows start at every alignment.
constexpr int kDataLen = 16 * kTileElems;

// Values every special case of the element math hinges on: zeros, infinities, NaNs
// (quiet, signalling, with payloads, both signs), FP32 subnormal and normal limits,
// the E4M3 range limits and the LogFMT zero threshold.
std::vector<float> specials() {
  std::vector<float> v;
  for (uint32_t u : {0x00000000u, 0x7f800000u, 0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0x7fffffffu, 0x7fc12345u,
                     0x00000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu, 0x00400000u, 0x3c800000u, 0x3c7fffffu}) {
    v.push_back(from_bits(u));
    v.push_back(from_bits(u | 0x80000000u));
  }
  for (float f : {448.0f, 464.0f, 479.99997f, 480.0f, 0x1p-9f, 0x1.8p-10f, 0x1p-10f, 0x1p-126f, 0.5f, 1.0f}) {
    v.push_back(f);
    v.push_back(-f);
    v.push_back(std::nextafter(f, 0.0f));
    v.push_back(std::nextafter(f, INFINITY));
  }
  return v;
}

std::vector<float> gaussian(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  std::vector<float> v(kDataLen);
  for (float& x : v) x = n01(rng);
  return v;
}

// |x| = e^N(0, 12): about 2^-50 .. 2^50, signs random.
std::vector<float> log_normal(uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.0f, 12.0f);
  std::vector<float> v(kDataLen);
  for (float& x : v) x = std::exp(n(rng)) * ((rng() & 1u) ? -1.0f : 1.0f);
  return v;
}

// Gaussian with 1% of the elements scaled by 1000.
std::vector<float> outliers(uint32_t seed) {
  std::vector<float> v = gaussian(seed);
  std::mt19937 rng(seed + 1);
  for (float& x : v) {
    if (rng() % 100 == 0) x *= 1000.0f;
  }
  return v;
}

// Uniformly random bit patterns (NaN and infinity 1 in 256, subnormals 1 in 256),
// with a special value in one of 8 elements.
std::vector<float> random_bits(uint32_t seed) {
  std::mt19937 rng(seed);
  const std::vector<float> sp = specials();
  std::vector<float> v(kDataLen);
  for (float& x : v) x = rng() % 8 == 0 ? sp[rng() % sp.size()] : from_bits(static_cast<uint32_t>(rng()));
  return v;
}

// Every E4M3 value, the midpoints between neighbours (exact ties) and one FP32 ulp
// either side of each, both signs, shuffled: with a power-of-two scale these hit
// every rounding boundary of the encoder.
std::vector<float> e4m3_boundaries(uint32_t seed) {
  std::vector<float> v;
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = elem::e4m3_to_f32(static_cast<uint8_t>(c)), hi = elem::e4m3_to_f32(static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;
    for (float f : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      v.push_back(f);
      v.push_back(-f);
    }
  }
  std::mt19937 rng(seed);
  while (v.size() < static_cast<std::size_t>(kDataLen)) v.push_back(v[rng() % v.size()]);
  std::shuffle(v.begin(), v.end(), rng);
  v.resize(kDataLen);
  return v;
}

struct DataSet {
  const char* name;
  std::vector<float> values;
};

const std::vector<DataSet>& data_sets() {
  static const std::vector<DataSet> sets{{"gaussian", gaussian(11)},       {"log_normal", log_normal(12)},
                                         {"outliers", outliers(13)},       {"random_bits", random_bits(14)},
                                         {"e4m3_boundaries", e4m3_boundaries(15)}};
  return sets;
}

std::vector<uint8_t> random_bytes(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

int window(int n) { return (n * 37) % (kDataLen - kTileElems); }

// Output buffers get a tile's worth of slack filled with a sentinel, so a kernel
// writing past its n elements shows up as a difference too.
constexpr uint8_t kSentinel = 0xa5;
template <class T>
std::vector<T> sentinel_buffer(std::size_t n) {
  std::vector<T> v(n + kTileElems);
  std::memset(v.data(), kSentinel, v.size() * sizeof(T));
  return v;
}

// ------------------------------------------------------------------ per target

std::vector<int64_t> simd_targets() { return hwy::SupportedAndGeneratedTargets(); }

class SimdTarget : public testing::TestWithParam<int64_t> {
 protected:
  void SetUp() override { hwy::SetSupportedTargetsForTest(GetParam()); }
  void TearDown() override { hwy::SetSupportedTargetsForTest(0); }
  const TileKernels& ref = epcomm::kernels::reference_kernels();
  const TileKernels& simd = epcomm::kernels::simd_kernels();
};

TEST(SimdTargets, CoverTheVectorTargetsOfThisCpu) {
  const std::vector<int64_t> tested = simd_targets();
  std::string names;
  for (int64_t t : tested) names += std::string(hwy::TargetName(t)) + " ";
  std::printf("SIMD targets tested: %s\n", names.c_str());
  const int64_t cpu = hwy::SupportedTargets();
  for (int64_t want : {int64_t{HWY_AVX3}, int64_t{HWY_AVX2}, int64_t{HWY_SSE4}, int64_t{HWY_SCALAR | HWY_EMU128}}) {
    if ((cpu & want) == 0) continue;
    bool found = false;
    for (int64_t t : tested) found = found || (t & want) != 0;
    EXPECT_TRUE(found) << hwy::TargetName(want & -want) << " runs here but is not tested; tested: " << names;
  }
}

TEST_P(SimdTarget, AmaxFinite) {
  for (const DataSet& ds : data_sets()) {
    for (int n = 1; n <= kTileElems; ++n) {
      const float* x = ds.values.data() + window(n);
      const float want = ref.amax_finite(x, n), got = simd.amax_finite(x, n);
      ASSERT_TRUE(same_bytes(&want, &got, sizeof want)) << ds.name << " n=" << n;
    }
  }
}

// Powers of two (exact, as the UE8M0 format uses), the tile's own FP8 scale, and
// arbitrary ones.
std::vector<float> fp8_scales(const TileKernels& k, const float* x, int n) {
  return {1.0f, 0x1p-10f, 0x1p20f, 0x1p-140f, 3.0f, 0.3071f, elem::fp8_scale(k.amax_finite(x, n)),
          elem::ue8m0_value(elem::fp8_scale_ue8m0(k.amax_finite(x, n)))};
}

TEST_P(SimdTarget, Fp8Encode) {
  for (const DataSet& ds : data_sets()) {
    for (int n = 1; n <= kTileElems; ++n) {
      const float* x = ds.values.data() + window(n);
      for (float scale : fp8_scales(ref, x, n)) {
        auto want = sentinel_buffer<uint8_t>(n), got = sentinel_buffer<uint8_t>(n);
        ref.fp8_encode(x, n, scale, want.data());
        simd.fp8_encode(x, n, scale, got.data());
        ASSERT_TRUE(same_bits(want, got)) << ds.name << " n=" << n << " scale=" << scale;
      }
    }
  }
}

TEST_P(SimdTarget, Fp8Decode) {
  // Every code once, in two tiles, with the scales below.
  std::vector<uint8_t> all(256);
  for (int c = 0; c < 256; ++c) all[static_cast<std::size_t>(c)] = static_cast<uint8_t>(c);
  for (float scale : {1.0f, 0x1p-10f, 3.0f}) {
    for (int half = 0; half < 2; ++half) {
      auto want = sentinel_buffer<float>(kTileElems), got = sentinel_buffer<float>(kTileElems);
      ref.fp8_decode(all.data() + half * kTileElems, kTileElems, scale, want.data());
      simd.fp8_decode(all.data() + half * kTileElems, kTileElems, scale, got.data());
      ASSERT_TRUE(same_bits(want, got)) << "codes from " << half * kTileElems << " scale=" << scale;
    }
  }
  const std::vector<uint8_t> codes = random_bytes(kDataLen, 21);
  const std::vector<float>& g = data_sets()[0].values;
  for (int n = 1; n <= kTileElems; ++n) {
    const uint8_t* c = codes.data() + window(n);
    for (float scale : fp8_scales(ref, g.data(), n)) {
      auto want = sentinel_buffer<float>(n), got = sentinel_buffer<float>(n);
      ref.fp8_decode(c, n, scale, want.data());
      simd.fp8_decode(c, n, scale, got.data());
      ASSERT_TRUE(same_bits(want, got)) << "n=" << n << " scale=" << scale;
    }
  }
}

// Encodes with both, compares everything either writes, then decodes the reference's
// codes with both.
TEST_P(SimdTarget, LogFmtEncodeDecode) {
  for (const DataSet& ds : data_sets()) {
    for (int bits = 3; bits <= 16; ++bits) {
      for (int n = 1; n <= kTileElems; ++n) {
        const float* x = ds.values.data() + window(n);
        const std::size_t code_bytes = (static_cast<std::size_t>(n) * bits + 7) / 8;
        auto want = sentinel_buffer<uint8_t>(code_bytes), got = sentinel_buffer<uint8_t>(code_bytes);
        int16_t want_mm[2] = {0x5555, 0x5555}, got_mm[2] = {0x5555, 0x5555};
        const int want_bad = ref.logfmt_encode(x, n, bits, want.data(), &want_mm[0], &want_mm[1]);
        const int got_bad = simd.logfmt_encode(x, n, bits, got.data(), &got_mm[0], &got_mm[1]);
        ASSERT_EQ(want_bad, got_bad) << ds.name << " bits=" << bits << " n=" << n;
        ASSERT_EQ(want_mm[0], got_mm[0]) << ds.name << " bits=" << bits << " n=" << n;
        ASSERT_EQ(want_mm[1], got_mm[1]) << ds.name << " bits=" << bits << " n=" << n;
        ASSERT_TRUE(same_bits(want, got)) << ds.name << " bits=" << bits << " n=" << n;
        if (want_bad >= 0) continue;
        auto want_out = sentinel_buffer<float>(n), got_out = sentinel_buffer<float>(n);
        ref.logfmt_decode(want.data(), n, bits, want_mm[0], want_mm[1], want_out.data());
        simd.logfmt_decode(want.data(), n, bits, want_mm[0], want_mm[1], got_out.data());
        ASSERT_TRUE(same_bits(want_out, got_out)) << ds.name << " decode bits=" << bits << " n=" << n;
      }
    }
  }
}

// Arbitrary stored bytes: random codes under random and extreme (min, max) pairs,
// including reversed and equal ones.
TEST_P(SimdTarget, LogFmtDecodeArbitraryBytes) {
  const std::vector<uint8_t> codes = random_bytes(kDataLen * 2, 31);
  std::mt19937 rng(32);
  for (int bits = 3; bits <= 16; ++bits) {
    for (int n = 1; n <= kTileElems; ++n) {
      const int16_t r0 = static_cast<int16_t>(rng()), r1 = static_cast<int16_t>(rng());
      const int16_t pairs[][2] = {{r0, r1}, {-32768, 32767}, {32767, -32768}, {r0, r0}, {-1280, 640}, {0, 0}};
      for (const auto& mm : pairs) {
        auto want = sentinel_buffer<float>(n), got = sentinel_buffer<float>(n);
        const uint8_t* c = codes.data() + window(n);
        ref.logfmt_decode(c, n, bits, mm[0], mm[1], want.data());
        simd.logfmt_decode(c, n, bits, mm[0], mm[1], got.data());
        ASSERT_TRUE(same_bits(want, got)) << "bits=" << bits << " n=" << n << " min_q=" << mm[0] << " max_q=" << mm[1];
      }
    }
  }
}

TEST_P(SimdTarget, Axpy) {
  const std::vector<float>& acc0 = data_sets()[1].values;
  for (const DataSet& ds : data_sets()) {
    for (int n = 1; n <= kTileElems; ++n) {
      const float* x = ds.values.data() + window(n);
      for (float w : {1.0f, 0.37f, -2.5f, 0.0f, 0x1p-100f, 1e30f}) {
        std::vector<float> want(acc0.begin() + n, acc0.begin() + n + n + kTileElems), got = want;
        ref.axpy(x, n, w, want.data());
        simd.axpy(x, n, w, got.data());
        ASSERT_TRUE(same_bits(want, got)) << ds.name << " n=" << n << " w=" << w;
      }
    }
  }
}

TEST_P(SimdTarget, Bf16Conversions) {
  for (const DataSet& ds : data_sets()) {
    for (int n = 1; n <= kTileElems; ++n) {
      const float* x = ds.values.data() + window(n);
      auto want = sentinel_buffer<uint16_t>(n), got = sentinel_buffer<uint16_t>(n);
      ref.f32_to_bf16(x, n, want.data());
      simd.f32_to_bf16(x, n, got.data());
      ASSERT_TRUE(same_bits(want, got)) << ds.name << " n=" << n;
    }
  }
  const std::vector<uint8_t> bytes = random_bytes(kDataLen * 2, 41);
  for (int n = 1; n <= kTileElems; ++n) {
    std::vector<uint16_t> b(n);
    std::memcpy(b.data(), bytes.data() + 2 * window(n), 2 * b.size());
    auto want = sentinel_buffer<float>(n), got = sentinel_buffer<float>(n);
    ref.bf16_to_f32(b.data(), n, want.data());
    simd.bf16_to_f32(b.data(), n, got.data());
    ASSERT_TRUE(same_bits(want, got)) << "n=" << n;
  }
}

// The fused decode+weight+accumulate kernels over runs of one to several tiles:
// every tile length, partial last tiles, per-tile scales and (min, max) pairs that
// differ, weights and accumulators with infinities and NaNs.
std::vector<int> fused_lengths() {
  std::vector<int> n;
  for (int i = 1; i <= kTileElems + 1; ++i) n.push_back(i);
  for (int i : {255, 256, 257, 383, 640, 1000, 1024, 1025}) n.push_back(i);
  return n;
}

const std::vector<float>& fused_weights() {
  static const std::vector<float> w{1.0f, 0.37f, -2.5f, 0.0f, -0.0f, 0x1p-100f, 1e30f, INFINITY, NAN};
  return w;
}

// The same bits, except that where both sides hold a NaN its payload may differ:
// where two NaN operands meet (a NaN weight or accumulator and a NaN partial, a NaN
// scale and a NaN code in arbitrary bytes), x86 returns one of them, and which one
// follows the operand order the compiler picks for a commutative multiply or add, in
// either kernel. Elements are T; is_nan says which are NaN.
template <class T, class IsNan>
testing::AssertionResult same_bits_up_to_nan_payload(std::vector<T> want, std::vector<T> got, IsNan is_nan) {
  if (want.size() != got.size()) return testing::AssertionFailure() << "sizes differ";
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (is_nan(want[i]) && is_nan(got[i])) want[i] = got[i] = T{};
  }
  return same_bits(want, got);
}

testing::AssertionResult same_accumulator(const std::vector<float>& want, const std::vector<float>& got) {
  return same_bits_up_to_nan_payload(want, got, [](float x) { return std::isnan(x); });
}

// Decoded rows of `type` in byte buffers, compared as above.
testing::AssertionResult same_decoded(DType type, const std::vector<uint8_t>& want, const std::vector<uint8_t>& got) {
  auto as = [](const std::vector<uint8_t>& bytes, auto element) {
    std::vector<decltype(element)> v(bytes.size() / sizeof element);
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof element);
    return v;
  };
  if (type == DType::kF32) {
    return same_bits_up_to_nan_payload(as(want, 0.0f), as(got, 0.0f), [](float x) { return std::isnan(x); });
  }
  return same_bits_up_to_nan_payload(as(want, uint16_t{}), as(got, uint16_t{}),
                                     [](uint16_t b) { return (b & 0x7fffu) > 0x7f80u; });
}

// A starting accumulator of n values (and kTileElems of slack, which must survive):
// random bit patterns, so NaNs, infinities and subnormals are in it.
std::vector<float> fused_acc(int n) {
  const std::vector<float>& bits = data_sets()[3].values;
  std::vector<float> acc(static_cast<std::size_t>(n) + kTileElems);
  for (std::size_t i = 0; i < acc.size(); ++i) acc[i] = bits[(i * 7 + static_cast<std::size_t>(n)) % bits.size()];
  return acc;
}

TEST_P(SimdTarget, Bf16Axpy) {
  const std::vector<uint8_t> bytes = random_bytes(kDataLen * 2, 71);  // 2048 BF16 values
  for (int n : fused_lengths()) {
    std::vector<uint16_t> x(static_cast<std::size_t>(n));
    std::memcpy(x.data(), bytes.data() + 2 * (n % 64), 2 * x.size());  // every alignment
    for (float w : fused_weights()) {
      std::vector<float> want = fused_acc(n), got = want;
      ref.bf16_axpy(x.data(), n, w, want.data());
      simd.bf16_axpy(x.data(), n, w, got.data());
      ASSERT_TRUE(same_accumulator(want, got)) << "n=" << n << " w=" << w;
    }
  }
}

TEST_P(SimdTarget, Fp8Axpy) {
  const std::vector<uint8_t> codes = random_bytes(kDataLen, 72);
  std::mt19937 rng(73);
  for (int n : fused_lengths()) {
    // Tile t's scale cycles through the scale list, from an offset that changes with n.
    const std::vector<float> choices = fp8_scales(ref, data_sets()[0].values.data(), n % kTileElems + 1);
    std::vector<float> scales((static_cast<std::size_t>(n) + kTileElems - 1) / kTileElems);
    for (float& sc : scales) sc = choices[rng() % choices.size()];
    for (float w : fused_weights()) {
      std::vector<float> want = fused_acc(n), got = want;
      ref.fp8_axpy(codes.data(), n, scales.data(), w, want.data());
      simd.fp8_axpy(codes.data(), n, scales.data(), w, got.data());
      ASSERT_TRUE(same_accumulator(want, got)) << "n=" << n << " w=" << w;
    }
  }
}

TEST_P(SimdTarget, LogFmtAxpy) {
  const std::vector<uint8_t> codes = random_bytes(kDataLen * 2, 74);
  std::mt19937 rng(75);
  for (int bits = 3; bits <= 16; ++bits) {
    for (int n : fused_lengths()) {
      // Per tile a random, an extreme or a degenerate (equal or reversed) pair.
      std::vector<int16_t> min_max(2 * ((static_cast<std::size_t>(n) + kTileElems - 1) / kTileElems));
      for (std::size_t t = 0; t < min_max.size(); t += 2) {
        const int16_t r0 = static_cast<int16_t>(rng()), r1 = static_cast<int16_t>(rng());
        const int16_t pairs[][2] = {{r0, r1}, {-32768, 32767}, {32767, -32768}, {r0, r0}, {-1280, 640}, {0, 0}};
        const auto& pick = pairs[rng() % 6];
        min_max[t] = pick[0];
        min_max[t + 1] = pick[1];
      }
      for (float w : {0.37f, -0.0f, NAN}) {
        std::vector<float> want = fused_acc(n), got = want;
        ref.logfmt_axpy(codes.data(), n, bits, min_max.data(), w, want.data());
        simd.logfmt_axpy(codes.data(), n, bits, min_max.data(), w, got.data());
        ASSERT_TRUE(same_accumulator(want, got)) << "bits=" << bits << " n=" << n << " w=" << w;
      }
    }
  }
}

// ------------------------------------------------------------------ whole rows

std::vector<Format> all_formats() {
  std::vector<Format> f{Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0};
  for (int bits = 3; bits <= 16; ++bits) f.push_back(epcomm::logfmt_format(bits));
  return f;
}

// A row of `hidden` values in `type`: Gaussian, 0.5% of it x1000, a random half of
// it x2^-20 (tiles spanning many binades), a run of zeros, and with `nan_at` >= 0 a
// NaN there.
std::vector<uint8_t> make_row(int hidden, DType type, uint32_t seed, int nan_at) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  std::vector<float> v(static_cast<std::size_t>(hidden));
  for (float& x : v) x = n01(rng) * (rng() % 200 == 0 ? 1000.0f : 1.0f) * ((rng() & 1u) ? 1.0f : 0x1p-20f);
  for (int i = hidden / 3; i < hidden / 3 + 10 && i < hidden; ++i) v[i] = 0.0f;
  if (nan_at >= 0) v[nan_at] = NAN;
  std::vector<uint8_t> row(v.size() * (type == DType::kF32 ? 4 : 2));
  if (type == DType::kF32) {
    std::memcpy(row.data(), v.data(), row.size());
  } else {
    epcomm::kernels::reference_kernels().f32_to_bf16(v.data(), hidden, reinterpret_cast<uint16_t*>(row.data()));
  }
  return row;
}

TEST_P(SimdTarget, CodecRowsMatchTheReferenceRows) {
  // The process default (what the exchange runs) is the SIMD set, not the reference.
  if (std::getenv("EPCOMM_KERNELS") != nullptr) GTEST_SKIP() << "EPCOMM_KERNELS is set: codec_for may not run the SIMD kernels";
  ASSERT_STRNE(epcomm::kernels::active_kernels().name, "scalar");
  for (Format f : all_formats()) {
    const epcomm::kernels::Codec& simd_codec = epcomm::kernels::codec_for(f);
    const epcomm::kernels::Codec& ref_codec = epcomm::kernels::reference_codec_for(f);
    for (int hidden : {1, 127, 128, 129, 7168, 65 * 128 + 1}) {
      const std::size_t bytes = ref_codec.row_bytes(hidden);
      const std::string what = std::string(epcomm::to_string(f)) + " hidden=" + std::to_string(hidden);
      for (DType type : {DType::kF32, DType::kBF16}) {
        for (int nan_at : {-1, hidden - 1}) {
          const std::vector<uint8_t> src = make_row(hidden, type, 51 + static_cast<uint32_t>(hidden), nan_at);
          std::vector<uint8_t> want(bytes + 64, kSentinel), got = want;
          ASSERT_EQ(ref_codec.encode_row(src.data(), type, hidden, want.data()),
                    simd_codec.encode_row(src.data(), type, hidden, got.data()))
              << what;
          ASSERT_TRUE(same_bits(want, got)) << what << " encode";
        }
      }
      // Decode and accumulate a reference-encoded row and an arbitrary byte string.
      std::vector<uint8_t> encoded(bytes);
      ref_codec.encode_row(make_row(hidden, DType::kF32, 61, -1).data(), DType::kF32, hidden, encoded.data());
      for (const std::vector<uint8_t>& row : {encoded, random_bytes(bytes, 62)}) {
        for (DType type : {DType::kF32, DType::kBF16}) {
          std::vector<uint8_t> want(static_cast<std::size_t>(hidden) * 4 + 64, kSentinel), got = want;
          ref_codec.decode_row(row.data(), hidden, want.data(), type);
          simd_codec.decode_row(row.data(), hidden, got.data(), type);
          ASSERT_TRUE(same_decoded(type, want, got)) << what << " decode to " << (type == DType::kF32 ? "f32" : "bf16");
        }
        for (float w : {0.37f, -2.5f, INFINITY}) {
          std::vector<float> want = fused_acc(hidden), got = want;
          ref_codec.accumulate_row(row.data(), hidden, w, want.data());
          simd_codec.accumulate_row(row.data(), hidden, w, got.data());
          ASSERT_TRUE(same_accumulator(want, got)) << what << " accumulate w=" << w;
        }
      }
    }
  }
}

// stream_copy against the source bytes themselves: every byte of the range copied
// whatever the alignment of either end, none written outside it.
TEST_P(SimdTarget, StreamCopyWritesExactlyTheRange) {
  std::mt19937 rng(14);
  std::vector<uint8_t> src(16384 + 256);
  for (uint8_t& b : src) b = static_cast<uint8_t>(rng());
  for (std::size_t bytes : {0, 1, 31, 63, 64, 65, 129, 4096, 14336, 14341}) {
    for (std::size_t dst_at : {0, 1, 17, 63}) {
      for (std::size_t src_at : {0, 3}) {
        std::vector<uint8_t> dst = sentinel_buffer<uint8_t>(bytes + 128);
        epcomm::kernels::stream_copy(dst.data() + dst_at, src.data() + src_at, bytes);
        for (std::size_t i = 0; i < dst.size(); ++i) {
          const bool inside = i >= dst_at && i < dst_at + bytes;
          const uint8_t want = inside ? src[src_at + i - dst_at] : kSentinel;
          ASSERT_EQ(dst[i], want) << "byte " << i << " of a " << bytes << "-byte copy to offset " << dst_at
                                  << " from offset " << src_at;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, SimdTarget, testing::ValuesIn(simd_targets()),
                         [](const testing::TestParamInfo<int64_t>& p) { return std::string(hwy::TargetName(p.param)); });

}  // namespace
