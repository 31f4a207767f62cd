// SPDX-License-Identifier: MIT
// The blocks one operation receives over the inter-node tier, at most one per
// source node, each posted as the chunks its sender sends it in
// (InterNode::chunk_bytes()), so the operation can act on each chunk as it lands
// (with device memory: copy it to the GPU while later chunks are in flight) and on
// each block once all of it landed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "exchange/internode.hpp"

namespace epcomm::detail {

class IncomingBlocks {
 public:
  // One chunk: `bytes` at `offset` of the receive region, from `node`.
  struct Chunk {
    int node;
    std::size_t offset, bytes;
  };

  void reset(int num_nodes);
  // Posts the receives of the block of `bytes` at `offset` of region `into` from
  // `node` on `set`, which must hold this object's receives only, in this order.
  // With checksums, `sum` receives the block's checksum, which comes with its last
  // chunk (else null).
  void receive(InterNode& net, Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node,
               std::size_t bytes, uint64_t seq, BlockChecksum* sum);
  // The chunk of the set's transfer `index` (as test_some() names it).
  const Chunk& chunk(int index) const { return chunks_[static_cast<std::size_t>(index)]; }
  // Notes that transfer `index` completed; true if it was its block's last chunk.
  bool arrived(int index);
  // Blocks posted and not yet complete.
  int blocks_left() const { return blocks_left_; }

 private:
  std::vector<Chunk> chunks_;
  std::vector<int> chunks_left_;  // per node
  int blocks_left_ = 0;
};

}  // namespace epcomm::detail
