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

// Where a buffer lives: host memory, or CUDA memory of the exchange's GPU
// (ExchangeConfig::memory; builds without CUDA refuse kDevice with kUnsupported).
enum class MemorySpace : int { kHost = 0, kDevice = 1 };

EPCOMM_API std::size_t dtype_size(DType t) noexcept;
EPCOMM_API const char* to_string(DType t) noexcept;
EPCOMM_API const char* to_string(MemorySpace m) noexcept;  // "host", "device"
// Parses "f32"/"fp32"/"bf16"; throws Error(kInvalidArgument) otherwise.
EPCOMM_API DType parse_dtype(const char* name);

}  // namespace epcomm
