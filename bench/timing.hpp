// SPDX-License-Identifier: MIT
// Timing rules shared by the epcomm and baseline paths: every timed region starts
// with a barrier so all ranks enter together, each rank measures its own elapsed
// MPI_Wtime, and a phase's time per iteration is that of the slowest rank (an
// exchange is done only when its last rank is); reports give the order statistics
// of those times over iterations.
#pragma once

#include "common/stats.hpp"
#include "mpi_check.hpp"

#include <mpi.h>

#include <array>
#include <cstddef>
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
  // timed loop), then min, p10, median, p90 and max across iterations, in microseconds.
  Spread spread_of_max_us(MPI_Comm comm) const;

 private:
  std::vector<double> local_;
};

struct PhaseTimes {
  Spread dispatch_us;
  Spread combine_us;
};

// Samples of one path's dispatch and combine.
struct PathSamples {
  PhaseSamples dispatch;
  PhaseSamples combine;
  PhaseTimes spreads(MPI_Comm comm) const {
    return {dispatch.spread_of_max_us(comm), combine.spread_of_max_us(comm)};
  }
};

// One iteration of a path (EpcommPath, BaselinePath): only dispatch and combine are
// inside the timed regions; samples are kept only when `record`.
template <class Path>
void time_iteration(MPI_Comm comm, Path& path, bool record, PathSamples& samples) {
  const double d = barrier_timed(comm, [&] { path.dispatch(); });
  path.run_experts();
  const double c = barrier_timed(comm, [&] { path.combine(); });
  path.end_iteration();
  if (record) {
    samples.dispatch.add(d);
    samples.combine.add(c);
  }
}

// Collective: warmup + iters iterations of every path, alternating path by path
// within each iteration, so that a slow spell of a shared machine slows every side
// of the comparison instead of one. Returns the paths' times in argument order.
template <class... Paths>
std::array<PhaseTimes, sizeof...(Paths)> time_paths_interleaved(MPI_Comm comm, int warmup, int iters,
                                                                 Paths&... paths) {
  std::array<PathSamples, sizeof...(Paths)> samples;
  for (int i = 0; i < warmup + iters; ++i) {
    std::size_t k = 0;
    (time_iteration(comm, paths, i >= warmup, samples[k++]), ...);
  }
  std::array<PhaseTimes, sizeof...(Paths)> times;
  for (std::size_t k = 0; k < times.size(); ++k) times[k] = samples[k].spreads(comm);
  return times;
}

}  // namespace epcomm_bench
