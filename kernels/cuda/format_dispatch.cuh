// SPDX-License-Identifier: MIT
// Runs a generic callable with the tile format type of a runtime Format, so each
// host entry point instantiates its kernel once per format.
#pragma once

#include <epcomm/error.hpp>

#include <string>
#include <utility>

#include "tile_formats.cuh"

namespace epcomm::kernels::cuda::detail {

template <class Fn, int... kI>
bool visit_logfmt(int bits, Fn& fn, std::integer_sequence<int, kI...>) {
  return ((bits == kI + 3 ? (fn(LogFmt<kI + 3>{}), true) : false) || ...);
}

template <class Fn>
void visit_format(Format format, Fn&& fn) {
  switch (format) {
    case Format::kF32: return fn(Plain<DType::kF32>{});
    case Format::kBF16: return fn(Plain<DType::kBF16>{});
    case Format::kFP8: return fn(Fp8<false>{});
    case Format::kFP8UE8M0: return fn(Fp8<true>{});
    default: break;
  }
  const int bits = logfmt_bits(format);
  if (!visit_logfmt(bits, fn, std::make_integer_sequence<int, 14>{})) {
    throw Error(ErrorCode::kInvalidArgument,
                "epcomm: unknown wire format value " + std::to_string(static_cast<int>(format)));
  }
}

// fn(F{}) for the tile format type of every Format: instantiates (and so lets a
// caller preload) a kernel for all of them.
template <class Fn>
void visit_every_format(Fn&& fn) {
  for (Format f : {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0}) visit_format(f, fn);
  for (int bits = 3; bits <= 16; ++bits) visit_format(logfmt_format(bits), fn);
}

// The kernels' view of row_layout(format, hidden).
inline Layout layout_of(Format format, int hidden) {
  const RowLayout l = row_layout(format, hidden);
  return Layout{static_cast<int64_t>(l.row_bytes), static_cast<int64_t>(l.payload_offset),
                static_cast<int64_t>(l.meta_offset)};
}

}  // namespace epcomm::kernels::cuda::detail
