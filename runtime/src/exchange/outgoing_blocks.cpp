// SPDX-License-Identifier: MIT
#include "exchange/outgoing_blocks.hpp"

namespace epcomm::detail {

void OutgoingBlocks::reset(int num_nodes) {
  offset_.assign(num_nodes, 0);
  bytes_.assign(num_nodes, 0);
  sent_.assign(num_nodes, 0);
  unsent_ = 0;
}

void OutgoingBlocks::add(int node, std::size_t offset, std::size_t bytes) {
  offset_[node] = offset;
  bytes_[node] = bytes;
  ++unsent_;
}

bool OutgoingBlocks::send_cleared(const Target& to, const std::function<bool(int)>& cleared, int64_t* bytes_sent) {
  const int before = unsent_;
  for (int n = 0; n < static_cast<int>(bytes_.size()) && unsent_ > 0; ++n) {
    if (sent_[n] || bytes_[n] == 0 || !cleared(n)) continue;
    to.net.send(to.transfers, to.kind, to.from, offset_[n], n, to.to, block_offset(to.my_node, n, to.block_bytes),
                bytes_[n], to.seq);
    sent_[n] = 1;
    --unsent_;
    *bytes_sent += static_cast<int64_t>(bytes_[n]);
  }
  return unsent_ < before;
}

std::string OutgoingBlocks::waiting(const std::function<int(int)>& rank_of, const char* what) const {
  std::string out;
  for (int n = 0; n < static_cast<int>(bytes_.size()); ++n) {
    if (bytes_[n] > 0 && !sent_[n]) out += (out.empty() ? "" : ", ") + std::to_string(rank_of(n)) + " (" + what + ")";
  }
  return out;
}

}  // namespace epcomm::detail
