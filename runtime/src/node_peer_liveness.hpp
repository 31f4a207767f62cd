// SPDX-License-Identifier: MIT
// Whether a node peer's process is gone (killed or exited), read from /proc.
//
// A dead rank sends nothing, so over the network its peers learn of it only by
// their timeout. Node peers share the host, so they can see it at once: the
// exchange checks its node peers' processes while it waits (every 10 ms at most)
// and fails naming the one that is gone, which then tells every other rank within
// a progress round. This matters only where the runtime keeps the survivors alive
// (Open MPI's orte_enable_recovery); by default it ends the whole job.
#pragma once

#include <chrono>
#include <string>

#include "group_state.hpp"

namespace epcomm::detail {

// True when /proc shows no live process `pid` (none, a zombie, or dead).
bool process_gone(int pid);

// Throws Error(kPeerLost) naming the first node peer of `group` whose process is
// gone, `during` saying what this rank was doing. Does nothing when the group
// could not see its node peers' processes (group.node_pids empty).
void throw_if_node_peer_gone(const GroupState& group, const std::string& during);

// The same, at most once per `every` (for polling loops).
class NodePeerWatch {
 public:
  explicit NodePeerWatch(const GroupState& group, std::chrono::milliseconds every = std::chrono::milliseconds(10))
      : group_(group), every_(every) {}
  // `during()` makes the message's end, only when a check runs.
  template <class During>
  void check(During&& during) {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return;
    next_ = now + every_;
    throw_if_node_peer_gone(group_, during());
  }

 private:
  const GroupState& group_;
  std::chrono::milliseconds every_;
  std::chrono::steady_clock::time_point next_{};
};

}  // namespace epcomm::detail
