// SPDX-License-Identifier: MIT
// The MPI inter-node tier: one MPI_Isend/MPI_Irecv pair per block, matched by a
// tag made of the operation's sequence number and phase. Works on any cluster; the
// MPI library picks the wire (TCP, UCX, ...). With ExchangeConfig::checksum every
// block's CRC32C travels beside its last chunk (checksummed_transfers.hpp).
#pragma once

#include <mpi.h>

#include <vector>

#include "exchange/internode_factory.hpp"
#include "exchange/peer_requests.hpp"

namespace epcomm::detail {

class MpiInterNode final : public InterNode {
 public:
  explicit MpiInterNode(const InterNodeSetup& setup);

  const char* name() const override { return "mpi"; }
  std::unique_ptr<Transfers> new_transfers() override;
  // Device memory only with a CUDA-aware MPI library: others cannot read it.
  RegionId register_region(void* ptr, std::size_t bytes, MemorySpace space) override;
  std::string device_memory_unsupported() const override;
  void send(Transfers& set, BlockKind kind, RegionId from, std::size_t offset, int node, RegionId to,
            std::size_t remote_offset, std::size_t bytes, uint64_t seq, const BlockChecksum* sum) override;
  void receive(Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node, std::size_t bytes,
               uint64_t seq, BlockChecksum* sum) override;
  // EPCOMM_MPI_CHUNK_BYTES: several messages in flight per block.
  std::size_t chunk_bytes() const override { return chunk_bytes_; }
  // The receive is posted where the data lands; MPI holds early data until then.
  bool needs_clear_to_send() const override { return false; }
  void announce_ready(int, uint64_t) override {}
  bool take_ready(int, uint64_t) override { return true; }
  bool poll() override { return false; }

 private:
  int block_tag(BlockKind kind, uint64_t seq) const;
  const GroupState& group_;
  const GpuDirectSupport* gpu_direct_;
  MPI_Comm comm_;
  int tag_base_;
  std::vector<std::byte*> regions_;  // by RegionId
  const bool checksum_;  // ChecksummedTransfers: a block's CRC32C travels beside it
  std::size_t chunk_bytes_;
  int flip_at_ = 0;      // fault injection: corrupt the n-th message sent (0: none)
  int blocks_sent_ = 0;
};

}  // namespace epcomm::detail
