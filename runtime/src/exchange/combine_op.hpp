// SPDX-License-Identifier: MIT
// One combine along a dispatch's route: expert outputs staged in shared memory,
// node pre-reduction by the forwarder, one partial per (token, node) back over the
// network, and the source's sum in node order.
#pragma once

#include <optional>

#include "exchange/dispatch_op.hpp"
#include "exchange/incoming_blocks.hpp"
#include "exchange/outgoing_blocks.hpp"

namespace epcomm::detail {

class CombineOp : public Op {
 public:
  CombineOp(Engine& engine, uint64_t seq, std::shared_ptr<DispatchOp> route, const void* expert_out,
            void* out, const CombineOptions& options);
  ~CombineOp() override;

  bool advance() override;
  std::string phase() const override;
  std::string outstanding() const override;

 private:
  // kStage: this rank's expert outputs are being staged; kReduced: the node
  // partials are enqueued; kSum: the final sums are enqueued. Each waits for the
  // slot's mover before publishing.
  enum class State { kStage, kPartials, kReduced, kReturn, kSum, kDone };

  void stage_expert_outputs();
  void reduce_node_partials();
  void add_routed_sources(int64_t h0, int64_t h1, const std::vector<SlotView>& owners, RowSums& sums);
  void encode_remote_partials(int node, int64_t first, int64_t count, std::size_t block, std::size_t at);
  bool post_ready_sends();
  void sum_node_partials();
  void encode_output(const float* acc, int num_tokens);
  // The node's slots of this combine's dispatch, by local rank.
  std::vector<SlotView> node_slots() const;

  std::shared_ptr<DispatchOp> route_;
  const void* expert_out_;
  void* out_;
  CombineOptions options_;
  State state_ = State::kStage;
  SlotBuffers& buf_;
  std::unique_ptr<Transfers> recvs_, sends_;
  IncomingBlocks partials_in_;  // recvs_, by chunk
  // Encoded partials per destination node in combine_send; a one-sided transport
  // sends each after its receiver's "ready".
  OutgoingBlocks partial_blocks_;
  // ExchangeConfig::checksum: this rank's expert outputs its node peers read.
  std::optional<NodePeerChecksums::Rows> peer_rows_;
};

}  // namespace epcomm::detail
