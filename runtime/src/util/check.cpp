// SPDX-License-Identifier: MIT
#include "util/check.hpp"

#include <mpi.h>

#include "util/log.hpp"

namespace epcomm::detail {

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

}  // namespace epcomm::detail
