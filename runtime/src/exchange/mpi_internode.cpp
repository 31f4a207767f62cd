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
                        std::size_t, std::size_t bytes, uint64_t seq, const BlockChecksum* sum) {
  std::byte* data = regions_[from] + offset;
  const int peer = group_.global_rank(node, group_.local_rank);
  const int tag = block_tag(kind, seq);
  if (checksum_) {
    // Fault injection: a bit of the data flipped after its checksum was taken.
    if (++blocks_sent_ == flip_at_ && bytes > 0) data[bytes / 2] ^= std::byte{0x10};
    static_cast<ChecksummedTransfers&>(set).send(data, bytes, peer, tag, comm_, sum);
    return;
  }
  MPI_Request r;
  EPCOMM_MPI(MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &r));
  static_cast<PeerRequests&>(set).add(r, peer, PeerRequests::Kind::kSend);
}

void MpiInterNode::receive(Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node,
                           std::size_t bytes, uint64_t seq, BlockChecksum* sum) {
  std::byte* data = regions_[into] + offset;
  const int peer = group_.global_rank(node, group_.local_rank);
  const int tag = block_tag(kind, seq);
  if (checksum_) {
    static_cast<ChecksummedTransfers&>(set).receive(data, bytes, peer, tag, comm_, sum);
    return;
  }
  MPI_Request r;
  EPCOMM_MPI(MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, comm_, &r));
  static_cast<PeerRequests&>(set).add(r, peer, PeerRequests::Kind::kRecv);
}

int MpiInterNode::block_tag(BlockKind kind, uint64_t seq) const {
  return exchange_tag(tag_base_, seq, kind == BlockKind::kDispatch ? kTagDispatch : kTagCombine);
}

}  // namespace epcomm::detail
