// SPDX-License-Identifier: MIT
// The one logging facility. Level from EPCOMM_LOG_LEVEL (error, warn, info, debug,
// trace; default warn). Lines go to stderr as "[epcomm rank R] LEVEL message".
#pragma once

#include <sstream>
#include <string>

namespace epcomm::log {

enum class Level : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3, kTrace = 4 };

// Throws Error(kInvalidArgument) for an unknown EPCOMM_LOG_LEVEL (until it is fixed:
// a failed first read is retried). Group's constructor reads it first, so a bad
// value surfaces there rather than inside some later log statement.
Level threshold();
bool enabled(Level level);
void write(Level level, const std::string& message);
// The rank printed in log lines and error messages. Set by Group; before that the
// world rank when MPI is initialised, else -1.
void set_rank(int rank);
int rank();

}  // namespace epcomm::log

#define EPCOMM_LOG(level, expr)                                        \
  do {                                                                 \
    if (::epcomm::log::enabled(::epcomm::log::Level::level)) {         \
      std::ostringstream epcomm_log_os_;                               \
      epcomm_log_os_ << expr;                                          \
      ::epcomm::log::write(::epcomm::log::Level::level,                \
                           epcomm_log_os_.str());                      \
    }                                                                  \
  } while (0)
