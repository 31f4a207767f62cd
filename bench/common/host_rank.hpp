// SPDX-License-Identifier: MIT
// This rank's index among the ranks of MPI_COMM_WORLD on its host. A GPU bench runs
// each rank on GPU (this index mod the host's GPU count): emulated nodes split a
// host's ranks, not its GPUs. Collective over MPI_COMM_WORLD.
#pragma once

#include <mpi.h>

#include <stdexcept>

namespace epcomm_bench {

inline int rank_within_host() {
  MPI_Comm host;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host) != MPI_SUCCESS) {
    throw std::runtime_error("MPI_Comm_split_type failed");
  }
  int rank = 0;
  MPI_Comm_rank(host, &rank);
  MPI_Comm_free(&host);
  return rank;
}

}  // namespace epcomm_bench
