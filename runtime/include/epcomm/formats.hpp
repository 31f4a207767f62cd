// SPDX-License-Identifier: MIT
// epcomm — wire formats of token rows and their byte layout (docs/formats.md).
//
// A row of `hidden` elements is encoded as one contiguous byte string of
// row_layout(f, hidden).row_bytes: a payload (the element codes) and, for the
// quantised formats, per-tile metadata. Tiles are 1x128 elements along the row (the
// last tile may be shorter). The exchange moves rows as opaque bytes, so a caller
// that wants FP8 rows for an FP8 grouped GEMM reads codes and scales at the offsets
// given here.
#pragma once

#include <epcomm/export.hpp>

#include <cstddef>

namespace epcomm {

enum class Format : int {
  kF32 = 0,         // plain FP32
  kBF16 = 1,        // BF16, round to nearest even
  kFP8 = 2,         // E4M3 + one FP32 scale per tile (scale = amax / 448)
  kFP8UE8M0 = 3,    // E4M3 + one power-of-two scale per tile, one UE8M0 byte
  kLogFMT3 = 103,   // LogFMT-nBit: kLogFMT3 + (n - 3) for n in [3, 16]
  kLogFMT8 = 108,
  kLogFMT10 = 110,
  kLogFMT16 = 116,
};

inline constexpr int kTileElems = 128;

// LogFMT with n bits per element, n in [3, 16]; throws Error(kInvalidArgument).
EPCOMM_API Format logfmt_format(int bits);
// n for a LogFMT format, 0 for any other.
EPCOMM_API int logfmt_bits(Format f) noexcept;
// True for the enumerators above and kLogFMT3..kLogFMT16.
EPCOMM_API bool is_known_format(Format f) noexcept;
// kF32 and kBF16: rows are plain arrays, no per-tile metadata.
inline bool is_plain_format(Format f) noexcept { return f == Format::kF32 || f == Format::kBF16; }

// "f32", "bf16", "fp8", "fp8-ue8m0", "logfmt<n>" ("?" for unknown values).
EPCOMM_API const char* to_string(Format f) noexcept;
// Parses the names to_string gives ("fp32" also accepted); throws
// Error(kInvalidArgument) naming the bad value.
EPCOMM_API Format parse_format(const char* name);

struct RowLayout {
  std::size_t row_bytes = 0;       // whole encoded row
  std::size_t payload_offset = 0;  // element codes
  std::size_t payload_bytes = 0;
  std::size_t meta_offset = 0;     // per-tile metadata (scales, log ranges)
  std::size_t meta_bytes = 0;      // meta_bytes_per_tile * tiles
  std::size_t meta_bytes_per_tile = 0;
};
// kFP8:      [hidden E4M3 bytes][pad to 4][tiles x FP32 scale]
// kFP8UE8M0: [hidden E4M3 bytes][tiles x UE8M0 byte]
// LogFMT-n:  [tiles x (int16 min, int16 max) in 1/128 log2 units][hidden n-bit codes,
//            packed little-endian, each tile starting on a byte boundary]
EPCOMM_API RowLayout row_layout(Format f, int hidden);
EPCOMM_API std::size_t encoded_row_bytes(Format f, int hidden);

}  // namespace epcomm
