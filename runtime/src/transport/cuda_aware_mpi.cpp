// SPDX-License-Identifier: MIT
#include "transport/cuda_aware_mpi.hpp"

#include <mpi.h>
#ifdef EPCOMM_HAVE_MPI_EXT_H
#include <mpi-ext.h>
#endif

namespace epcomm::detail {

CudaAwareMpi query_cuda_aware_mpi() {
  CudaAwareMpi found;
#if defined(MPIX_CUDA_AWARE_SUPPORT)
  found.header = true;
  found.built = MPIX_CUDA_AWARE_SUPPORT == 1;
  // Declared whenever the macro is, whatever its value.
  found.running = MPIX_Query_cuda_support() == 1;
#endif
  return found;
}

std::string CudaAwareMpi::describe() const {
  if (!header) return "the MPI library has no CUDA extension (no MPIX_CUDA_AWARE_SUPPORT in <mpi-ext.h>)";
  return std::string("MPIX_CUDA_AWARE_SUPPORT ") + (built ? "1" : "0") + " at build, MPIX_Query_cuda_support() " +
         (running ? "1" : "0") + " at run time";
}

}  // namespace epcomm::detail
