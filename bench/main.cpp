// SPDX-License-Identifier: MIT
// epcomm-bench: epcomm dispatch/combine against a per-(token, expert) BF16
// MPI_Alltoallv baseline, over a sweep of shapes. See README.md.
#include "args.hpp"
#include "low_latency_mode.hpp"
#include "report.hpp"
#include "run_config.hpp"

#include <epcomm/group.hpp>

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <optional>

namespace {

// One sweep over every configuration on one group; the exit status as run()'s.
int run_sweep(const epcomm::Group& group, const epcomm_bench::Options& options,
              std::optional<epcomm_bench::Report>& report);

// Returns the exit status: 0, 1 when a check failed, 2 for a bad command line.
int run(int argc, char** argv, int world_rank) {
  using namespace epcomm_bench;
  // Every rank parses the same argv and stops the same way: no abort needed.
  Options options;
  if (const std::optional<int> status = parse_args(argc, argv, world_rank == 0, options)) return *status;

  if (options.mode == "low-latency") {
    const epcomm::Group group(MPI_COMM_WORLD);  // EPCOMM_RANKS_PER_NODE emulates nodes
    return run_low_latency(group, options);
  }
  std::optional<Report> report;
  int status = 0;
  for (const epcomm::GroupOptions::Transport transport : options.transports) {
    epcomm::GroupOptions group_options;
    group_options.transport = transport;
    group_options.mover_threads = options.mover_threads;
    const epcomm::Group group(MPI_COMM_WORLD, group_options);  // EPCOMM_RANKS_PER_NODE emulates nodes
    status = std::max(status, run_sweep(group, options, report));
  }
  return status;
}

int run_sweep(const epcomm::Group& group, const epcomm_bench::Options& options,
              std::optional<epcomm_bench::Report>& report) {
  using namespace epcomm_bench;
  const bool root = group.rank() == 0;
  if (root && !report) {
    report.emplace(
        RunInfo{group.size(), group.num_nodes(), group.ranks_per_node(), group.progress_thread(),
                group.mover_threads(), &options});
  }
  int status = 0;
  for (const BenchConfig& config : expand(options)) {
    const ConfigOutcome outcome = run_config(group, config, options);
    if (!outcome.result.check && outcome.skipped.empty()) status = 1;
    if (!root) continue;
    if (!outcome.skipped.empty()) {
      report->note("skipped " + describe(config) + ": " + outcome.skipped);
      continue;
    }
    if (!outcome.note.empty()) report->note(outcome.note);
    report->row(outcome.result);
    if (!outcome.result.check) {
      std::fprintf(stderr, "epcomm-bench: check failed for %s: %s\n", describe(config).c_str(),
                   outcome.check_failure.c_str());
      std::fflush(stderr);
    }
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  // epcomm's background progress thread calls MPI beside this thread.
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  int status = 0;
  try {
    status = run(argc, argv, world_rank);
  } catch (const std::exception& e) {
    // Ranks that did not fail may be blocked in a collective; only an abort ends them.
    std::fprintf(stderr, "epcomm-bench rank %d: %s\n", world_rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
