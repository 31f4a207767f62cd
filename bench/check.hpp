// SPDX-License-Identifier: MIT
// Correctness of epcomm against the baseline, for one configuration. Each local
// check returns the first mismatch as a message, or "" when there is none.
#pragma once

#include "baseline.hpp"
#include "data.hpp"

#include <epcomm/exchange.hpp>

#include <mpi.h>

#include <string>
#include <vector>

namespace epcomm_bench {

// (a) Dispatch: every real row epcomm delivered to this rank, in epcomm's order
// (local expert, then source rank, then source token), must be the row the
// baseline delivered for the same (source rank, source token, expert): same
// payload bytes (the baseline row encoded in epcomm's wire `format`, when that is
// not the baseline's own) and the same gating weight, and nothing missing or extra.
// `reference` must have run dispatch with rows of epcomm's wire format, and
// `sources` must come from its exchange_sources(). Padding rows must say so
// (source -1, weight 0), and segments must start at multiples of `alignment`.
std::string check_dispatch(const epcomm::DispatchHandle& route, const BaselineExchange& reference,
                           const std::vector<RowSource>& sources, int alignment, epcomm::Format format);

// (b) Combine: epcomm's out (config dtype) against the baseline's FP32 sum, per
// element, within the tolerance explained in check.cpp (widened by the error bounds
// of the wire formats).
std::string check_combine(const void* epcomm_out, const std::vector<float>& baseline_out, const RankData& data,
                          epcomm::Format dispatch_format, epcomm::Format combine_format);

// Collective: true when no rank found a mismatch. Otherwise `failure` gets the
// lowest failing rank's message (on every rank; only rank 0 prints it).
bool all_ranks_pass(MPI_Comm comm, const std::string& local_failure, std::string& failure);

}  // namespace epcomm_bench
