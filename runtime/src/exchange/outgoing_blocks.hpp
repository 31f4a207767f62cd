// SPDX-License-Identifier: MIT
// The blocks one operation sends over the inter-node tier, at most one per
// destination node, each sent once its receiver may take it (at once over MPI;
// over verbs after the receiver's clear-to-send), in the tier's chunks
// (InterNode::chunk_bytes(); the receiver posts the same, IncomingBlocks), each
// chunk as soon as the mover that packs the block has written it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "exchange/internode.hpp"
#include "exchange/row_mover.hpp"

namespace epcomm::detail {

class OutgoingBlocks {
 public:
  void reset(int num_nodes);
  // The block for `node`: `bytes` (> 0) at `offset` of the send region.
  void add(int node, std::size_t offset, std::size_t bytes);
  // The first `bytes` of node's block are written once the packing mover reached
  // `mark` (RowMover::mark): a block is sent as far as such notes say, so each
  // block needs them, in increasing order of bytes, the last covering it.
  void written_at(int node, std::size_t bytes, uint64_t mark);

  struct Target {
    InterNode& net;
    Transfers& transfers;
    BlockKind kind;
    RegionId from;  // the packed blocks, one per destination node
    RegionId to;    // the receivers' region: a block per source node (block_offset)
    int my_node;
    std::size_t block_bytes;  // of a receive block (see block_offset)
    uint64_t seq;
    RowMover& mover;  // the one that packs the blocks
    // With checksums: the checksum of node's block (`bytes` at `offset` of the
    // send region), asked once the mover wrote all of it (block_checksums.hpp);
    // empty without.
    std::function<BlockChecksum(int node, std::size_t offset, std::size_t bytes)> checksum;
  };
  // Sends every written, unsent chunk of every block whose node passes
  // cleared(node) (asked until it returns true once); adds the bytes sent to
  // *bytes_sent. True if any went.
  bool send_cleared(const Target& to, const std::function<bool(int)>& cleared, int64_t* bytes_sent);
  bool all_sent() const { return unsent_ == 0; }
  // Nodes whose block still waits for clearance, as "5 (ready signal)" with the
  // receiving rank given by rank_of(node).
  std::string waiting(const std::function<int(int)>& rank_of, const char* what) const;

 private:
  struct Note {
    std::size_t bytes;
    uint64_t mark;
  };
  std::vector<std::size_t> offset_, bytes_, sent_;  // sent_: bytes of the block sent
  std::vector<std::vector<Note>> notes_;            // per node, oldest first
  std::vector<std::size_t> written_;                // per node: bytes known written
  std::vector<char> cleared_;
  int unsent_ = 0;  // blocks not wholly sent
};

}  // namespace epcomm::detail
