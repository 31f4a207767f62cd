// One lane's part of encoding and decoding a tile, per wire format: the device
// counterpart of the per-format structs in kernels/codec.cpp, over the same element
// math (kernels/common), so the bytes and floats agree with the CPU bit for bit.
//
// encode(v, lane, layout, row, pos, hidden, bad): v holds the lane's elements as
// FP32, row points at the encoded row; a format that finds an element it cannot
// represent lowers *bad to pos * hidden + column and writes nothing for the tile.
// Every lane of a tile must call encode (the reductions shuffle among all 16).
// decode(row, lane, layout, v): the lane's elements of an encoded row.
#pragma once

#include <epcomm/types.hpp>

#include <climits>
#include <type_traits>

#include "common/bf16.hpp"
#include "common/fp8_e4m3.hpp"
#include "common/logfmt_math.hpp"
#include "fp8_convert.cuh"
#include "lane_io.cuh"
#include "x86_nan.cuh"

namespace epcomm::kernels::cuda::detail {

using Elems = float[kElemsPerLane];

// Shuffle reductions over the tile's 16 lanes (xor offsets below 16 stay inside).
__device__ inline float tile_max(float x, unsigned mask) {
#pragma unroll
  for (int o = kLanesPerTile / 2; o > 0; o /= 2) x = fmaxf(x, __shfl_xor_sync(mask, x, o));
  return x;
}
__device__ inline float tile_min(float x, unsigned mask) {
#pragma unroll
  for (int o = kLanesPerTile / 2; o > 0; o /= 2) x = fminf(x, __shfl_xor_sync(mask, x, o));
  return x;
}
__device__ inline int tile_min(int x, unsigned mask) {
#pragma unroll
  for (int o = kLanesPerTile / 2; o > 0; o /= 2) x = min(x, __shfl_xor_sync(mask, x, o));
  return x;
}

// The plain formats: the row is an array of FP32 or BF16 (uint16_t bits).
template <DType kType>
struct Plain {
  static constexpr Format kFormat = kType == DType::kF32 ? Format::kF32 : Format::kBF16;
  using Elem = std::conditional_t<kType == DType::kF32, float, uint16_t>;

  __device__ static void encode(const Elems& v, const Lane& l, const Layout&, uint8_t* row, int64_t, int,
                                unsigned long long*) {
    if (l.valid > 0) store8(reinterpret_cast<Elem*>(row) + l.col0, l.valid, v);
  }
  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout&, Elems& v) {
    load8(reinterpret_cast<const Elem*>(row) + l.col0, l.valid, v);
  }
};

// E4M3 codes with an FP32 scale (kPow2 false) or a UE8M0 scale byte per tile.
template <bool kPow2>
struct Fp8 {
  static constexpr Format kFormat = kPow2 ? Format::kFP8UE8M0 : Format::kFP8;

  __device__ static void encode(const Elems& v, const Lane& l, const Layout& layout, uint8_t* row, int64_t, int,
                                unsigned long long*) {
    float amax = 0.0f;  // over finite |x|; lanes past the row hold zeros
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      const float a = elem::abs_f(v[k]);
      amax = elem::is_finite(a) && a > amax ? a : amax;
    }
    amax = tile_max(amax, l.mask);
    if (l.valid == 0) return;
    uint64_t codes = 0;
    if constexpr (kPow2) {
      const uint8_t e = elem::fp8_scale_ue8m0(amax);
      if (l.sub == 0) row[layout.meta_offset + l.tile] = e;
      // The CPU divides by 2^(e-127). A finite amax gives e in [23, 247], so 2^(127-e)
      // is a normal float and x * 2^(127-e) is the same correctly rounded quotient,
      // for a multiply instead of a division.
      const float inv = elem::pow2i(127 - static_cast<int>(e));
#pragma unroll
      for (int k = 0; k < kElemsPerLane; k += 2) {
        codes |= static_cast<uint64_t>(e4m3x2_of(x86::mul(v[k], inv), x86::mul(v[k + 1], inv))) << (8 * k);
      }
    } else {
      const float scale = elem::fp8_scale(amax);
      if (l.sub == 0) store_bytes<4>(row + layout.meta_offset + 4 * l.tile, elem::to_bits(scale), 4);
#pragma unroll
      for (int k = 0; k < kElemsPerLane; k += 2) {
        codes |= static_cast<uint64_t>(e4m3x2_of(x86::div(v[k], scale), x86::div(v[k + 1], scale))) << (8 * k);
      }
    }
    store_bytes<8>(row + layout.payload_offset + l.col0, codes, l.valid);
  }

  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout& layout, Elems& v) {
    float scale;
    if constexpr (kPow2) {
      scale = elem::ue8m0_value(row[layout.meta_offset + l.tile]);
    } else {
      scale = elem::from_bits(static_cast<uint32_t>(load_bytes<4>(row + layout.meta_offset + 4 * l.tile, 4)));
    }
    const Chunk codes = load_bytes<8>(row + layout.payload_offset + l.col0, l.valid);
#pragma unroll
    for (int k = 0; k < kElemsPerLane; k += 2) {
      float a, b;
      e4m3x2_to_f32(static_cast<uint32_t>(codes >> (8 * k)) & 0xffffu, a, b);
      v[k] = x86::mul(a, scale);
      v[k + 1] = x86::mul(b, scale);
    }
  }
};

// LogFMT-kBits: per tile an (int16 min, int16 max) pair at tile * 4, then the codes,
// tile t's at payload_offset + t * 16 * kBits; this lane's 8 codes are its kBits
// bytes from there.
template <int kBits>
struct LogFmt {
  static constexpr Format kFormat = static_cast<Format>(static_cast<int>(Format::kLogFMT3) + kBits - 3);
  static constexpr int kLevels = (1 << (kBits - 1)) - 1;
  static constexpr uint32_t kCodeMask = (1u << kBits) - 1u;

  // Bytes holding the codes of the lane's first n elements (the CPU writes no more).
  __device__ static int code_bytes(int n) { return (n * kBits + 7) / 8; }
  __device__ static int64_t code_offset(const Lane& l, const Layout& layout) {
    return layout.payload_offset + static_cast<int64_t>(l.tile) * (kTileElems / 8 * kBits) + l.sub * kBits;
  }

  __device__ static void encode(const Elems& v, const Lane& l, const Layout& layout, uint8_t* row, int64_t pos,
                                int hidden, unsigned long long* bad) {
    // Same pass as the CPU: the first non-finite column fails the tile; the range is
    // over |x| >= kLogZeroBelow.
    int first_bad = INT_MAX;
    float amin = elem::from_bits(0x7f800000u), amax = 0.0f;
#pragma unroll
    for (int k = kElemsPerLane - 1; k >= 0; --k) {
      if (k >= l.valid) continue;
      if (!elem::is_finite(v[k])) first_bad = l.col0 + k;
      const float a = elem::abs_f(v[k]);
      if (a >= elem::kLogZeroBelow) {
        amin = fminf(amin, a);
        amax = fmaxf(amax, a);
      }
    }
    first_bad = tile_min(first_bad, l.mask);
    amin = tile_min(amin, l.mask);
    amax = tile_max(amax, l.mask);
    if (first_bad != INT_MAX) {
      if (l.sub == 0) atomicMin(bad, static_cast<unsigned long long>(pos * hidden + first_bad));
      return;
    }
    if (l.valid == 0) return;
    int16_t min_q = 0, max_q = 0;
    elem::LogTile t{0.0f, 0.0f};
    if (amax != 0.0f) t = elem::log_tile_params(amin, amax, kBits, &min_q, &max_q);
    if (l.sub == 0) {
      const uint32_t meta = static_cast<uint16_t>(min_q) | static_cast<uint32_t>(static_cast<uint16_t>(max_q)) << 16;
      store_bytes<4>(row + 4 * l.tile, meta, 4);
    }
    Chunk codes = 0;
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      const uint32_t mag =
          amax == 0.0f ? 0u : static_cast<uint32_t>(elem::log_encode_magnitude(elem::abs_f(v[k]), t, kLevels));
      const uint32_t sign = mag != 0u && (elem::to_bits(v[k]) >> 31) ? 1u : 0u;
      codes |= static_cast<Chunk>(mag | sign << (kBits - 1)) << (k * kBits);
    }
    store_bytes<kBits>(row + code_offset(l, layout), codes, code_bytes(l.valid));
  }

  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout& layout, Elems& v) {
    const uint32_t meta = static_cast<uint32_t>(load_bytes<4>(row + 4 * l.tile, 4));
    const elem::LogTile t = elem::log_tile_from_stored(static_cast<int16_t>(meta & 0xffffu),
                                                       static_cast<int16_t>(meta >> 16), kBits);
    const Chunk codes = load_bytes<kBits>(row + code_offset(l, layout), code_bytes(l.valid));
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      v[k] = elem::log_decode(static_cast<uint32_t>(codes >> (k * kBits)) & kCodeMask, t, kBits);
    }
  }
};

}  // namespace epcomm::kernels::cuda::detail
