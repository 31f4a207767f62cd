// SPDX-License-Identifier: MIT
#include "exchange/incoming_blocks.hpp"

namespace epcomm::detail {

void IncomingBlocks::reset(int num_nodes) {
  chunks_.clear();
  chunks_left_.assign(num_nodes, 0);
  blocks_left_ = 0;
}

void IncomingBlocks::receive(InterNode& net, Transfers& set, BlockKind kind, RegionId into, std::size_t offset,
                             int node, std::size_t bytes, uint64_t seq, BlockChecksum* sum) {
  for_each_chunk(bytes, net.chunk_bytes(), [&](std::size_t at, std::size_t chunk) {
    net.receive(set, kind, into, offset + at, node, chunk, seq, at + chunk == bytes ? sum : nullptr);
    chunks_.push_back({node, offset + at, chunk});
    ++chunks_left_[node];
  });
  if (chunks_left_[node] > 0) ++blocks_left_;
}

bool IncomingBlocks::arrived(int index) {
  const int node = chunk(index).node;
  if (--chunks_left_[node] > 0) return false;
  --blocks_left_;
  return true;
}

}  // namespace epcomm::detail
