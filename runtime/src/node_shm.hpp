// SPDX-License-Identifier: MIT
// Shared memory among the ranks of one node: every rank creates an anonymous
// memory file (memfd_create) of the same size and its node peers map it through
// /proc/<pid>/fd/<fd>, which the node's ranks publish to each other. Nothing is
// ever named (in /dev/shm or elsewhere): the memory lives exactly as long as a
// descriptor or mapping of it, so a rank that exits or is killed at any point,
// construction included, leaves nothing behind. Node peers must run as one user
// and see each other's processes (one PID namespace), as MPI's launchers start them.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "group_state.hpp"

namespace epcomm::detail {

class NodeShm {
 public:
  // Collective over the node, each step bounded by the group's timeout. Throws
  // Error(kSystem) naming the size when the memory cannot be reserved (on every
  // rank of the node: the others name the rank), and Error(kTimeout) when a node
  // peer stops on the way.
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
