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
#include <functional>
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

// Collective: warmup + iters iterations of every path, alternating every
// iteration, so that a slow spell of a shared machine slows every side of the
// comparison instead of one. The order rotates from one iteration to the next, so
// each path follows each other path equally often (what ran just before a path --
// the baseline's large buffers, say -- changes its time). Times in the order of
// the paths.
template <class... Paths>
std::array<PhaseTimes, sizeof...(Paths)> time_paths_interleaved(MPI_Comm comm, int warmup, int iters,
                                                                 Paths&... paths) {
  constexpr std::size_t n = sizeof...(Paths);
  std::array<PathSamples, n> samples;
  const std::array<std::function<void(bool, PathSamples&)>, n> run{
      [&comm, &paths](bool record, PathSamples& s) { time_iteration(comm, paths, record, s); }...};
  for (int i = 0; i < warmup + iters; ++i) {
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t p = (static_cast<std::size_t>(i) + k) % n;
      run[p](i >= warmup, samples[p]);
    }
  }
  std::array<PhaseTimes, n> times;
  for (std::size_t p = 0; p < n; ++p) times[p] = samples[p].spreads(comm);
  return times;
}

}  // namespace epcomm_bench
