// SPDX-License-Identifier: MIT
#include "node_peer_liveness.hpp"

#include <cstdio>
#include <cstring>

#include "util/check.hpp"

namespace epcomm::detail {

bool process_gone(int pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return true;
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  // "pid (comm) S ...": the state follows the last ')' (comm may hold any byte).
  const char* close = static_cast<const char*>(memrchr(buf, ')', n));
  if (close == nullptr || close + 2 >= buf + n) return false;  // unreadable: assume alive
  const char state = close[2];
  return state == 'Z' || state == 'X' || state == 'x';
}

void throw_if_node_peer_gone(const GroupState& group, const std::string& during) {
  for (int peer = 0; peer < static_cast<int>(group.node_pids.size()); ++peer) {
    if (peer == group.local_rank || !process_gone(group.node_pids[peer])) continue;
    EPCOMM_FAIL(kPeerLost, "rank " << group.global_rank(group.node, peer) << " (pid " << group.node_pids[peer]
                                   << ", on this node) is gone (killed or exited) " << during);
  }
}

}  // namespace epcomm::detail
