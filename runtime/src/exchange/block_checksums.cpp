// SPDX-License-Identifier: MIT
#include "exchange/block_checksums.hpp"

#include "util/check.hpp"

namespace epcomm::detail {

void require_block_intact(BlockChecksum got, BlockChecksum sent, std::size_t bytes, BlockKind kind, uint64_t seq,
                          int sender) {
  EPCOMM_REQUIRE(got == sent, kDataCorrupted,
                 "the " << block_name(kind) << " of operation " << seq << " from rank " << sender << " (" << bytes
                        << " bytes) arrived corrupted: it has CRC32C " << std::hex << got.crc << ", rank " << std::dec
                        << sender << " sent " << std::hex << sent.crc);
}

void BlockChecksums::reset(int num_nodes, std::size_t row_bytes) {
  row_bytes_ = row_bytes;
  blocks_.assign(static_cast<std::size_t>(num_nodes), Block{});
}

void BlockChecksums::add(int node, int32_t rows) {
  Block& b = blocks_[node];
  b.own.assign(static_cast<std::size_t>(rows), BlockChecksum{});
  b.at.resize(static_cast<std::size_t>(rows));
  for (int32_t i = 0; i < rows; ++i) b.at[i] = &b.own[i];
}

void BlockChecksums::take_head(int node, const void* head, std::size_t bytes) {
  blocks_[node].head = crc32c(head, bytes);
}

BlockChecksum BlockChecksums::block(int node) const {
  const Block& b = blocks_[node];
  const Crc32cAppend append(row_bytes_);
  uint32_t crc = b.head;
  for (const BlockChecksum* row : b.at) crc = append(crc, row->crc);
  return {crc};
}

void BlockChecksums::require_intact(int node, int sender, std::size_t bytes) const {
  require_block_intact(block(node), blocks_[node].sent, bytes, kind_, seq_, sender);
}

void BlockChecksums::require_intact(int node, int sender, const std::byte* data, std::size_t bytes) const {
  require_block_intact(block_checksum(data, bytes), blocks_[node].sent, bytes, kind_, seq_, sender);
}

}  // namespace epcomm::detail
