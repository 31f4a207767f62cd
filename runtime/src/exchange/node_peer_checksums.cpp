// SPDX-License-Identifier: MIT
#include "exchange/node_peer_checksums.hpp"

#include "util/check.hpp"
#include "util/env.hpp"

namespace epcomm::detail {

NodePeerChecksums::NodePeerChecksums(const GroupState& group) : group_(group) {
#ifdef EPCOMM_FAULT_INJECTION
  flip_at_ = env::fault_flip_node_bit();
#endif
}

void NodePeerChecksums::Rows::sign(BlockChecksum* table, int64_t row, std::byte* dst, const std::byte* src,
                                   std::size_t bytes) {
  table[row] = block_checksum(src, bytes);
  if (first_dst_ == nullptr) {
    first_dst_ = dst;
    first_bytes_ = bytes;
  }
}

void NodePeerChecksums::Rows::publish() {
  if (first_dst_ == nullptr) return;
  if (++sums_.published_ == sums_.flip_at_ && first_bytes_ > 0) first_dst_[first_bytes_ / 2] ^= std::byte{0x10};
}

void NodePeerChecksums::Rows::verify(const BlockChecksum* table, int64_t row, const std::byte* data,
                                     std::size_t bytes, int owner, int writer, int32_t source,
                                     int32_t token) const {
  const BlockChecksum got = block_checksum(data, bytes);
  if (got == table[row]) return;
  const int k = got.part[0] != table[row].part[0] ? 0 : got.part[1] != table[row].part[1] ? 1 : 2;
  EPCOMM_FAIL(kDataCorrupted, "the " << what_ << " " << row << " of operation " << seq_ << " in rank " << owner
                                     << "'s shared memory (token " << token << " of rank " << source << ", " << bytes
                                     << " bytes), written by rank " << writer << ", is corrupted: part " << k + 1
                                     << " of 3 has CRC32C " << std::hex << got.part[k] << ", rank " << std::dec
                                     << writer << " wrote " << std::hex << table[row].part[k]);
}

void NodePeerChecksums::Rows::sign_expert_outputs(const SlotView& mine, const std::byte* expert_out) {
  const GroupState& g = sums_.group_;
  const int64_t n = mine.layout.num_rows();
  for (int64_t p = 0; p < n; ++p) {
    // Read by the forwarder of its source (padding rows, source -1, by nobody).
    const int32_t source = mine.src_rank[p];
    if (source < 0 || source % g.ranks_per_node == g.local_rank) continue;
    sign(mine.out_sum, p, mine.out_row(p), expert_out + static_cast<std::size_t>(p) * mine.out_row_bytes,
         mine.out_row_bytes);
  }
}

void NodePeerChecksums::Rows::verify_expert_output(const SlotView& owner, int owner_local, int64_t row) const {
  const GroupState& g = sums_.group_;
  const int rank = g.global_rank(g.node, owner_local);
  verify(owner.out_sum, row, owner.out_row(row), owner.out_row_bytes, rank, rank, owner.src_rank[row],
         owner.src_token[row]);
}

void NodePeerChecksums::Rows::verify_dispatch_rows(const SlotView& mine) const {
  const GroupState& g = sums_.group_;
  const int R = g.ranks_per_node;
  const int64_t n = mine.layout.num_rows();
  for (int64_t p = 0; p < n; ++p) {
    // A payload row (the token's first here), written by the forwarder of its
    // source: the rank of this node with the source's local index.
    const int32_t source = mine.src_rank[p];
    if (source < 0 || mine.first_row[p] != p || source % R == g.local_rank) continue;
    verify(mine.row_sum, p, mine.row(p), mine.row_bytes, g.rank, g.global_rank(g.node, source % R), source,
           mine.src_token[p]);
  }
}

}  // namespace epcomm::detail
