// SPDX-License-Identifier: MIT
// The blocks one operation sends over the inter-node tier, at most one per
// destination node, each sent once its receiver may take it (at once over MPI;
// over verbs after the receiver's clear-to-send).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "exchange/internode.hpp"

namespace epcomm::detail {

class OutgoingBlocks {
 public:
  void reset(int num_nodes);
  // The block for `node`: `bytes` (> 0) at `offset` of the send region.
  void add(int node, std::size_t offset, std::size_t bytes);

  struct Target {
    InterNode& net;
    Transfers& transfers;
    BlockKind kind;
    RegionId from;  // the packed blocks, one per destination node
    RegionId to;    // the receivers' region: a block per source node (block_offset)
    int my_node;
    std::size_t block_bytes;  // of a receive block (see block_offset)
    uint64_t seq;
  };
  // Sends every unsent block whose node passes cleared(node) (asked once per
  // unsent block per call); adds the bytes sent to *bytes_sent. True if any went.
  bool send_cleared(const Target& to, const std::function<bool(int)>& cleared, int64_t* bytes_sent);
  bool all_sent() const { return unsent_ == 0; }
  // Nodes whose block still waits for clearance, as "5 (ready signal)" with the
  // receiving rank given by rank_of(node).
  std::string waiting(const std::function<int(int)>& rank_of, const char* what) const;

 private:
  std::vector<std::size_t> offset_, bytes_;
  std::vector<char> sent_;
  int unsent_ = 0;
};

}  // namespace epcomm::detail
