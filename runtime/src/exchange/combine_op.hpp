// SPDX-License-Identifier: MIT
// One combine along a dispatch's route: each owner's pre-reduction of the tokens a
// node peer forwards (one owner partial per (token, owner), in the combine format,
// in its slot, or with device memory pushed into the forwarder's), node
// pre-reduction by the forwarder from its own rows and the owners' partials, one
// partial per (token, node) back over the network, and the source's sum in node
// order.
#pragma once

#include <functional>
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
  // kOwner: this rank's owner partials are enqueued; kReduced: the node partials
  // are enqueued (and the final sums, when partials_all_local); kReturn: partials
  // cross nodes, the final sums are enqueued once they are in; kSum: the final
  // sums are enqueued. Each waits for the slot's mover before publishing.
  enum class State { kOwner, kPartials, kReduced, kReturn, kSum, kDone };

  void sum_owner_partials();
  DevicePlanSteps::PartialPushes partial_pushes() const;
  void publish_owner_partials();
  void raise_if_owner_partial_corrupt();
  void raise_if_owner_partial_unencodable(const std::vector<int32_t>& entries, int64_t first);
  void reduce_node_partials();
  void reduce_into_output();
  void sum_routed_on_host(int64_t h0, int64_t h1, const std::vector<SlotView>& owners, float* acc);
  void encode_remote_partials(int node, int64_t first, int64_t count, std::size_t block, std::size_t at);
  void keep_own_partials(int64_t b0, int64_t b1);
  void encode_output(const float* acc, int64_t token, int64_t count);
  bool post_ready_sends();
  void sum_node_partials();
  // Whether no partial crosses nodes: none of this rank's tokens reached another
  // node, and it forwards no other node's tokens.
  bool partials_all_local() const;
  void require_received_blocks_intact(bool whole) const;
  // The node's slots of this combine's dispatch, by local rank.
  std::vector<SlotView> node_slots() const;

  std::shared_ptr<DispatchOp> route_;
  const void* expert_out_;
  void* out_;
  CombineOptions options_;
  State state_ = State::kOwner;
  bool owner_partials_enqueued_ = false;
  bool summed_ = false;  // sum_node_partials is enqueued
  SlotBuffers& buf_;
  std::unique_ptr<Transfers> recvs_, sends_;
  IncomingBlocks partials_in_;  // recvs_, by chunk
  // Encoded partials per destination node in combine_send; a one-sided transport
  // sends each after its receiver's "ready".
  OutgoingBlocks partial_blocks_;
  // Host: per token of this rank, whether this node is the only one it reached;
  // then its node partial is its output, encoded into out by the forwarder's sum
  // (summed from zero, it is never -0, so the final sum's 0 + partial is the
  // partial itself) instead of passing through own_partials.
  std::vector<char> own_only_;
  // ExchangeConfig::checksum: this rank's owner partials its node peers read.
  std::optional<NodePeerChecksums::Rows> peer_rows_;
  // ExchangeConfig::checksum: the inter-node blocks this rank sends and receives.
  std::optional<BlockChecksums> sent_sums_, received_sums_;
};

}  // namespace epcomm::detail
