// The codec seam: how a row of `hidden` elements is encoded for the wire and for
// the dispatch output, and how it is decoded or accumulated. The exchange moves
// encoded rows as opaque bytes of row_bytes(hidden); adding a format (FP8, LogFMT)
// means adding a Codec, not touching the exchange.
#pragma once

#include <epcomm/types.hpp>

#include <cstddef>

namespace epcomm::kernels {

struct Codec {
  Format format;
  // Bytes of one encoded row (payload plus any per-tile scales).
  std::size_t (*row_bytes)(int hidden);
  // Encodes `hidden` elements of type `src_type` from `src` into `dst`.
  void (*encode_row)(const void* src, DType src_type, int hidden, void* dst);
  // Decodes an encoded row into `hidden` elements of type `dst_type`.
  void (*decode_row)(const void* src, int hidden, void* dst, DType dst_type);
  // acc[h] += weight * decoded[h], in FP32.
  void (*accumulate_row)(const void* src, int hidden, float weight, float* acc);
};

const Codec& codec_for(Format format);

// The format whose encoding is the plain array of a dtype (so rows of that dtype
// can be read, accumulated and written through the same table).
Format plain_format(DType dtype);

}  // namespace epcomm::kernels
