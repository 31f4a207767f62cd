// SPDX-License-Identifier: MIT
#include "util/check.hpp"

#include <mpi.h>

#include "util/log.hpp"

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
  }
  return "unknown error";
}

namespace detail {

void fail(ErrorCode code, const std::string& what) {
  std::string message = "epcomm rank " + std::to_string(log::rank()) + ": " + what;
  EPCOMM_LOG(kDebug, "throwing (" << to_string(code) << "): " << what);
  throw Error(code, message);
}

void fail_mpi(int mpi_rc, const char* call) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(mpi_rc, text, &len) != MPI_SUCCESS) len = 0;
  fail(ErrorCode::kSystem, std::string(call) + " failed: " + std::string(text, len));
}

}  // namespace detail
}  // namespace epcomm
