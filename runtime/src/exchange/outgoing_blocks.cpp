// SPDX-License-Identifier: MIT
#include "exchange/outgoing_blocks.hpp"

#include <algorithm>

namespace epcomm::detail {

void OutgoingBlocks::reset(int num_nodes) {
  offset_.assign(num_nodes, 0);
  bytes_.assign(num_nodes, 0);
  sent_.assign(num_nodes, 0);
  notes_.assign(num_nodes, {});
  written_.assign(num_nodes, 0);
  cleared_.assign(num_nodes, 0);
  unsent_ = 0;
}

void OutgoingBlocks::add(int node, std::size_t offset, std::size_t bytes) {
  offset_[node] = offset;
  bytes_[node] = bytes;
  ++unsent_;
}

void OutgoingBlocks::written_at(int node, std::size_t bytes, uint64_t mark) {
  notes_[node].push_back({bytes, mark});
}

bool OutgoingBlocks::send_cleared(const Target& to, const std::function<bool(int)>& cleared, int64_t* bytes_sent) {
  bool any = false;
  const std::size_t chunk = to.net.chunk_bytes();
  for (int n = 0; n < static_cast<int>(bytes_.size()) && unsent_ > 0; ++n) {
    if (bytes_[n] == 0 || sent_[n] == bytes_[n]) continue;
    if (!cleared_[n]) cleared_[n] = cleared(n) ? 1 : 0;
    if (!cleared_[n]) continue;
    std::vector<Note>& notes = notes_[n];
    std::size_t passed = 0;
    while (passed < notes.size() && to.mover.reached(notes[passed].mark)) written_[n] = notes[passed++].bytes;
    notes.erase(notes.begin(), notes.begin() + static_cast<std::ptrdiff_t>(passed));
    // The chunks wholly written, in order (for_each_chunk's, as the receiver posted
    // them).
    const std::size_t remote = block_offset(to.my_node, n, to.block_bytes);
    const std::size_t step = chunk == 0 ? bytes_[n] : chunk;
    while (sent_[n] < bytes_[n]) {
      const std::size_t at = sent_[n], bytes = std::min(step, bytes_[n] - at);
      if (at + bytes > written_[n]) break;
      // With checksums the block's goes with its last chunk, every row of it written.
      BlockChecksum sum{};
      const bool last = at + bytes == bytes_[n];
      if (last && to.checksum) sum = to.checksum(n, offset_[n], bytes_[n]);
      to.net.send(to.transfers, to.kind, to.from, offset_[n] + at, n, to.to, remote + at, bytes, to.seq,
                  last && to.checksum ? &sum : nullptr);
      sent_[n] = at + bytes;
      *bytes_sent += static_cast<int64_t>(bytes);
      any = true;
    }
    if (sent_[n] == bytes_[n]) --unsent_;
  }
  return any;
}

std::string OutgoingBlocks::waiting(const std::function<int(int)>& rank_of, const char* what) const {
  std::string out;
  for (int n = 0; n < static_cast<int>(bytes_.size()); ++n) {
    if (bytes_[n] == 0 || sent_[n] == bytes_[n] || cleared_[n]) continue;
    out += (out.empty() ? "" : ", ") + std::to_string(rank_of(n)) + " (" + what + ")";
  }
  return out;
}

}  // namespace epcomm::detail
