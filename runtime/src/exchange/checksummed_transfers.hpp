// SPDX-License-Identifier: MIT
// Inter-node transfers that carry a block's checksum (ExchangeConfig::checksum),
// for the MPI tier (the verbs tier writes the checksum ahead of the block:
// verbs_internode.hpp). The operations take and check the checksums
// (block_checksums.hpp); this only carries them.
//
// A transfer given a checksum (a block's last chunk) travels as two messages on
// the block's tag: the data, then the checksum. MPI matches messages of one
// sender and tag in order, so the receiver posts the data receive and then the
// checksum receive. Such a transfer completes when both did.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <deque>
#include <string>
#include <vector>

#include "exchange/peer_requests.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

class ChecksummedTransfers final : public Transfers {
 public:
  // Posts the data and, if `sum` is given, a copy of it after the data.
  void send(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm, const BlockChecksum* sum);
  // Posts the data receive and, if `sum` is given, the checksum's into it.
  void receive(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm, BlockChecksum* sum);

  const std::vector<int>& test_some() override;
  bool all_done() const override { return data_.all_done() && sums_.all_done(); }
  int peer(int index) const override { return data_.peer(index); }
  std::string pending_peers() const override;
  bool abandon() override;

 private:
  void add_sum(MPI_Request r, int peer, PeerRequests::Kind kind);
  struct Entry {
    bool data_done = false, sum_done = false;
  };
  PeerRequests data_;                    // index i: transfer i
  PeerRequests sums_;                    // index i: the checksum of transfer sum_of_[i]
  std::vector<int> sum_of_;
  std::deque<BlockChecksum> sent_sums_;  // stable addresses: MPI reads them
  std::vector<Entry> entries_;
  std::vector<int> completed_;
};

}  // namespace epcomm::detail
