// Timing rules shared by the epcomm and baseline paths: every timed region starts
// with a barrier so all ranks enter together, each rank measures its own elapsed
// MPI_Wtime, and a phase's time is the median over iterations of the slowest rank
// (an exchange is done only when its last rank is).
#pragma once

#include "mpi_check.hpp"

#include <mpi.h>

#include <vector>

namespace epcomm_bench {

// Collective over comm. Returns this rank's seconds spent in f().
template <class F>
double barrier_timed(MPI_Comm comm, F&& f) {
  mpi_check(MPI_Barrier(comm), "MPI_Barrier");
  const double start = MPI_Wtime();
  f();
  return MPI_Wtime() - start;
}

// This rank's per-iteration times of one phase.
class PhaseSamples {
 public:
  void add(double seconds) { local_.push_back(seconds); }
  // Collective: one MPI_Allreduce(MAX) over all iterations at once (none inside the
  // timed loop), then the median across iterations, in microseconds.
  double median_of_max_us(MPI_Comm comm) const;

 private:
  std::vector<double> local_;
};

struct PhaseTimes {
  double dispatch_us = 0;
  double combine_us = 0;
};

// Collective: warmup + iters iterations of a path (EpcommPath, BaselinePath); only
// dispatch and combine are inside the timed regions, and only after the warmup.
template <class Path>
PhaseTimes time_path(MPI_Comm comm, Path& path, int warmup, int iters) {
  PhaseSamples dispatch;
  PhaseSamples combine;
  for (int i = 0; i < warmup + iters; ++i) {
    const double d = barrier_timed(comm, [&] { path.dispatch(); });
    path.run_experts();
    const double c = barrier_timed(comm, [&] { path.combine(); });
    path.end_iteration();
    if (i >= warmup) {
      dispatch.add(d);
      combine.add(c);
    }
  }
  return {dispatch.median_of_max_us(comm), combine.median_of_max_us(comm)};
}

}  // namespace epcomm_bench
