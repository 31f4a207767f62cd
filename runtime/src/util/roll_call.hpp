// SPDX-License-Identifier: MIT
// A bounded all-gather that names the ranks that did not come.
//
// MPI's collectives cannot say who is missing, and a blocking one waits for ever
// for a rank that never arrives. roll_call() gathers one record from every rank by
// point-to-point messages in two rounds, each bounded by the timeout: every rank
// sends its record to every rank; then, holding all records, every rank sends
// "ready" to every rank. The second round stops a rank that arrives after its peers
// gave up (it finds their records, already sent, but no "ready") from going on into
// the next collective step alone. Records carry the attempt number, so one left
// over from an earlier attempt that timed out is recognised and dropped.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace epcomm::detail {

// Collective over comm (uses tags `tag` and `tag + 1`, which nothing else on comm
// may use). Returns every rank's record, `bytes` each, in rank order. Throws
// Error(kTimeout) naming `step` and the ranks (label(r)) missing after timeout_s;
// sets *left_messages when messages may remain in flight on comm afterwards.
// Tests req until it completes (true) or timeout_s pass (false; the request stays
// pending: collectives cannot be cancelled).
bool wait_within(MPI_Request& req, double timeout_s);
// The same, calling `check` (which may throw) between tests.
bool wait_within(MPI_Request& req, double timeout_s, const std::function<void()>& check);

std::vector<std::byte> roll_call(MPI_Comm comm, int tag, const void* mine, std::size_t bytes, uint64_t attempt,
                                 double timeout_s, const char* step, bool* left_messages);

}  // namespace epcomm::detail
