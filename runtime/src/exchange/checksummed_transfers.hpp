// SPDX-License-Identifier: MIT
// Inter-node blocks with a CRC32C (ExchangeConfig::checksum), for the MPI tier
// (the verbs tier writes the checksum ahead of the block: verbs_internode.hpp).
//
// Each block travels as two messages on the block's tag: the data, then its
// checksum (its CRC32C: util/crc32c.hpp), taken by the sender just before sending. MPI matches messages of one
// sender and tag in order, so the receiver posts the data receive and then the
// checksum receive. A transfer completes when both did; a receive whose data does
// not hash to the checksum throws Error(kDataCorrupted) naming the sender, the block
// and the operation, which fails the group.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "exchange/peer_requests.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

// "dispatch block", "combine block": what a block is called in a mismatch.
inline const char* block_name(BlockKind kind) {
  return kind == BlockKind::kDispatch ? "dispatch block" : "combine block";
}

// Throws Error(kDataCorrupted) unless the `bytes` at `data`, the `what` ("dispatch
// block") of operation `seq` from rank `sender`, hash to `sent`. Both inter-node
// tiers check arrivals with it.
void verify_block(const BlockChecksum& sent, const std::byte* data, std::size_t bytes, const char* what, uint64_t seq,
                  int sender);

class ChecksummedTransfers final : public Transfers {
 public:
  // What a block is, for the mismatch message: "dispatch block", "combine block".
  struct Block {
    const char* what;
    uint64_t seq;
  };

  // Posts the data and its checksum (computed here for a send). flip_one_bit is
  // fault injection: a bit of the data is flipped after the checksum was taken.
  void send(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm, Block block, bool flip_one_bit);
  void receive(std::byte* data, std::size_t bytes, int peer, int tag, MPI_Comm comm, Block block);

  const std::vector<int>& test_some() override;
  bool all_done() const override { return data_.all_done() && sums_.all_done(); }
  int peer(int index) const override { return data_.peer(index); }
  std::string pending_peers() const override { return data_.pending_peers(); }
  bool abandon() override;

 private:
  struct Entry {
    std::byte* data;  // receive: where the block lands (null for sends)
    std::size_t bytes;
    Block block;
    bool data_done = false, sum_done = false;
  };
  PeerRequests data_, sums_;        // index i of both: transfer i
  std::deque<BlockChecksum> checksums_;  // stable addresses: MPI writes or reads them
  std::vector<Entry> entries_;
  std::vector<int> completed_;
};

}  // namespace epcomm::detail
