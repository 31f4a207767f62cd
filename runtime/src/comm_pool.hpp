// SPDX-License-Identifier: MIT
// The communicators of exchanges, kept for reuse instead of freed.
//
// Open MPI hands a message that arrives for a freed communicator to the next
// communicator given the same context id, in that communicator's per-peer message
// order: a stale message then takes the place of a real one, which is never matched
// (a hang), or the new communicator's setup crashes (mca_pml_ob1_add_comm). A peer
// may well still send to an exchange this rank dropped (a failure message, a layout
// for an operation this rank never began). So exchange communicators are never
// freed: an exchange returns its communicator to the pool of its ranks, and a later
// exchange over the same ranks (of this Group or a later one) takes it again, with
// tags of its own (Engine::mpi_tag) that stale messages cannot match. Which
// communicator an exchange takes is agreed across ranks at construction from every
// rank's free_mask().
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace epcomm::detail {

class CommPool {
 public:
  static constexpr int kMaxComms = 64;  // exchanges alive at once over one set of ranks

  // The pool of the ranks of `comm` (in its order), made on first use; it lives as
  // long as the process.
  static std::shared_ptr<CommPool> of_members(MPI_Comm comm);

  CommPool() = default;
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
