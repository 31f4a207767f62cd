// SPDX-License-Identifier: MIT
// Failed MPI calls become exceptions naming the call, so they reach main's
// report-and-abort path instead of depending on the communicator's error handler.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>

namespace epcomm_bench {

inline void mpi_check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string(call) + " failed: " + std::string(text, len));
}

}  // namespace epcomm_bench
