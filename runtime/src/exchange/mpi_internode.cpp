// SPDX-License-Identifier: MIT
#include "exchange/mpi_internode.hpp"

#include "exchange/checksummed_transfers.hpp"
#include "exchange/mpi_tags.hpp"
#include "util/env.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

MpiInterNode::MpiInterNode(const InterNodeSetup& setup)
    : group_(setup.group), gpu_direct_(setup.gpu_direct), comm_(setup.comm), tag_base_(setup.tag_base),
      checksum_(setup.checksum),
      chunk_bytes_(static_cast<std::size_t>(env::mpi_chunk_bytes())) {
#ifdef EPCOMM_FAULT_INJECTION
  flip_at_ = env::fault_flip_bit();
#endif
}

std::unique_ptr<Transfers> MpiInterNode::new_transfers() {
  if (checksum_) return std::make_unique<ChecksummedTransfers>();
  return std::make_unique<PeerRequests>();
}

std::string MpiInterNode::device_memory_unsupported() const {
  if (gpu_direct_ == nullptr) return "the MPI library was not asked (an exchange on host memory)";
  if (gpu_direct_->mpi.present()) return {};
  return "the MPI library is not CUDA-aware (" + gpu_direct_->mpi.describe() + ")";
}

RegionId MpiInterNode::register_region(void* ptr, std::size_t bytes, MemorySpace space) {
  EPCOMM_REQUIRE(space == MemorySpace::kHost || device_memory_unsupported().empty(), kUnsupported,
                 "the MPI inter-node transport moves host memory only unless the MPI library is CUDA-aware, but rank "
                     << group_.rank << " registered " << bytes << " bytes of " << to_string(space)
                     << " memory: " << device_memory_unsupported());
  regions_.push_back(static_cast<std::byte*>(ptr));
  return static_cast<RegionId>(regions_.size() - 1);
}

void MpiInterNode::send(Transfers& set, BlockKind kind, RegionId from, std::size_t offset, int node, RegionId,
                        std::size_t, std::size_t bytes, uint64_t seq) {
  post(set, regions_[from] + offset, bytes, kind, node, seq, PeerRequests::Kind::kSend);
}

void MpiInterNode::receive(Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node,
                           std::size_t bytes, uint64_t seq) {
  post(set, regions_[into] + offset, bytes, kind, node, seq, PeerRequests::Kind::kRecv);
}

void MpiInterNode::post(Transfers& set, std::byte* data, std::size_t bytes, BlockKind kind, int node, uint64_t seq,
                        PeerRequests::Kind direction) {
  const int peer = group_.global_rank(node, group_.local_rank);
  const int tag = exchange_tag(tag_base_, seq, kind == BlockKind::kDispatch ? kTagDispatch : kTagCombine);
  if (checksum_) {
    auto& checked = static_cast<ChecksummedTransfers&>(set);
    const ChecksummedTransfers::Block block{block_name(kind), seq};
    if (direction == PeerRequests::Kind::kSend) {
      checked.send(data, bytes, peer, tag, comm_, block, ++blocks_sent_ == flip_at_);
    } else {
      checked.receive(data, bytes, peer, tag, comm_, block);
    }
    return;
  }
  const int count = static_cast<int>(bytes);
  MPI_Request r;
  if (direction == PeerRequests::Kind::kSend) {
    EPCOMM_MPI(MPI_Isend(data, count, MPI_BYTE, peer, tag, comm_, &r));
  } else {
    EPCOMM_MPI(MPI_Irecv(data, count, MPI_BYTE, peer, tag, comm_, &r));
  }
  static_cast<PeerRequests&>(set).add(r, peer, direction);
}

}  // namespace epcomm::detail
