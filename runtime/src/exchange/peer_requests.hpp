// SPDX-License-Identifier: MIT
// A set of outstanding MPI requests, each remembered with the peer it talks to, so
// a stalled exchange can name who has not answered: the layout exchange's, and the
// MPI inter-node tier's Transfers.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

#include "exchange/internode.hpp"

namespace epcomm::detail {

class PeerRequests final : public Transfers {
 public:
  enum class Kind { kRecv, kSend };

  PeerRequests() = default;
  ~PeerRequests() override;
  PeerRequests(const PeerRequests&) = delete;
  PeerRequests& operator=(const PeerRequests&) = delete;

  void add(MPI_Request request, int peer, Kind kind);
  // Tests every pending request; returns the indices (in add order) that completed
  // in this call.
  const std::vector<int>& test_some() override;
  bool all_done() const override { return pending_ == 0; }
  int peer(int index) const override { return peers_[index]; }
  Kind kind(int index) const { return kinds_[index]; }
  // "1 (receive), 3 (send)" for the requests still pending.
  std::string pending_peers() const override;
  // Cancels pending receives and releases pending sends; used when an exchange is
  // abandoned after an error so no request outlives its buffers' owner. A receive
  // MPI cannot cancel (already matched to a message whose data stopped coming, e.g.
  // over a cut link) would block MPI_Wait forever: after a short grace it is
  // released instead and abandon() returns false; its buffer must then stay valid
  // for the rest of the process (Op::abandon_requests sees to that).
  bool abandon() override;
  void clear();

 private:
  std::vector<MPI_Request> requests_;
  std::vector<int> peers_;
  std::vector<Kind> kinds_;
  std::vector<int> completed_scratch_;
  std::vector<int> newly_done_;
  int pending_ = 0;
};

}  // namespace epcomm::detail
