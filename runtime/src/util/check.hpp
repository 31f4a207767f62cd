// SPDX-License-Identifier: MIT
// Error raising. fail() builds the "epcomm rank R: ..." message and throws
// epcomm::Error; EPCOMM_REQUIRE checks a condition and streams a message naming the
// bad value; EPCOMM_MPI checks an MPI return code and names the call.
#pragma once

#include <epcomm/error.hpp>

#include <sstream>
#include <string>

namespace epcomm::detail {

[[noreturn]] void fail(ErrorCode code, const std::string& what);
[[noreturn]] void fail_mpi(int mpi_rc, const char* call);

}  // namespace epcomm::detail

#define EPCOMM_FAIL(code, expr)                                      \
  do {                                                               \
    std::ostringstream epcomm_fail_os_;                              \
    epcomm_fail_os_ << expr;                                         \
    ::epcomm::detail::fail(::epcomm::ErrorCode::code,                \
                           epcomm_fail_os_.str());                   \
  } while (0)

#define EPCOMM_REQUIRE(cond, code, expr) \
  do {                                   \
    if (!(cond)) EPCOMM_FAIL(code, expr);\
  } while (0)

#define EPCOMM_MPI(call)                                             \
  do {                                                               \
    int epcomm_mpi_rc_ = (call);                                     \
    if (epcomm_mpi_rc_ != MPI_SUCCESS)                               \
      ::epcomm::detail::fail_mpi(epcomm_mpi_rc_, #call);             \
  } while (0)
