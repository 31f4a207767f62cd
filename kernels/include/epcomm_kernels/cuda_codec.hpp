// SPDX-License-Identifier: MIT
// CUDA implementations of the row codecs (epcomm/formats.hpp): the same bytes and
// the same floats as the CPU codec table (codec.hpp), bit for bit, computed on the
// GPU over many rows at once. No CUDA type appears here, so any C++17 translation
// unit can include this header: device pointers are void* (or typed pointers to
// device memory), streams are a cudaStream_t passed as void* (nullptr: the legacy
// default stream).
//
// Every call only enqueues work on `stream` and returns; results are ready once the
// stream is synchronised. A failing CUDA call throws Error(kSystem) naming the call
// and cudaGetErrorString; a bad argument throws Error(kInvalidArgument). Rows are
// `hidden` elements; encoded rows are encoded_row_bytes(format, hidden) bytes and lie
// back to back, as the exchange sends them.
#pragma once

#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>

#include <cstdint>
#include <vector>

namespace epcomm::kernels::cuda {

// True if the CUDA runtime sees at least one device. Never throws: no driver, no
// device or a broken installation all read as false.
bool cuda_device_available() noexcept;

// dst row r = encode(src row r) for r < rows; src is [rows, hidden] of src_type.
// *bad_index (device memory, one int64) becomes the smallest r * hidden + c over
// the elements the format cannot represent (LogFMT: NaN and infinity), or -1; such
// rows are unusable. bad_index may be nullptr only for formats that cannot fail
// (all but LogFMT).
void encode_rows(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
                 int64_t* bad_index, void* stream);

// dst row r = decode(src row r) as dst_type, for r < rows.
void decode_rows(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type,
                 void* stream);

// Fused gather + encode (dispatch send side): dst row i = encode(src row
// src_rows[i]) for i < count; src is a [tokens, hidden] matrix of src_type and
// src_rows (device, int32) holds token indices, repeats allowed. *bad_index as for
// encode_rows, with i (the position in dst) as the row.
void pack_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* src_rows, int64_t count,
               void* dst, int64_t* bad_index, void* stream);

// Fused decode + scatter (dispatch receive side): dst row dst_rows[i] =
// decode(src row i) as dst_type, for i < count. dst_rows (device, int32) must not
// repeat a row; rows of dst not named keep their contents.
void unpack_rows(Format format, const void* src, int64_t count, int hidden, const int32_t* dst_rows, void* dst,
                 DType dst_type, void* stream);

// Decode + weighted accumulate (combine): for every destination row d < dst_rows
// and j in [source_offsets[d], source_offsets[d + 1]) in increasing order,
//   acc[d] += weights[s] * decode(src row s),  s = sources[j],
// in FP32 with the multiply and the add rounded separately. This is the CPU loop
// "for i in increasing order: acc[dst_index[i]] += weight[i] * decode(row i)"
// exactly when each destination lists its sources in increasing order, which
// combine_sources() below produces. source_offsets has dst_rows + 1 entries; all
// three index arrays and acc are device memory. Rows with no source are not touched.
void accumulate_rows(Format format, const void* src, int hidden, const int32_t* source_offsets,
                     const int32_t* sources, const float* weights, int64_t dst_rows, float* acc, void* stream);

// The sources of each destination (host memory, CSR), from a destination index per
// source row: a stable counting sort, so sources keep increasing order.
struct CombineSources {
  std::vector<int32_t> offsets;  // dst_rows + 1 entries
  std::vector<int32_t> sources;  // source rows, grouped by destination
};
// Throws Error(kInvalidArgument) for an index outside [0, dst_rows).
CombineSources combine_sources(const int32_t* dst_index, int64_t count, int64_t dst_rows);

}  // namespace epcomm::kernels::cuda
