// SPDX-License-Identifier: MIT
// The CRC32C of each inter-node block one operation sends or receives
// (ExchangeConfig::checksum), taken in the pass that builds the block and checked
// in the pass that first reads it, so that no byte of a block is read from memory
// for its checksum alone.
//
// A block is a header (a dispatch's token records, written and read by the
// operation's own thread; a combine block has none) and rows of one length, which
// the row mover copies, encodes or sums on the worker pool, split across threads,
// each row hashed in the same pass right after it was written or just before it is
// read (its bytes in cache). The block's checksum is the CRC32C of the header
// combined with the rows' in order (Crc32cAppend): the CRC32C of the whole block,
// which travels beside its last chunk (InterNode::send). The receiver compares
// the same combination, once the mover's pass over the block ran, with what the
// sender sent; a mismatch throws Error(kDataCorrupted) naming the sender, the block
// and the operation, before anything built from the block is shown to another rank
// or to the caller.
//
// With device memory the mover runs on the GPU and cannot hash: the sender then
// hashes a block whole before its last chunk goes, the receiver when it landed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "exchange/internode.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

// "dispatch block", "combine block": what a block is called in a mismatch.
inline const char* block_name(BlockKind kind) {
  return kind == BlockKind::kDispatch ? "dispatch block" : "combine block";
}

// Throws Error(kDataCorrupted) unless `got`, the checksum of the `bytes` bytes of
// the `kind` block of operation `seq` from rank `sender`, equals `sent`.
void require_block_intact(BlockChecksum got, BlockChecksum sent, std::size_t bytes, BlockKind kind, uint64_t seq,
                          int sender);

class BlockChecksums {
 public:
  BlockChecksums(BlockKind kind, uint64_t seq) : kind_(kind), seq_(seq) {}

  // Forgets every block; rows of `row_bytes` from now on.
  void reset(int num_nodes, std::size_t row_bytes);
  // The block to or from `node` has `rows` rows after its header.
  void add(int node, int32_t rows);
  // Hashes node's header, `bytes` at `head`, now.
  void take_head(int node, const void* head, std::size_t bytes);
  // Where the mover writes the checksum of row `i` of node's block.
  BlockChecksum* row(int node, int32_t i) { return &blocks_[node].own[i]; }
  // Row `i`'s checksum is written at `at` instead (the pass that reads the row
  // signs it there for another check): read from there.
  void row_is_at(int node, int32_t i, const BlockChecksum* at) { blocks_[node].at[i] = at; }
  // The checksum of node's block, once its header was taken and the mover ran
  // every pass that hashes its rows.
  BlockChecksum block(int node) const;

  // Receiver: where the tier puts the checksum the sender sent.
  BlockChecksum* sent(int node) { return &blocks_[node].sent; }
  // Receiver, once block(node) is complete: throws Error(kDataCorrupted) unless it
  // matches the one sent. sender: the epcomm rank; bytes: the block's size.
  void require_intact(int node, int sender, std::size_t bytes) const;
  // Receiver, hashing the block's `bytes` at `data` whole: with device memory, or
  // to tell a corrupted block from a bad one when reading it failed.
  void require_intact(int node, int sender, const std::byte* data, std::size_t bytes) const;

 private:
  struct Block {
    uint32_t head = 0;  // CRC32C of the header (of nothing: 0)
    std::vector<BlockChecksum> own;
    std::vector<const BlockChecksum*> at;  // per row: its checksum
    BlockChecksum sent{};
  };
  BlockKind kind_;
  uint64_t seq_;
  std::size_t row_bytes_ = 0;
  std::vector<Block> blocks_;  // by node
};

}  // namespace epcomm::detail
