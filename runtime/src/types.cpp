#include <epcomm/types.hpp>

#include <string>

#include "epcomm_kernels/codec.hpp"
#include "util/check.hpp"

namespace epcomm {

std::size_t dtype_size(DType t) noexcept { return t == DType::kF32 ? 4 : 2; }

const char* to_string(DType t) noexcept { return t == DType::kF32 ? "f32" : "bf16"; }

const char* to_string(Format f) noexcept { return f == Format::kF32 ? "f32" : "bf16"; }

DType parse_dtype(const char* name) {
  std::string s = name ? name : "";
  if (s == "f32" || s == "fp32" || s == "float32") return DType::kF32;
  if (s == "bf16" || s == "bfloat16") return DType::kBF16;
  EPCOMM_FAIL(kInvalidArgument, "unknown dtype '" << s << "' (expected f32 or bf16)");
}

Format parse_format(const char* name) {
  std::string s = name ? name : "";
  if (s == "f32" || s == "fp32") return Format::kF32;
  if (s == "bf16") return Format::kBF16;
  EPCOMM_FAIL(kInvalidArgument, "unknown format '" << s << "' (expected f32 or bf16)");
}

std::size_t encoded_row_bytes(Format f, int hidden) {
  return kernels::codec_for(f).row_bytes(hidden);
}

}  // namespace epcomm
