// SPDX-License-Identifier: MIT
// epcomm-bench --mode low-latency: the LowLatencyExchange against the normal
// Exchange on the same data, interleaved iteration by iteration in one run, with
// per-call latency percentiles; --print-memory prints the bytes each
// configuration allocates per rank instead.
#pragma once

#include "args.hpp"

#include <epcomm/group.hpp>

namespace epcomm_bench {

// Collective over the group. Returns the exit status: 0, or 1 when a check failed.
int run_low_latency(const epcomm::Group& group, const Options& options);

}  // namespace epcomm_bench
