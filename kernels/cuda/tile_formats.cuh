// SPDX-License-Identifier: MIT
// One lane's part of encoding and decoding a tile, per wire format: the device
// counterpart of the per-format structs in kernels/codec.cpp, over the same element
// math (kernels/common), so the bytes and floats agree with the CPU bit for bit.
//
// encode(v, lane, layout, row, pos, hidden, bad): v holds the lane's elements as
// FP32 (zeros past the row's end, as load8 gives), row points at the encoded row;
// a format that finds an element it cannot represent lowers *bad to
// pos * hidden + column and writes nothing for the tile.
// Every lane of a tile must call encode (the reductions shuffle among all 16).
// decode(row, lane, layout, v): the lane's elements of an encoded row, in two
// steps that kernels may split to keep several tiles' loads in flight:
// unpack(fetch(row, lane, layout), lane, v).
#pragma once

#include <epcomm/types.hpp>

#include <climits>
#include <type_traits>

#include "common/bf16.hpp"
#include "common/exact_shortcuts.hpp"
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

// __log2f (lg2.approx) without its subnormal fix-up: inputs below 2^-126 read as
// zero, which suits callers that decide those inputs otherwise.
__device__ inline float lg2_approx_ftz(float a) {
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
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
  using Fetched = Raw<Elem>;
  __device__ static Fetched fetch(const uint8_t* row, const Lane& l, const Layout&) {
    Fetched r;
    load_raw(reinterpret_cast<const Elem*>(row) + l.col0, l.valid, r);
    return r;
  }
  __device__ static void unpack(const Fetched& r, const Lane&, Elems& v) { widen(r, v); }
  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout& layout, Elems& v) {
    unpack(fetch(row, l, layout), l, v);
  }
};

// E4M3 codes with an FP32 scale (kPow2 false) or a UE8M0 scale byte per tile.
template <bool kPow2>
struct Fp8 {
  static constexpr Format kFormat = kPow2 ? Format::kFP8UE8M0 : Format::kFP8;

  __device__ static void encode(const Elems& v, const Lane& l, const Layout& layout, uint8_t* row, int64_t, int,
                                unsigned long long*) {
    // amax over finite |x| (lanes past the row hold zeros). |x| >= 0 orders like
    // its bits, so one integer max an element finds it, unless the lane holds an
    // infinity or NaN (all exponent bits set), which takes a second look.
    uint32_t top = 0;
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) top = max(top, elem::to_bits(v[k]) & 0x7fffffffu);
    const bool finite = top < 0x7f800000u;
    bool nan = false;
    if (!finite) {
      top = 0;
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) {
        const uint32_t a = elem::to_bits(v[k]) & 0x7fffffffu;
        top = a < 0x7f800000u ? max(top, a) : top;
        nan = nan || a > 0x7f800000u;
      }
    }
    const float amax = tile_max(elem::from_bits(top), l.mask);
    if (l.valid == 0) return;
    uint64_t codes = 0;
    // fp8_scale, computed as its exact shortcut.
    const float scale = elem::fp8_scale_fast(amax);
    if constexpr (kPow2) {
      const uint8_t e = elem::ue8m0_ceil(scale);  // fp8_scale_ue8m0(amax)
      if (l.sub == 0) row[layout.meta_offset + l.tile] = e;
      // The CPU divides by 2^(e-127). A finite amax gives e in [23, 247], so 2^(127-e)
      // is a normal float and x * 2^(127-e) is the same correctly rounded quotient,
      // for a multiply instead of a division.
      const float inv = elem::pow2i(127 - static_cast<int>(e));
      if (!nan) {
        // No NaN operand: x * inv (inv a positive normal) is never NaN, so the x86
        // NaN fixups and the NaN path of the conversion have nothing to do.
#pragma unroll
        for (int k = 0; k < kElemsPerLane; k += 2) {
          codes |= static_cast<uint64_t>(__nv_cvt_float2_to_fp8x2(make_float2(v[k] * inv, v[k + 1] * inv),
                                                                  __NV_SATFINITE, __NV_E4M3))
                   << (8 * k);
        }
      } else {
#pragma unroll
        for (int k = 0; k < kElemsPerLane; k += 2) {
          codes |= static_cast<uint64_t>(e4m3x2_of(x86::mul(v[k], inv), x86::mul(v[k + 1], inv))) << (8 * k);
        }
      }
    } else {
      if (l.sub == 0) store_bytes<4>(row + layout.meta_offset + 4 * l.tile, elem::to_bits(scale), 4);
      if (finite && scale >= elem::kFp8FastScaleMin) {
        // The CPU divides by the scale: elem::fp8_quotient gives a value with the
        // same E4M3 code as the IEEE quotient from the reciprocal and two FMAs
        // (finite x, |x| <= amax; tests/test_exact_shortcuts.cpp).
        const float inv = __frcp_rn(scale);
#pragma unroll
        for (int k = 0; k < kElemsPerLane; k += 2) {
          const float2 q = make_float2(elem::fp8_quotient(v[k], scale, inv), elem::fp8_quotient(v[k + 1], scale, inv));
          codes |= static_cast<uint64_t>(__nv_cvt_float2_to_fp8x2(q, __NV_SATFINITE, __NV_E4M3)) << (8 * k);
        }
      } else if (!nan) {
        // No NaN operand: x / scale (scale a positive normal) is never NaN (inf stays
        // inf), as above; lanes with an infinity and tiles this small keep the IEEE
        // division.
#pragma unroll
        for (int k = 0; k < kElemsPerLane; k += 2) {
          codes |= static_cast<uint64_t>(__nv_cvt_float2_to_fp8x2(make_float2(v[k] / scale, v[k + 1] / scale),
                                                                  __NV_SATFINITE, __NV_E4M3))
                   << (8 * k);
        }
      } else {
#pragma unroll
        for (int k = 0; k < kElemsPerLane; k += 2) {
          codes |= static_cast<uint64_t>(e4m3x2_of(x86::div(v[k], scale), x86::div(v[k + 1], scale))) << (8 * k);
        }
      }
    }
    store_bytes<8>(row + layout.payload_offset + l.col0, codes, l.valid);
  }

  struct Fetched {
    uint64_t codes;
    uint32_t scale;  // the UE8M0 byte or the FP32 bits
  };
  __device__ static Fetched fetch(const uint8_t* row, const Lane& l, const Layout& layout) {
    Fetched f;
    if constexpr (kPow2) {
      f.scale = row[layout.meta_offset + l.tile];
    } else {
      f.scale = static_cast<uint32_t>(load_bytes<4>(row + layout.meta_offset + 4 * l.tile, 4));
    }
    f.codes = static_cast<uint64_t>(load_bytes<8>(row + layout.payload_offset + l.col0, l.valid));
    return f;
  }
  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout& layout, Elems& v) {
    unpack(fetch(row, l, layout), l, v);
  }

  __device__ static void unpack(const Fetched& f, const Lane&, Elems& v) {
    const float scale = kPow2 ? elem::ue8m0_value(static_cast<uint8_t>(f.scale)) : elem::from_bits(f.scale);
    const uint64_t codes = f.codes;
    // A byte is a NaN code iff its low 7 bits are 0x7f, i.e. adding 1 to them carries
    // into bit 7. Without NaN codes and with a finite scale (stored bytes may hold
    // anything) every product is finite: the conversion instruction and a plain
    // multiply give the reference values.
    const uint64_t low7 = codes & 0x7f7f7f7f7f7f7f7full;
    if (((low7 + 0x0101010101010101ull) & 0x8080808080808080ull) == 0 && elem::is_finite(scale)) {
#pragma unroll
      for (int k = 0; k < kElemsPerLane; k += 2) {
        const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(codes >> (8 * k)),
                                                         __NV_E4M3);
        v[k] = __half2float(__half(__half_raw{h.x})) * scale;
        v[k + 1] = __half2float(__half(__half_raw{h.y})) * scale;
      }
      return;
    }
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

  // Magnitude codes of a tile whose step lies in [2^-9, 1/2] for the elements above
  // level 1 (elem::LogMidpoints says why they are log_encode_magnitude's): floor(t)
  // + 1 from the hardware log2, unless t lies near a midpoint. Returns the mask of
  // the elements that do (an element at or below level 1 may be among them: its
  // code is replaced afterwards anyway; a zero is not, its distance is NaN).
  __device__ static unsigned fast_magnitudes(const Elems& v, const elem::LogMidpoints& f,
                                             uint32_t (&mag)[kElemsPerLane]) {
    unsigned todo = 0;
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      const float t = elem::log_midpoint_position(lg2_approx_ftz(elem::abs_f(v[k])), f);
      const float floor_sum = elem::floor_plus_2p23(t);
      if (elem::log_off_centre(t, floor_sum) > f.cut) todo |= 1u << k;
      mag[k] = elem::log_midpoint_code(floor_sum);
    }
    return todo;
  }

  // The elements of `todo` (near a midpoint), decided exactly.
  __device__ static void exact_magnitudes(const Elems& v, unsigned todo, const elem::LogTile& t,
                                          const elem::LogMidpoints& f, uint32_t (&mag)[kElemsPerLane]) {
    while (todo != 0u) {
      const int i = __ffs(todo) - 1;
      todo &= todo - 1u;
      float a = 0.0f;
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) a = k == i ? elem::abs_f(v[k]) : a;
      const uint32_t c =
          elem::log_magnitude_near_midpoint(a, elem::log_midpoint_position(lg2_approx_ftz(a), f), t);
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) mag[k] = k == i ? c : mag[k];
    }
  }

  // What the lanes of a tile need to encode it: the stored (min_q, max_q) pair,
  // and for tiles the fast route takes (cut > 0) its constants and level 1.
  struct TileCode {
    uint32_t meta;  // min_q | max_q << 16
    elem::LogMidpoints f;
    float v1;
  };
  __device__ static elem::LogTile tile_of(uint32_t meta) {
    return elem::log_tile_fast(static_cast<int16_t>(meta & 0xffffu), static_cast<int16_t>(meta >> 16), kBits);
  }

  // elem::log_tile_params for the tile with range [amin, amax] (amax 0: no element
  // >= 2^-126), its two log2_poly calls split between lanes that swap results
  // across `partner`: odd lanes take floor(128 log2 amin), the others ceil(128
  // log2 amax).
  __device__ static TileCode tile_code(float amin, float amax, bool odd, unsigned mask, int partner) {
    const float lg = elem::log2_poly(odd ? amin : amax) * static_cast<float>(elem::kLogFixedOne);
    const int mine = odd ? elem::floor_small(lg) : elem::ceil_small(lg);  // |lg| <= 128 * 150
    const int other = __shfl_xor_sync(mask, mine, partner);
    TileCode c{0u, {0.0f, 0.0f, 0.0f}, 0.0f};
    if (amax == 0.0f) return c;  // stored as (0, 0); the reference gives every element 0
    const int hi = odd ? other : mine;
    int lo = odd ? mine : other;
    if (lo < hi - elem::kLogMaxRange * elem::kLogFixedOne) lo = hi - elem::kLogMaxRange * elem::kLogFixedOne;
    // log2 of normal floats keeps both within int16. The tile is log_tile_params',
    // computed as log_tile_fast (equal, without conversions).
    c.meta = static_cast<uint16_t>(lo) | static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16;
    const elem::LogTile t = tile_of(c.meta);
    if (t.step >= elem::kLogMidpointStepMin && t.step <= elem::kLogMidpointStepMax) {
      c.f = elem::log_midpoints(t, elem::small_int_to_float(hi) / static_cast<float>(elem::kLogFixedOne));
      c.v1 = elem::log_level_fast(t, 1);
    }
    return c;
  }

  // The bits of the lane's largest |x|, its smallest, and its smallest >= 2^-126
  // (kInf if none): |x| orders like its bits, so an integer max and min an element,
  // and a second look only in lanes holding zeros or subnormals.
  static constexpr uint32_t kNormal = 0x00800000u, kInf = 0x7f800000u;
  __device__ static void lane_range(const Elems& v, uint32_t& top, uint32_t& least, uint32_t& low) {
    top = 0;
    least = kInf;
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      const uint32_t a = elem::to_bits(v[k]) & 0x7fffffffu;
      top = max(top, a);
      least = min(least, a);
    }
    low = least;
    if (least < kNormal) {
      low = kInf;
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) {
        const uint32_t a = elem::to_bits(v[k]) & 0x7fffffffu;
        low = a >= kNormal ? min(low, a) : low;
      }
    }
  }

  // Encodes N tiles of a row at once: l[u] is the lane's part of tile u (valid 0
  // past the row's end or for a tile past the last), elems(u, v) its elements
  // (zeros where not valid). Every lane of the 16 must call it.
  //
  // Same pass as the CPU: the first non-finite column fails the tile (the column
  // goes to *bad as pos * hidden + column, and nothing is written); the range is
  // over |x| >= kLogZeroBelow. The per-tile work (two log2 polynomials, the
  // parameters, level 1 and the fast route's constants) is done once for the N
  // tiles: lane s of the 16 works for tile s % N and passes the result on by
  // shuffles, so a lane's share of it is spread over N * 8 elements.
  template <int N, class Elems_of>
  __device__ static void encode_tiles(const Lane (&l)[N], const Elems_of& elems, const Layout& layout, uint8_t* row,
                                      int64_t pos, int hidden, unsigned long long* bad) {
    const unsigned mask = l[0].mask;
    uint32_t top[N], least[N], low[N];
    bool nonfinite = false;
#pragma unroll
    for (int u = 0; u < N; ++u) {
      Elems v;
      elems(u, v);
      lane_range(v, top[u], least[u], low[u]);
      nonfinite = nonfinite || top[u] >= kInf;
    }
    bool failed[N];
#pragma unroll
    for (int u = 0; u < N; ++u) failed[u] = false;
    // Non-finite input is rare: the columns are reduced only where there is one.
    if (__any_sync(mask, nonfinite)) {
#pragma unroll
      for (int u = 0; u < N; ++u) {
        int first_bad = INT_MAX;
        if (top[u] >= kInf) {
          Elems v;
          elems(u, v);
#pragma unroll
          for (int k = kElemsPerLane - 1; k >= 0; --k) {
            if (k < l[u].valid && !elem::is_finite(v[k])) first_bad = l[u].col0 + k;
          }
        }
        first_bad = tile_min(first_bad, mask);
        failed[u] = first_bad != INT_MAX;
        if (failed[u] && l[u].sub == 0) atomicMin(bad, static_cast<unsigned long long>(pos * hidden + first_bad));
      }
    }
    // This lane's tile for the per-tile work (as N divides 16, lanes s and s ^ N
    // share it).
    const int mine = l[0].sub % N;
    float amin = 0.0f, amax = 0.0f;
#pragma unroll
    for (int u = 0; u < N; ++u) {
      const float lo = tile_min(elem::from_bits(low[u]), mask);
      const float hi = tile_max(top[u] >= kNormal ? elem::from_bits(top[u]) : 0.0f, mask);
      amin = u == mine ? lo : amin;
      amax = u == mine ? hi : amax;
    }
    const TileCode own = tile_code(amin, amax, (l[0].sub / N) % 2 != 0, mask, N);
#pragma unroll
    for (int u = 0; u < N; ++u) {
      TileCode c = own;
      if constexpr (N > 1) {
        c.meta = __shfl_sync(mask, own.meta, u, kLanesPerTile);
        c.f.inv = __shfl_sync(mask, own.f.inv, u, kLanesPerTile);
        c.f.bias = __shfl_sync(mask, own.f.bias, u, kLanesPerTile);
        c.f.cut = __shfl_sync(mask, own.f.cut, u, kLanesPerTile);
        c.v1 = __shfl_sync(mask, own.v1, u, kLanesPerTile);
      }
      if (failed[u] || l[u].valid == 0) continue;
      if (l[u].sub == 0) store_bytes<4>(row + 4 * l[u].tile, c.meta, 4);
      Elems v;
      elems(u, v);
      store_bytes<kBits>(row + code_offset(l[u], layout), codes(v, c, least[u]), code_bytes(l[u].valid));
    }
  }

  // One tile, as encode_tiles.
  __device__ static void encode(const Elems& v, const Lane& l, const Layout& layout, uint8_t* row, int64_t pos,
                                int hidden, unsigned long long* bad) {
    const Lane one[1] = {l};
    encode_tiles<1>(
        one,
        [&](int, Elems& out) {
#pragma unroll
          for (int k = 0; k < kElemsPerLane; ++k) out[k] = v[k];
        },
        layout, row, pos, hidden, bad);
  }

  // The lane's code bytes; least is the bits of its smallest |x|.
  __device__ static Chunk codes(const Elems& v, const TileCode& c, uint32_t least) {
    uint32_t mag[kElemsPerLane];
    bool above_level1 = false;  // then every magnitude is >= 1 and takes x's sign
    if (c.f.cut > 0.0f) {
      if (const unsigned todo = fast_magnitudes(v, c.f, mag); todo != 0u) {
        exact_magnitudes(v, todo, tile_of(c.meta), c.f, mag);
      }
      // Lanes without zeros (the common case) skip the rules below level 1.
      above_level1 = least > elem::to_bits(c.v1);
      if (!above_level1) {
#pragma unroll
        for (int k = 0; k < kElemsPerLane; ++k) {
          const float a = elem::abs_f(v[k]);
          if (a <= c.v1) mag[k] = a - 0.0f > c.v1 - a ? 1u : 0u;
          if (a < elem::kLogZeroBelow) mag[k] = 0u;
        }
      }
    } else {
      const elem::LogTile t = tile_of(c.meta);
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) {
        mag[k] = static_cast<uint32_t>(elem::log_encode_magnitude(elem::abs_f(v[k]), t, kLevels));
      }
    }
    if (above_level1 && kBits == 8) return signed_bytes(mag, v);
    uint32_t code[kElemsPerLane];
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) code[k] = mag[k] | (elem::to_bits(v[k]) >> 31) << (kBits - 1);
    if (!above_level1) {
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) code[k] = mag[k] == 0u ? 0u : code[k];  // zero has no sign
    }
    return pack(code);
  }

  // The lane's codes, code k at bits [k n, (k + 1) n), built in 32-bit words.
  __device__ static Chunk pack(const uint32_t (&code)[kElemsPerLane]) {
    uint32_t w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      const int bit = k * kBits;
      w[bit / 32] |= code[k] << (bit % 32);
      if (bit % 32 + kBits > 32) w[bit / 32 + 1] |= code[k] >> (32 - bit % 32);
    }
    return static_cast<Chunk>(w[0]) | static_cast<Chunk>(w[1]) << 32 | static_cast<Chunk>(w[2]) << 64 |
           static_cast<Chunk>(w[3]) << 96;
  }

  // LogFMT-8 codes of magnitudes >= 1 (< 128) with the signs of v, as byte moves:
  // four magnitudes to a word by byte permutes, and the four signs by permutes
  // that replicate a byte's sign bit (prmt's sign mode), masked to bit 7.
  __device__ static Chunk signed_bytes(const uint32_t (&mag)[kElemsPerLane], const Elems& v) {
    uint32_t w[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t* m = mag + 4 * h;
      const uint32_t mags =
          __byte_perm(__byte_perm(m[0], m[1], 0x0040u), __byte_perm(m[2], m[3], 0x0040u), 0x5410u);
      const uint32_t signs = __byte_perm(sign_bytes(v[4 * h], v[4 * h + 1]), sign_bytes(v[4 * h + 2], v[4 * h + 3]),
                                         0x5410u);
      w[h] = mags | (signs & 0x80808080u);
    }
    return static_cast<Chunk>(w[0]) | static_cast<Chunk>(w[1]) << 32;
  }
  // Bytes 0 and 1: 0xff where a, b are negative, else 0 (bytes 2 and 3: any).
  __device__ static uint32_t sign_bytes(float a, float b) {
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, 0xfb;" : "=r"(r) : "r"(__float_as_uint(a)), "r"(__float_as_uint(b)));
    return r;
  }

  struct Fetched {
    Chunk codes;
    uint32_t meta;
  };
  __device__ static Fetched fetch(const uint8_t* row, const Lane& l, const Layout& layout) {
    return Fetched{load_bytes<kBits>(row + code_offset(l, layout), code_bytes(l.valid)),
                   static_cast<uint32_t>(load_bytes<4>(row + 4 * l.tile, 4))};
  }
  // log_tile_from_stored and log_decode, computed as their exact shortcuts; tiles
  // whose levels all lie inside exp2_poly's clamps (all that encoders write for
  // values below 2^127) skip them.
  template <bool kInRange>
  __device__ static void unpack_codes(Chunk codes, const elem::LogTile& t, Elems& v) {
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) {
      v[k] = elem::log_decode_fast<kInRange>(static_cast<uint32_t>(codes >> (k * kBits)) & kCodeMask, t, kBits);
    }
  }
  __device__ static void unpack(const Fetched& f, const Lane&, Elems& v) {
    const elem::LogTile t = elem::log_tile_fast(static_cast<int16_t>(f.meta & 0xffffu),
                                                static_cast<int16_t>(f.meta >> 16), kBits);
    if (elem::log_levels_in_range(t, kLevels)) {
      unpack_codes<true>(f.codes, t, v);
    } else {
      unpack_codes<false>(f.codes, t, v);
    }
  }
  __device__ static void decode(const uint8_t* row, const Lane& l, const Layout& layout, Elems& v) {
    unpack(fetch(row, l, layout), l, v);
  }
};

// Formats whose kernels hand a group's kAhead tiles to encode_tiles at once.
template <class F>
inline constexpr bool kEncodesTileGroups = false;
template <int kBits>
inline constexpr bool kEncodesTileGroups<LogFmt<kBits>> = true;

}  // namespace epcomm::kernels::cuda::detail
