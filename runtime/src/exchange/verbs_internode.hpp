// SPDX-License-Identifier: MIT
// The verbs inter-node tier: one reliable-connected queue pair to each rail peer
// (same local index, other nodes), every region registered with the adapter (a
// region id is the transport's region index), blocks moved by RDMA write with immediate into the peer's receive buffer at the
// block's fixed offset. The immediate (operation seq, kind) is all the receiver
// needs: the completion says which peer, and RC ordering says every byte of the
// write is in place.
//
// With ExchangeConfig::checksum the sender first writes the block's checksum
// (BlockChecksum, its CRC32C) into the peer's checksum inbox, a registered
// array with one entry per (receive region, source node): a plain write, without
// immediate, which RC places before the block's. When the immediate arrives, the
// entry is copied to where the receiving operation keeps it, and the operation
// checks the block in its first pass over it (block_checksums.hpp). An entry is
// reused only by the next write into the same block, which waits for the
// receiver's clear-to-send, sent once the operation that received it began again.
#pragma once

#include <mpi.h>

#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "exchange/internode_factory.hpp"
#include "transport/verbs/verbs_transport.hpp"
#include "util/crc32c.hpp"

namespace epcomm::detail {

class VerbsInterNode final : public InterNode {
 public:
  // Opens the port and makes the queue pairs (not collective; throws Error when
  // there is no usable port). Once constructed it owns rail_comm (the ranks with
  // this rank's local index, ranked by node); if the constructor throws, the caller
  // still does.
  VerbsInterNode(const InterNodeSetup& setup, MPI_Comm rail_comm);
  ~VerbsInterNode() override;
  // Collective over the rail communicator, after every region is registered: queue
  // pairs up, regions exchanged.
  void connect();

  const char* name() const override { return "verbs"; }
  std::unique_ptr<Transfers> new_transfers() override;
  // GPU memory through dma-buf (GPUDirect RDMA) where detected.
  RegionId register_region(void* ptr, std::size_t bytes, MemorySpace space) override;
  std::string device_memory_unsupported() const override;
  void send(Transfers& set, BlockKind kind, RegionId from, std::size_t offset, int node, RegionId to,
            std::size_t remote_offset, std::size_t bytes, uint64_t seq, const BlockChecksum* sum) override;
  void receive(Transfers& set, BlockKind kind, RegionId into, std::size_t offset, int node, std::size_t bytes,
               uint64_t seq, BlockChecksum* sum) override;
  // One RDMA write per block: its checksum and its arrival are tracked per block.
  std::size_t chunk_bytes() const override { return 0; }
  bool needs_clear_to_send() const override { return true; }
  void announce_ready(int node, uint64_t seq) override;
  bool take_ready(int node, uint64_t seq) override;
  bool poll() override;

  // Arrivals and acknowledgements seen by poll() and not yet claimed.
  bool take_arrival(int node, uint32_t imm);
  bool take_ack(uint64_t write_id) { return acked_.erase(write_id) > 0; }
  // With checksums: the checksum `node` wrote ahead of its last block into region
  // `into`.
  BlockChecksum inbox(RegionId into, int node) const { return inbox_[sum_index(into, node)]; }

 private:
  static uint64_t arrival_key(int node, uint32_t imm) { return (static_cast<uint64_t>(node) << 32) | imm; }
  int rank_of(int node) const { return group_.global_rank(node, group_.local_rank); }
  std::size_t sum_index(RegionId region, int node) const {
    return static_cast<std::size_t>(region) * group_.num_nodes + node;
  }

  const GroupState& group_;
  const GpuDirectSupport* gpu_direct_;
  MPI_Comm rail_comm_;
  std::unique_ptr<VerbsTransport> transport_;
  std::vector<Completion> completions_;
  std::unordered_map<uint64_t, int> arrived_;  // (node, immediate) -> writes not yet claimed
  std::unordered_set<uint64_t> acked_;         // write ids acknowledged, not yet claimed
  uint64_t next_write_id_ = 1;                 // 0: a write nobody waits for (ready signals)
  // Checksums (ExchangeConfig::checksum): host addresses of the regions (fault
  // injection), and per
  // (region, node) the checksum received from that node (inbox) and the one sent
  // to it (outbox), both registered after the caller's regions.
  const bool checksum_;
  std::vector<std::byte*> region_base_;
  std::vector<BlockChecksum> inbox_, outbox_;
  RegionId inbox_region_ = -1, outbox_region_ = -1;
  int flip_at_ = 0;  // fault injection: corrupt the n-th block sent (0: none)
  int blocks_sent_ = 0;
};

}  // namespace epcomm::detail
