// SPDX-License-Identifier: MIT
// epcomm — errors.
//
// Every failure the library reports is an epcomm::Error: a std::runtime_error that
// carries a machine-readable ErrorCode. Messages always start with "epcomm rank R:"
// and name the offending value (and, for timeouts, the phase and the peers still
// outstanding), so a log line from one rank of a large job is enough to act on.
#pragma once

#include <epcomm/export.hpp>

#include <stdexcept>
#include <string>

namespace epcomm {

enum class ErrorCode : int {
  kInvalidArgument = 1,  // a bad value passed by this rank (expert id, size, option)
  kMismatch = 2,         // ranks disagree (config, hidden size, operation order)
  kBufferTooSmall = 3,   // an output or declared maximum cannot hold the result
  kTimeout = 4,          // a peer stopped answering within the group's timeout
  kUnsupported = 5,      // valid request this build or format cannot serve
  kSystem = 6,           // an OS or MPI call failed
  kGroupFailed = 7,      // the group saw an earlier error and can no longer be used
  kDataCorrupted = 8,    // a block's checksum did not match (ExchangeConfig::checksum)
  kPeerLost = 9,         // a node peer's process is gone (killed or exited)
};

EPCOMM_API const char* to_string(ErrorCode code) noexcept;

class EPCOMM_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

}  // namespace epcomm
