// SPDX-License-Identifier: MIT
// Whether the MPI library can send and receive GPU memory itself (CUDA-aware MPI),
// by Open MPI's extension <mpi-ext.h>: MPIX_CUDA_AWARE_SUPPORT says what the
// library built against was configured with, MPIX_Query_cuda_support() what the
// library running now can do (the two differ when another build is loaded at run
// time). The run-time answer decides. Other MPI libraries (no such extension) are
// taken as not CUDA-aware.
#pragma once

#include <string>

namespace epcomm::detail {

struct CudaAwareMpi {
  bool header = false;   // <mpi-ext.h> declares MPIX_CUDA_AWARE_SUPPORT (Open MPI)
  bool built = false;    // MPIX_CUDA_AWARE_SUPPORT is 1
  bool running = false;  // MPIX_Query_cuda_support() returned 1
  bool present() const { return running; }
  // "MPIX_CUDA_AWARE_SUPPORT 0 at build, MPIX_Query_cuda_support() 0 at run time".
  std::string describe() const;
};

// MPI must be initialised.
CudaAwareMpi query_cuda_aware_mpi();

}  // namespace epcomm::detail
