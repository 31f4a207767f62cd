// SPDX-License-Identifier: MIT
// Collective agreement on a local step: every rank says whether it succeeded and
// all learn who did not, so they can fail (or fall back) together instead of some
// waiting in a later collective for a rank that gave up.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

namespace epcomm::detail {

// Collective over comm. Returns "1, 3": the ranks whose ok was false, each written
// as label(rank) (default: the rank in comm); empty when all succeeded.
std::string ranks_that_failed(MPI_Comm comm, bool ok, const std::function<int(int)>& label = {});

}  // namespace epcomm::detail
