// SPDX-License-Identifier: MIT
// epcomm — element types, wire formats and memory spaces.
#pragma once

#include <cstddef>
#include <cstdint>

#include <epcomm/export.hpp>
#include <epcomm/formats.hpp>  // wire formats of rows

namespace epcomm {

// Element type of tensors the caller hands in or gets back (tokens, expert outputs,
// combined outputs).
enum class DType : int { kF32 = 0, kBF16 = 1 };

// Where a buffer lives. Only kHost is served today; kDevice is the seam for
// GPU-resident exchanges and is rejected with ErrorCode::kUnsupported.
enum class MemorySpace : int { kHost = 0, kDevice = 1 };

EPCOMM_API std::size_t dtype_size(DType t) noexcept;
EPCOMM_API const char* to_string(DType t) noexcept;
// Parses "f32"/"fp32"/"bf16"; throws Error(kInvalidArgument) otherwise.
EPCOMM_API DType parse_dtype(const char* name);

}  // namespace epcomm
