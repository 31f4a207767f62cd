// SPDX-License-Identifier: MIT
// CUDA row movement for the exchange's device path: rows addressed one pointer
// each, so one launch reaches rows in this GPU's memory, in node peers' memory
// (CUDA IPC mappings) and in pinned host memory alike. Like cuda_codec.hpp, no CUDA
// type appears here: streams are cudaStream_t passed as void*, and every call only
// enqueues work on its stream. The pointer, weight and offset arrays may be in
// device memory or in pinned, device-mapped host memory.
#pragma once

#include <epcomm/types.hpp>

#include <cstdint>

namespace epcomm::kernels::cuda {

// Loads every kernel of the CUDA codecs, of this header and of cuda_plan.hpp on
// the current device now. CUDA loads kernels lazily by default, at their first
// launch, and loading can wait for the device's running work: a first launch while
// a caller's stream is held for an exchange operation could then wait for its own
// operation. Call before holding any.
void preload_kernels();

// *dst[i] = *src[i], row_bytes bytes each, for i < count. 16-byte accesses when
// row_bytes and every pointer are 16-byte aligned (aligned16), else bytes.
void copy_row_list(const void* const* src, void* const* dst, int64_t count, int64_t row_bytes, bool aligned16,
                   void* stream);

// For every destination row d < dst_rows and j in [source_offsets[d],
// source_offsets[d + 1]) in increasing order:
//   acc[d] += weights[j] * decode(format, *src_rows[j])
// in FP32, the multiply and the add rounded separately (the CPU codecs'
// accumulate_row), starting from zero when from_zero (every row written) or from
// acc's contents (rows with no source untouched). acc is [dst_rows, hidden].
void accumulate_row_list(Format format, const void* const* src_rows, const float* weights, int hidden,
                         const int32_t* source_offsets, int64_t dst_rows, bool from_zero, float* acc, void* stream);

// dst row tokens[i] = encode(src row tokens[i]) for i < count: the dispatch's
// encode-once of every routed token, in place of the token in a staging matrix.
// *bad_index as for encode_rows, with i (the position in tokens) as the row.
void encode_token_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* tokens,
                       int64_t count, void* dst, int64_t* bad_index, void* stream);

// out[i] = CRC32C of the row_bytes bytes at rows[i], for i < count: the host's
// checksum (initial value and final xor 0xFFFFFFFF, polynomial 0x82F63B78), so a
// row hashed by one side is checked by the other.
void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, void* stream);

}  // namespace epcomm::kernels::cuda
