// SPDX-License-Identifier: MIT
#include "timing.hpp"

#include "mpi_check.hpp"

#include <utility>

namespace epcomm_bench {

Spread PhaseSamples::spread_of_max_us(MPI_Comm comm) const {
  std::vector<double> slowest(local_.size());
  mpi_check(MPI_Allreduce(local_.data(), slowest.data(), static_cast<int>(local_.size()),
                          MPI_DOUBLE, MPI_MAX, comm),
            "MPI_Allreduce(iteration times)");
  return spread_of(std::move(slowest), 1e6);
}

}  // namespace epcomm_bench
