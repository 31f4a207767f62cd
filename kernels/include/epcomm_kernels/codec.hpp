// SPDX-License-Identifier: MIT
// The codec seam: how a row of `hidden` elements is encoded for the wire and for
// the dispatch output, and how it is decoded or accumulated. The exchange moves
// encoded rows as opaque bytes of row_bytes(hidden); a format is a Codec, the
// exchange does not know which. Layouts: epcomm/formats.hpp, docs/formats.md.
#pragma once

#include <epcomm/types.hpp>

#include <cstddef>

namespace epcomm::kernels {

struct Codec {
  Format format;
  // Bytes of one encoded row (payload plus any per-tile metadata).
  std::size_t (*row_bytes)(int hidden);
  // Encodes `hidden` elements of type `src_type` from `src` into `dst`. Returns the
  // column of the first element the format cannot represent (LogFMT has no NaN or
  // infinity), the row then being unusable, or -1.
  int (*encode_row)(const void* src, DType src_type, int hidden, void* dst);
  // Decodes an encoded row into `hidden` elements of type `dst_type`. Any byte
  // string of row_bytes(hidden) decodes without reading or writing out of bounds.
  void (*decode_row)(const void* src, int hidden, void* dst, DType dst_type);
  // acc[h] += weight * decoded[h], in FP32.
  void (*accumulate_row)(const void* src, int hidden, float weight, float* acc);
};

// Throws Error(kInvalidArgument) for a value that is no Format.
const Codec& codec_for(Format format);
// The same codecs always running the scalar reference tile kernels, whatever
// EPCOMM_KERNELS says: what tests and benchmarks compare the vectorised rows with.
const Codec& reference_codec_for(Format format);

// The format whose encoding is the plain array of a dtype (so rows of that dtype
// can be read, accumulated and written through the same table).
Format plain_format(DType dtype);

}  // namespace epcomm::kernels
