// SPDX-License-Identifier: MIT
// The collective step every exchange's construction starts with: every rank
// compares every rank's config, so a mismatch fails all of them at once, and the
// ranks agree on the exchange's id and on a communicator of the group's pool.
#pragma once

#include <cstdint>
#include <span>

#include "group_state.hpp"

namespace epcomm::detail {

// One compared value of a config, named in the mismatch error.
struct ConfigField {
  const char* name;
  int64_t value;
};

// What the ranks agree on besides the config: the exchange's id (rank 0's random
// number: tags and failure messages of this exchange differ from an earlier one's on
// the same communicator) and which communicator of the group's pool it takes.
struct ConstructionAgreement {
  uint64_t id;
  int comm_index;
};

// Collective over g.comm, bounded by the group's timeout (roll_call). Throws
// Error(kMismatch) "<config_name> differs across ranks: rank R has F=V but this rank
// has W" for the first field that differs; `construction` names the step in a
// timeout ("Exchange construction").
ConstructionAgreement agree_on_construction(GroupState& g, const char* config_name, const char* construction,
                                            std::span<const ConfigField> fields);

}  // namespace epcomm::detail
