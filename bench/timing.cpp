// SPDX-License-Identifier: MIT
#include "timing.hpp"

#include "mpi_check.hpp"

#include <algorithm>

namespace epcomm_bench {

double PhaseSamples::median_of_max_us(MPI_Comm comm) const {
  std::vector<double> slowest(local_.size());
  mpi_check(MPI_Allreduce(local_.data(), slowest.data(), static_cast<int>(local_.size()),
                          MPI_DOUBLE, MPI_MAX, comm),
            "MPI_Allreduce(iteration times)");
  std::sort(slowest.begin(), slowest.end());
  const std::size_t n = slowest.size();
  const double median = n % 2 ? slowest[n / 2] : 0.5 * (slowest[n / 2 - 1] + slowest[n / 2]);
  return median * 1e6;
}

}  // namespace epcomm_bench
