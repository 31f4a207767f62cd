// SPDX-License-Identifier: MIT
// Operation agreement: every rank must begin the same operations in the same order.
//
// Each begun operation sends every other rank a small header (kind, sequence number,
// shape) on a tag of its own; messages from one rank arrive in the order it sent
// them. Each rank compares every peer's header for sequence number n with its own
// operation n as soon as both exist, so ranks that began different operations fail
// at once, naming both ranks and both operations, instead of waiting for a timeout.
#pragma once

#include <mpi.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace epcomm::detail {

struct OpHeader {
  enum Kind : int32_t { kDispatch = 1, kCombine = 2 };
  int32_t kind = 0;
  // dispatch: the dispatch whose layout it reuses (low 31 bits of its sequence
  // number; DispatchLayout), 0 when it exchanges its own
  int32_t layout_of = 0;
  uint64_t seq = 0;
  int64_t shape = 0;  // dispatch: the slot; combine: the dispatch it combines

  bool operator==(const OpHeader&) const = default;
  std::string describe() const;  // "dispatch 3", "dispatch 5 on the layout of dispatch 3", "combine 4 of dispatch 3"
};

class OpAgreement {
 public:
  OpAgreement(MPI_Comm comm, int tag, int rank, int size);
  ~OpAgreement();
  OpAgreement(const OpAgreement&) = delete;
  OpAgreement& operator=(const OpAgreement&) = delete;

  // Records this rank's operation and sends its header to every rank.
  void announce(const OpHeader& mine);
  // Compares what arrived; returns a message naming both ranks and both operations
  // on the first disagreement. Never blocks.
  std::optional<std::string> poll();

 private:
  std::optional<std::string> compare(int peer, const OpHeader& theirs);

  MPI_Comm comm_;
  int tag_, rank_, size_;
  std::vector<OpHeader> incoming_;      // [size]: one posted receive per peer
  std::vector<MPI_Request> receives_;   // [size]
  std::vector<int> arrived_;            // MPI_Testsome's indices
  std::map<uint64_t, OpHeader> mine_;   // this rank's operations not yet matched by every peer
  std::map<uint64_t, int> matched_;     // peers that agreed, per sequence number
  std::vector<std::map<uint64_t, OpHeader>> early_;  // [size]: peers' headers of operations not begun here yet
  struct Sent {
    OpHeader header;
    std::vector<MPI_Request> requests;
  };
  std::vector<std::unique_ptr<Sent>> sent_;
};

}  // namespace epcomm::detail
