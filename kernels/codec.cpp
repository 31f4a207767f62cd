// SPDX-License-Identifier: MIT
#include "epcomm_kernels/codec.hpp"

#include <epcomm/error.hpp>

#include <algorithm>
#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "common/fp8_e4m3.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace epcomm::kernels {
namespace {

// A quantised row is processed tile by tile: tile t covers elements [t*128, min(H, t*128+128)).
int tile_len(int hidden, int tile) { return std::min(kTileElems, hidden - tile * kTileElems); }
int num_tiles(int hidden) { return (hidden + kTileElems - 1) / kTileElems; }

// An FP32 view of one tile of a row of `type` (converted into `scratch` if BF16).
const float* load_tile(const TileKernels& k, const void* row, DType type, int i0, int n, float* scratch) {
  if (type == DType::kF32) return static_cast<const float*>(row) + i0;
  k.bf16_to_f32(static_cast<const uint16_t*>(row) + i0, n, scratch);
  return scratch;
}

// Rows of at most kChunkTiles tiles have their per-tile metadata gathered into one
// stack array, so a fused accumulate covers them in one kernel call.
constexpr int kChunkTiles = 64;

// Calls body(first_tile, tiles, i0, n) for runs of up to kChunkTiles whole tiles
// covering [0, hidden): elements [i0, i0 + n).
template <class Body>
void for_each_tile_chunk(int hidden, Body body) {
  const int tiles = num_tiles(hidden);
  for (int t0 = 0; t0 < tiles; t0 += kChunkTiles) {
    const int i0 = t0 * kTileElems;
    body(t0, std::min(kChunkTiles, tiles - t0), i0, std::min(kChunkTiles * kTileElems, hidden - i0));
  }
}

// `hidden` elements of dtype `from` as the other dtype (FP32 <-> BF16), over the
// whole row in one kernel call. Rows already of the wanted dtype are copied by the
// callers.
void convert_row(const TileKernels& k, const void* src, DType from, int hidden, void* dst) {
  if (from == DType::kF32) {
    k.f32_to_bf16(static_cast<const float*>(src), hidden, static_cast<uint16_t*>(dst));
  } else {
    k.bf16_to_f32(static_cast<const uint16_t*>(src), hidden, static_cast<float*>(dst));
  }
}

// Plain formats: the row is an array of kType, converted whole rather than tile by
// tile.
template <DType kType>
struct Plain {
  static constexpr Format kFormat = kType == DType::kF32 ? Format::kF32 : Format::kBF16;
  static constexpr bool kPlain = true;
  static constexpr DType kDType = kType;
  static void accumulate(const TileKernels& k, const std::byte* row, int hidden, const RowLayout&, float w,
                         float* acc) {
    if constexpr (kType == DType::kF32) {
      k.axpy(reinterpret_cast<const float*>(row), hidden, w, acc);
    } else {
      k.bf16_axpy(reinterpret_cast<const uint16_t*>(row), hidden, w, acc);
    }
  }
};

// E4M3 with an FP32 scale (kScaleBytes = 4) or a UE8M0 scale byte (1) per tile.
template <Format kF>
struct Fp8 {
  static constexpr Format kFormat = kF;
  static constexpr bool kPlain = false;
  static constexpr bool kPow2 = kF == Format::kFP8UE8M0;
  static float scale(const std::byte* row, int tile, const RowLayout& l) {
    if constexpr (kPow2) {
      uint8_t e;
      std::memcpy(&e, row + l.meta_offset + tile, 1);
      return elem::ue8m0_value(e);
    } else {
      float scale;
      std::memcpy(&scale, row + l.meta_offset + static_cast<std::size_t>(tile) * 4, 4);
      return scale;
    }
  }
  static int encode(const TileKernels& k, const float* x, int tile, int n, int i0, std::byte* row,
                    const RowLayout& l) {
    const float amax = k.amax_finite(x, n);
    float scale;
    if constexpr (kPow2) {
      const uint8_t e = elem::fp8_scale_ue8m0(amax);
      scale = elem::ue8m0_value(e);
      std::memcpy(row + l.meta_offset + tile, &e, 1);
    } else {
      scale = elem::fp8_scale(amax);
      std::memcpy(row + l.meta_offset + static_cast<std::size_t>(tile) * 4, &scale, 4);
    }
    k.fp8_encode(x, n, scale, reinterpret_cast<uint8_t*>(row + l.payload_offset) + i0);
    return -1;
  }
  static void decode(const TileKernels& k, const std::byte* row, int tile, const RowLayout& l, int i0, int n,
                     float* out) {
    k.fp8_decode(reinterpret_cast<const uint8_t*>(row + l.payload_offset) + i0, n, scale(row, tile, l), out);
  }
  static void accumulate(const TileKernels& k, const std::byte* row, int hidden, const RowLayout& l, float w,
                         float* acc) {
    const auto* codes = reinterpret_cast<const uint8_t*>(row + l.payload_offset);
    for_each_tile_chunk(hidden, [&](int t0, int tiles, int i0, int n) {
      float scales[kChunkTiles];
      for (int t = 0; t < tiles; ++t) scales[t] = scale(row, t0 + t, l);
      k.fp8_axpy(codes + i0, n, scales, w, acc + i0);
    });
  }
};

// LogFMT-n: per tile an (int16 min, int16 max) pair, then the packed codes.
template <Format kF>
struct LogFmt {
  static constexpr Format kFormat = kF;
  static constexpr bool kPlain = false;
  static constexpr int kBits = static_cast<int>(kF) - static_cast<int>(Format::kLogFMT3) + 3;
  static constexpr std::size_t kTileCodeBytes = kTileElems * kBits / 8;
  static int encode(const TileKernels& k, const float* x, int tile, int n, int, std::byte* row, const RowLayout& l) {
    int16_t mm[2];
    const int bad = k.logfmt_encode(x, n, kBits, reinterpret_cast<uint8_t*>(row + l.payload_offset) + tile * kTileCodeBytes,
                                    &mm[0], &mm[1]);
    std::memcpy(row + l.meta_offset + static_cast<std::size_t>(tile) * sizeof mm, mm, sizeof mm);
    return bad;
  }
  static void decode(const TileKernels& k, const std::byte* row, int tile, const RowLayout& l, int, int n,
                     float* out) {
    int16_t mm[2];
    std::memcpy(mm, row + l.meta_offset + static_cast<std::size_t>(tile) * sizeof mm, sizeof mm);
    k.logfmt_decode(reinterpret_cast<const uint8_t*>(row + l.payload_offset) + tile * kTileCodeBytes, n, kBits, mm[0],
                    mm[1], out);
  }
  static void accumulate(const TileKernels& k, const std::byte* row, int hidden, const RowLayout& l, float w,
                         float* acc) {
    const auto* codes = reinterpret_cast<const uint8_t*>(row + l.payload_offset);
    for_each_tile_chunk(hidden, [&](int t0, int tiles, int i0, int n) {
      int16_t min_max[2 * kChunkTiles];  // the stored pairs are contiguous
      std::memcpy(min_max, row + l.meta_offset + static_cast<std::size_t>(t0) * sizeof(int16_t) * 2,
                  static_cast<std::size_t>(tiles) * sizeof(int16_t) * 2);
      k.logfmt_axpy(codes + static_cast<std::size_t>(t0) * kTileCodeBytes, n, kBits, min_max, w, acc + i0);
    });
  }
};

// The row loops every format shares, over its per-tile encode/decode, running the
// tile kernels kKernels() returns.
template <class F, const TileKernels& (*kKernels)()>
struct RowCodec {
  static std::size_t row_bytes(int hidden) { return row_layout(F::kFormat, hidden).row_bytes; }

  static int encode(const void* src, DType src_type, int hidden, void* dst) {
    const TileKernels& k = kKernels();
    if (plain_format(src_type) == F::kFormat) {  // already in this format
      std::memcpy(dst, src, row_bytes(hidden));
      return -1;
    }
    if constexpr (F::kPlain) {
      convert_row(k, src, src_type, hidden, dst);
    } else {
      const RowLayout layout = row_layout(F::kFormat, hidden);
      float scratch[kTileElems];
      for (int t = 0; t < num_tiles(hidden); ++t) {
        const int i0 = t * kTileElems, n = tile_len(hidden, t);
        const float* x = load_tile(k, src, src_type, i0, n, scratch);
        const int bad = F::encode(k, x, t, n, i0, static_cast<std::byte*>(dst), layout);
        if (bad >= 0) return i0 + bad;
      }
    }
    return -1;
  }

  static void decode(const void* src, int hidden, void* dst, DType dst_type) {
    const TileKernels& k = kKernels();
    if (plain_format(dst_type) == F::kFormat) {
      std::memcpy(dst, src, row_bytes(hidden));
      return;
    }
    if constexpr (F::kPlain) {
      convert_row(k, src, F::kDType, hidden, dst);
    } else {
      // FP32 rows are decoded in place; BF16 ones through one tile of FP32.
      const RowLayout layout = row_layout(F::kFormat, hidden);
      float v[kTileElems];
      for (int t = 0; t < num_tiles(hidden); ++t) {
        const int i0 = t * kTileElems, n = tile_len(hidden, t);
        if (dst_type == DType::kF32) {
          F::decode(k, static_cast<const std::byte*>(src), t, layout, i0, n, static_cast<float*>(dst) + i0);
        } else {
          F::decode(k, static_cast<const std::byte*>(src), t, layout, i0, n, v);
          k.f32_to_bf16(v, n, static_cast<uint16_t*>(dst) + i0);
        }
      }
    }
  }

  // Decode, weight and add in one pass (F::accumulate's fused kernels).
  static void accumulate(const void* src, int hidden, float weight, float* acc) {
    F::accumulate(kKernels(), static_cast<const std::byte*>(src), hidden, row_layout(F::kFormat, hidden), weight, acc);
  }

  static constexpr Codec table() { return Codec{F::kFormat, &row_bytes, &encode, &decode, &accumulate}; }
};

template <const TileKernels& (*kKernels)(), int... kBits>
constexpr std::array<Codec, sizeof...(kBits)> logfmt_tables(std::integer_sequence<int, kBits...>) {
  return {RowCodec<LogFmt<static_cast<Format>(static_cast<int>(Format::kLogFMT3) + kBits)>, kKernels>::table()...};
}

// Every format's Codec over one set of tile kernels.
template <const TileKernels& (*kKernels)()>
struct CodecTables {
  static constexpr Codec kF32 = RowCodec<Plain<DType::kF32>, kKernels>::table();
  static constexpr Codec kBF16 = RowCodec<Plain<DType::kBF16>, kKernels>::table();
  static constexpr Codec kFp8 = RowCodec<Fp8<Format::kFP8>, kKernels>::table();
  static constexpr Codec kFp8Ue8m0 = RowCodec<Fp8<Format::kFP8UE8M0>, kKernels>::table();
  static constexpr auto kLogFmt = logfmt_tables<kKernels>(std::make_integer_sequence<int, 14>{});

  static const Codec& lookup(Format format) {
    switch (format) {
      case Format::kF32: return kF32;
      case Format::kBF16: return kBF16;
      case Format::kFP8: return kFp8;
      case Format::kFP8UE8M0: return kFp8Ue8m0;
      default: break;
    }
    const int bits = logfmt_bits(format);
    if (bits == 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  "epcomm: unknown wire format value " + std::to_string(static_cast<int>(format)));
    }
    return kLogFmt[static_cast<std::size_t>(bits - 3)];
  }
};

}  // namespace

const Codec& codec_for(Format format) { return CodecTables<&active_kernels>::lookup(format); }

const Codec& reference_codec_for(Format format) { return CodecTables<&reference_kernels>::lookup(format); }

Format plain_format(DType dtype) { return dtype == DType::kF32 ? Format::kF32 : Format::kBF16; }

}  // namespace epcomm::kernels
