// SPDX-License-Identifier: MIT
// The MPI tags of one exchange on its communicator. Tags start at a base drawn
// from the exchange's id: MPI reuses a freed communicator's context for a later one
// and delivers it messages still in flight to the old one (a peer's sends to a rank
// that failed), which must not match.
#pragma once

#include <cstdint>

namespace epcomm::detail {

// Phases of MPI traffic, folded into message tags; failure messages take the tag
// after every operation's.
enum : int { kTagLayout = 0, kTagDispatch = 1, kTagCombine = 2, kTagPhases = 3, kTagFailure = 4096 * kTagPhases,
             kTagHeader = kTagFailure + 1 };

// The tag of phase `phase` of operation `seq` in the exchange whose tags start at
// tag_base.
inline int exchange_tag(int tag_base, uint64_t seq, int phase) {
  return tag_base + static_cast<int>(seq % 4096) * kTagPhases + phase;
}

}  // namespace epcomm::detail
