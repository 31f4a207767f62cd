// SPDX-License-Identifier: MIT
// Sizes and names of the element types and memory spaces (epcomm/types.hpp). Part
// of epcomm_core: the codecs and the runtime speak the same vocabulary. The
// parsers, whose errors name the rank, are the runtime's (parse_types.cpp).
#include <epcomm/types.hpp>

namespace epcomm {

std::size_t dtype_size(DType t) noexcept { return t == DType::kF32 ? 4 : 2; }

const char* to_string(DType t) noexcept { return t == DType::kF32 ? "f32" : "bf16"; }
const char* to_string(MemorySpace m) noexcept { return m == MemorySpace::kDevice ? "device" : "host"; }

}  // namespace epcomm
