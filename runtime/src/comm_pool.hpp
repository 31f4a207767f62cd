// SPDX-License-Identifier: MIT
// The communicators of a group's exchanges, kept for reuse instead of freed.
//
// Open MPI delivers a message that arrives for a freed communicator to the next
// communicator given the same context, and a peer may still be sending to an
// exchange this rank dropped (a failure message, a layout for an operation this rank
// never began). Exchanges therefore never free their communicator: they return it
// here, and a later exchange takes it again with tags of its own (Engine::mpi_tag),
// so a stale message stays unmatched. Which communicator an exchange takes is agreed
// across ranks at construction from every rank's free_mask().
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

namespace epcomm::detail {

class CommPool {
 public:
  static constexpr int kMaxComms = 64;  // exchanges alive at once on one group

  CommPool() = default;
  ~CommPool();  // frees them all, unless MPI is finalized
  CommPool(const CommPool&) = delete;
  CommPool& operator=(const CommPool&) = delete;

  // Bit i set: the i-th communicator made is free on this rank.
  uint64_t free_mask() const;
  int made() const { return static_cast<int>(comms_.size()); }
  // Takes communicator `index`, free on every rank; index == made() duplicates
  // `parent` first (collective, bounded by timeout_s). Throws on timeout or when
  // kMaxComms are in use.
  MPI_Comm take(int index, MPI_Comm parent, double timeout_s);
  void give_back(int index);

 private:
  std::vector<MPI_Comm> comms_;
  uint64_t in_use_ = 0;
};

}  // namespace epcomm::detail
