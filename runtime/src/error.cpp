// SPDX-License-Identifier: MIT
// Names of error codes (epcomm/error.hpp). Part of epcomm_core: the codecs report
// errors with the same codes as the runtime.
#include <epcomm/error.hpp>

namespace epcomm {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kMismatch: return "mismatch across ranks";
    case ErrorCode::kBufferTooSmall: return "buffer too small";
    case ErrorCode::kTimeout: return "timeout";
    case ErrorCode::kUnsupported: return "unsupported";
    case ErrorCode::kSystem: return "system error";
    case ErrorCode::kGroupFailed: return "group failed";
    case ErrorCode::kDataCorrupted: return "data corrupted";
    case ErrorCode::kPeerLost: return "peer lost";
  }
  return "unknown error";
}

}  // namespace epcomm
