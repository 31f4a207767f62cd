// epcomm — element types, wire formats and memory spaces.
#pragma once

#include <cstddef>
#include <cstdint>

namespace epcomm {

// Element type of tensors the caller hands in or gets back (tokens, expert outputs,
// combined outputs).
enum class DType : int { kF32 = 0, kBF16 = 1 };

// Encoding of a row on the wire and in the dispatch output. The exchange moves
// encoded rows as opaque bytes; kernels/ owns the codecs. FP8 and LogFMT join this
// list in the codec issue without changing the exchange.
enum class Format : int { kF32 = 0, kBF16 = 1 };

// Where a buffer lives. Only kHost is served today; kDevice is the seam for
// GPU-resident exchanges and is rejected with ErrorCode::kUnsupported.
enum class MemorySpace : int { kHost = 0, kDevice = 1 };

std::size_t dtype_size(DType t) noexcept;
const char* to_string(DType t) noexcept;
const char* to_string(Format f) noexcept;
// Parses "f32"/"fp32"/"bf16"; throws Error(kInvalidArgument) otherwise.
DType parse_dtype(const char* name);
Format parse_format(const char* name);

// Bytes one row of `hidden` elements takes in format `f` (including any scales).
std::size_t encoded_row_bytes(Format f, int hidden);

}  // namespace epcomm
