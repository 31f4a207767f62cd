// SPDX-License-Identifier: MIT
// One configuration of the sweep, end to end: data, routing, the check pass, the
// timed epcomm and baseline loops, and the reductions over ranks.
#pragma once

#include "args.hpp"
#include "report.hpp"

#include <epcomm/group.hpp>

#include <string>

namespace epcomm_bench {

struct ConfigOutcome {
  std::string skipped;        // not run, and why (e.g. the router rejects it)
  std::string note;           // something the reader of the table should know
  std::string check_failure;  // first mismatch when result.check is false
  Result result;
};

// Collective over the group; every rank returns the same outcome (rank 0 prints it).
ConfigOutcome run_config(const epcomm::Group& group, const BenchConfig& config,
                         const Options& options);

}  // namespace epcomm_bench
