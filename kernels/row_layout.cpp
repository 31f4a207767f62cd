// SPDX-License-Identifier: MIT
// Byte layout of encoded rows (the public half of the format spec; the element
// encodings are in kernels/common/).
#include <epcomm/formats.hpp>

#include <algorithm>

#include "common/logfmt_math.hpp"

namespace epcomm {

int logfmt_bits(Format f) noexcept {
  const int v = static_cast<int>(f);
  return v >= static_cast<int>(Format::kLogFMT3) && v <= static_cast<int>(Format::kLogFMT16)
             ? v - static_cast<int>(Format::kLogFMT3) + 3
             : 0;
}

bool is_known_format(Format f) noexcept {
  switch (f) {
    case Format::kF32:
    case Format::kBF16:
    case Format::kFP8:
    case Format::kFP8UE8M0:
      return true;
    default:
      return logfmt_bits(f) != 0;
  }
}

const char* to_string(Format f) noexcept {
  static constexpr const char* kLogNames[] = {"logfmt3",  "logfmt4",  "logfmt5",  "logfmt6",  "logfmt7",
                                              "logfmt8",  "logfmt9",  "logfmt10", "logfmt11", "logfmt12",
                                              "logfmt13", "logfmt14", "logfmt15", "logfmt16"};
  switch (f) {
    case Format::kF32: return "f32";
    case Format::kBF16: return "bf16";
    case Format::kFP8: return "fp8";
    case Format::kFP8UE8M0: return "fp8-ue8m0";
    default: {
      const int bits = logfmt_bits(f);
      return bits != 0 ? kLogNames[bits - 3] : "?";
    }
  }
}

RowLayout row_layout(Format f, int hidden) {
  const std::size_t h = hidden > 0 ? static_cast<std::size_t>(hidden) : 0;
  const std::size_t tiles = (h + kTileElems - 1) / kTileElems;
  RowLayout l;
  switch (f) {
    case Format::kF32:
    case Format::kBF16:
      l.payload_bytes = h * (f == Format::kF32 ? 4 : 2);
      break;
    case Format::kFP8:
      l.payload_bytes = h;
      l.meta_bytes_per_tile = 4;
      l.meta_offset = (h + 3) / 4 * 4;  // FP32 scales 4-byte aligned within the row
      break;
    case Format::kFP8UE8M0:
      l.payload_bytes = h;
      l.meta_bytes_per_tile = 1;
      l.meta_offset = h;
      break;
    default: {
      const int bits = logfmt_bits(f);
      if (bits == 0) return l;  // unknown: all zero
      l.meta_bytes_per_tile = kernels::elem::kLogTileMetaBytes;
      l.payload_offset = tiles * l.meta_bytes_per_tile;
      l.payload_bytes = (h * static_cast<std::size_t>(bits) + 7) / 8;
      break;
    }
  }
  l.meta_bytes = tiles * l.meta_bytes_per_tile;
  l.row_bytes = std::max(l.payload_offset + l.payload_bytes, l.meta_offset + l.meta_bytes);
  return l;
}

std::size_t encoded_row_bytes(Format f, int hidden) { return row_layout(f, hidden).row_bytes; }

}  // namespace epcomm
