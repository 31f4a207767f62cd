// SPDX-License-Identifier: MIT
// The parsers of types.hpp and formats.hpp. In the runtime, not in epcomm_core
// (types.cpp): their errors name the rank, which only the runtime's log knows.
#include <epcomm/types.hpp>

#include <string>

#include "util/check.hpp"

namespace epcomm {

DType parse_dtype(const char* name) {
  std::string s = name ? name : "";
  if (s == "f32" || s == "fp32" || s == "float32") return DType::kF32;
  if (s == "bf16" || s == "bfloat16") return DType::kBF16;
  EPCOMM_FAIL(kInvalidArgument, "unknown dtype '" << s << "' (expected f32 or bf16)");
}

Format logfmt_format(int bits) {
  EPCOMM_REQUIRE(bits >= 3 && bits <= 16, kInvalidArgument, "LogFMT bits=" << bits << " must be in [3, 16]");
  return static_cast<Format>(static_cast<int>(Format::kLogFMT3) + bits - 3);
}

Format parse_format(const char* name) {
  const std::string s = name ? name : "";
  if (s == "fp32") return Format::kF32;
  for (Format f : {Format::kF32, Format::kBF16, Format::kFP8, Format::kFP8UE8M0}) {
    if (s == to_string(f)) return f;
  }
  if (s.rfind("logfmt", 0) == 0 && s.size() > 6 && s.size() <= 8 &&
      s.find_first_not_of("0123456789", 6) == std::string::npos) {
    const int bits = std::stoi(s.substr(6));
    if (bits >= 3 && bits <= 16) return logfmt_format(bits);
  }
  EPCOMM_FAIL(kInvalidArgument,
              "unknown format '" << s << "' (expected f32, bf16, fp8, fp8-ue8m0 or logfmt<n> with n in [3, 16])");
}

}  // namespace epcomm
