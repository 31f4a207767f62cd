// SPDX-License-Identifier: MIT
#include "exchange/node_peer_checksums.hpp"

#include "util/check.hpp"
#include "util/env.hpp"

namespace epcomm::detail {

NodePeerChecksums::NodePeerChecksums(const GroupState& group, bool device_memory)
    : group_(group), memory_(device_memory ? "GPU memory" : "shared memory") {
#ifdef EPCOMM_FAULT_INJECTION
  flip_at_ = env::fault_flip_node_bit();
#endif
}

void NodePeerChecksums::Rows::note_signed(std::byte* dst, std::size_t bytes) {
  if (first_dst_ != nullptr) return;
  first_dst_ = dst;
  first_bytes_ = bytes;
}

void NodePeerChecksums::Rows::add_signed_copy(RowCopies& copies, const std::byte* src, std::byte* dst,
                                              BlockChecksum* sum) {
  copies.add(src, dst, sum);
  note_signed(dst, copies.row_bytes);
}

bool NodePeerChecksums::Rows::flip_due(bool signed_any) {
  return signed_any && ++sums_.published_ == sums_.flip_at_;
}

void NodePeerChecksums::Rows::publish() {
  if (flip_due(first_dst_ != nullptr) && first_bytes_ > 0) first_dst_[first_bytes_ / 2] ^= std::byte{0x10};
}

void NodePeerChecksums::Rows::fail(int64_t row, uint32_t got, uint32_t expected, std::size_t bytes, int owner,
                                   int writer, int32_t source, int32_t token) const {
  EPCOMM_FAIL(kDataCorrupted, "the " << what_ << " " << row << " of operation " << seq_ << " in rank " << owner
                                     << "'s " << sums_.memory_ << " (token " << token << " of rank " << source << ", "
                                     << bytes << " bytes), written by rank " << writer << ", is corrupted: it has CRC32C "
                                     << std::hex << got << ", rank " << std::dec << writer << " wrote " << std::hex
                                     << expected);
}

void NodePeerChecksums::Rows::raise_dispatch_row_mismatch(int64_t p, uint32_t got, uint32_t expected,
                                                          std::size_t bytes, int32_t source, int32_t token) const {
  const GroupState& g = sums_.group_;
  const int writer = source < 0 ? -1 : g.global_rank(g.node, source % g.ranks_per_node);
  fail(p, got, expected, bytes, g.rank, writer, source, token);
}

void NodePeerChecksums::Rows::raise_owner_partial_mismatch(int owner, int holder, int64_t entry, uint32_t got,
                                                           uint32_t expected, std::size_t bytes, int32_t source,
                                                           int32_t token) const {
  const GroupState& g = sums_.group_;
  fail(entry, got, expected, bytes, g.global_rank(g.node, holder), g.global_rank(g.node, owner), source, token);
}

const BlockChecksum* NodePeerChecksums::Rows::peer_written(const SlotView& mine, int64_t p) const {
  // A payload row (the token's first here), written by the forwarder of its
  // source: the rank of this node with the source's local index.
  const int32_t source = mine.src_rank[p];
  if (source < 0 || mine.first_row[p] != p || source % sums_.group_.ranks_per_node == sums_.group_.local_rank) {
    return nullptr;
  }
  return &mine.row_sum[p];
}

void NodePeerChecksums::Rows::raise_if_dispatch_row_corrupt(const SlotView& mine) const {
  const auto* row = static_cast<const std::byte*>(corrupt_->first());
  if (row == nullptr) return;
  const GroupState& g = sums_.group_;
  const int64_t p = (row - mine.rows) / static_cast<std::ptrdiff_t>(mine.row_bytes);
  const int32_t source = mine.src_rank[p];
  fail(p, block_checksum(row, mine.row_bytes).crc, mine.row_sum[p].crc, mine.row_bytes, g.rank,
       g.global_rank(g.node, source % g.ranks_per_node), source, mine.src_token[p]);
}

BlockChecksum* NodePeerChecksums::Rows::owner_partial_sums(const SlotView& mine, int32_t entry) {
  note_signed(mine.partial_row(entry), mine.partial_row_bytes);
  return &mine.partial_sum[entry];
}

void NodePeerChecksums::Rows::raise_if_owner_partial_corrupt(const std::vector<SlotView>& owners) const {
  const auto* row = static_cast<const std::byte*>(corrupt_->first());
  if (row == nullptr) return;
  const GroupState& g = sums_.group_;
  for (int ld = 0; ld < static_cast<int>(owners.size()); ++ld) {
    const SlotView& owner = owners[ld];
    const std::size_t bytes = static_cast<std::size_t>(owner.layout.num_tokens()) * owner.partial_row_bytes;
    if (row < owner.owner_partials || row >= owner.owner_partials + bytes) continue;
    const int64_t e = (row - owner.owner_partials) / static_cast<std::ptrdiff_t>(owner.partial_row_bytes);
    // The token's first row here names it.
    const int32_t p = owner.token_rows[static_cast<std::size_t>(e) * owner.max_rows_per_token];
    const int rank = g.global_rank(g.node, ld);
    fail(e, block_checksum(row, owner.partial_row_bytes).crc, owner.partial_sum[e].crc, owner.partial_row_bytes, rank,
         rank, owner.src_rank[p], owner.src_token[p]);
  }
  EPCOMM_FAIL(kDataCorrupted, "an " << what_ << " of operation " << seq_
                                    << " in a node peer's shared memory is corrupted (its address is in no slot)");
}

}  // namespace epcomm::detail
