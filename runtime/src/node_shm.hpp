// SPDX-License-Identifier: MIT
// Shared memory among the ranks of one node: every rank creates one POSIX shm
// segment of the same size and maps its peers'. Names are unlinked as soon as all
// ranks have mapped them, so the memory lives exactly as long as the mappings: a
// rank that exits or is killed afterwards leaves nothing behind in /dev/shm. A rank
// killed while the node maps its segments leaves its name until the survivors time
// out (bounded by the group's timeout), when they unlink every name of the node.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "group_state.hpp"

namespace epcomm::detail {

class NodeShm {
 public:
  // Collective over the node, each step bounded by the group's timeout. Throws
  // Error(kSystem) naming the segment and size when /dev/shm cannot hold it, and
  // Error(kTimeout) when a node peer stops on the way.
  NodeShm(GroupState& group, std::size_t bytes_per_rank, const char* purpose);
  ~NodeShm();
  NodeShm(const NodeShm&) = delete;
  NodeShm& operator=(const NodeShm&) = delete;

  std::byte* base(int local_rank) const { return bases_[local_rank]; }
  std::byte* mine() const { return bases_[local_rank_]; }
  std::size_t bytes_per_rank() const { return bytes_; }

 private:
  void unmap_all();

  std::vector<std::byte*> bases_;
  std::size_t bytes_ = 0;
  int local_rank_ = 0;
};

}  // namespace epcomm::detail
