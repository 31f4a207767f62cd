// SPDX-License-Identifier: MIT
#include "exchange/mpi_internode.hpp"

#include "exchange/checksummed_transfers.hpp"
#include "exchange/engine.hpp"
#include "util/env.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

MpiInterNode::MpiInterNode(Engine& engine) : engine_(engine), checksum_(engine.config.checksum) {
#ifdef EPCOMM_FAULT_INJECTION
  flip_at_ = env::fault_flip_bit();
#endif
}

std::unique_ptr<Transfers> MpiInterNode::new_transfers() {
  if (checksum_) return std::make_unique<ChecksummedTransfers>();
  return std::make_unique<PeerRequests>();
}

void MpiInterNode::send(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset, std::size_t,
                        std::size_t bytes, uint64_t seq) {
  post(set, engine_.slots[slot].send_buffer(buffer).data() + offset, bytes, buffer, node, seq,
       PeerRequests::Kind::kSend);
}

void MpiInterNode::receive(Transfers& set, RailBuffer buffer, int slot, int node, std::size_t offset,
                           std::size_t bytes, uint64_t seq) {
  post(set, engine_.slots[slot].recv_buffer(buffer).data() + offset, bytes, buffer, node, seq,
       PeerRequests::Kind::kRecv);
}

void MpiInterNode::post(Transfers& set, std::byte* data, std::size_t bytes, RailBuffer buffer, int node, uint64_t seq,
                        PeerRequests::Kind kind) {
  const Engine& e = engine_;
  const int peer = e.group.global_rank(node, e.group.local_rank);
  const int tag = e.mpi_tag(seq, buffer == RailBuffer::kDispatch ? kTagDispatch : kTagCombine);
  if (checksum_) {
    auto& checked = static_cast<ChecksummedTransfers&>(set);
    const ChecksummedTransfers::Block block{buffer == RailBuffer::kDispatch ? "dispatch block" : "combine block", seq};
    if (kind == PeerRequests::Kind::kSend) {
      checked.send(data, bytes, peer, tag, e.comm, block, ++blocks_sent_ == flip_at_);
    } else {
      checked.receive(data, bytes, peer, tag, e.comm, block);
    }
    return;
  }
  const int count = static_cast<int>(bytes);
  MPI_Request r;
  if (kind == PeerRequests::Kind::kSend) {
    EPCOMM_MPI(MPI_Isend(data, count, MPI_BYTE, peer, tag, e.comm, &r));
  } else {
    EPCOMM_MPI(MPI_Irecv(data, count, MPI_BYTE, peer, tag, e.comm, &r));
  }
  static_cast<PeerRequests&>(set).add(r, peer, kind);
}

}  // namespace epcomm::detail
