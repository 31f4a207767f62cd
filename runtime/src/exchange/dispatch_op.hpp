// SPDX-License-Identifier: MIT
// One dispatch: layout exchange, deduplicated inter-node send, intra-node forward
// into each owner's expert-major slot, and the local fan-out of multi-expert rows.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "exchange/block_checksums.hpp"
#include "exchange/engine.hpp"
#include "exchange/incoming_blocks.hpp"
#include "exchange/outgoing_blocks.hpp"
#include "plan/row_placement.hpp"
#include "plan/saved_layout.hpp"

namespace epcomm::detail {

// What DispatchLayout holds: a finished dispatch's layout, the exchange it belongs
// to and which dispatch made it (the operation header names it, so ranks that reuse
// different layouts fail with kMismatch).
struct ReusableLayout {
  std::weak_ptr<const void> exchange;  // the Engine
  uint64_t origin = 0;                 // sequence number of the dispatch that exchanged it
  SavedLayout saved;
};

// With device memory: the caller's routing inputs in GPU memory (read by the
// placement kernels), whether the engine already enqueued the encode of every
// input row into the slot's staging matrix (on the slot's mover, after the
// caller's stream), and where the routing was checked and counted.
struct DeviceDispatchInput {
  const int32_t* topk_idx = nullptr;
  const float* topk_weights = nullptr;
  bool rows_encoded = false;
  enum class Routes {
    kHost,     // the routing inputs were copied to the host, which built the routes
    kCounted,  // the GPU checked and counted them (count_routes), the counts came back
    kReused,   // with a reused layout: the GPU compares its counts with the layout's,
               // and the dispatch fails at its end if they differ
  };
  Routes routes = Routes::kHost;
  const int32_t* counts = nullptr;  // kCounted: DevicePlanSteps::counted_routes()
};

class DispatchOp : public Op {
 public:
  // The slot's routes were built (or copied from an earlier dispatch) by the
  // engine's checks before it took the slot. With `layout` (checked against the
  // routes by the engine), the dispatch takes its layout from there instead of
  // exchanging counts.
  // With device memory, `input` holds host copies of the routing inputs (the
  // slot's pinned ones) and `device_input` the caller's.
  DispatchOp(Engine& engine, uint64_t seq, int slot, const DispatchInput& input,
             std::shared_ptr<const ReusableLayout> layout = nullptr,
             const DeviceDispatchInput* device_input = nullptr);
  ~DispatchOp() override;

  bool advance() override;
  std::string phase() const override;
  std::string outstanding() const override;

  int slot() const { return slot_; }
  int num_tokens() const { return input_.num_tokens; }
  // This rank's view of its own slot: the dispatch output.
  const SlotView& output() const { return mine_; }
  // The output's row metadata in the exchange's memory space.
  struct RowMetadata {
    const float* weight;
    const int32_t* src_rank;
    const int32_t* src_token;
  };
  RowMetadata row_metadata() const;
  // DispatchHandle::decode_rows.
  void decode_rows(void* out, DType dtype) const;
  // DispatchHandle::layout(), once done.
  std::shared_ptr<const ReusableLayout> reusable_layout() const;
  std::atomic<bool> combine_in_flight{false};
  // (token, owner) pairs this rank wrote into node peers' slots: the owner
  // partials a combine reads back from them, for the statistics.
  int64_t tokens_to_node_peers() const { return tokens_to_node_peers_; }

 private:
  // kWritten: every row this rank writes is enqueued, waiting for the mover;
  // kFinish: the local fan-out is enqueued, likewise.
  enum class State { kLayout, kNodeLayout, kForward, kWritten, kArrive, kFinish, kDone };
  struct TokenSource;  // where the rows of one source come from (own input or rail)

  void post_layout();
  void pack_rail_sends();
  bool post_cleared_rail_sends();
  void note_layout_arrivals(const std::vector<int>& completed);
  void encode_routed_tokens();
  [[noreturn]] void reject_unencodable(int32_t token, int column) const;
  void raise_if_routing_rejected();
  const std::byte* token_row(int32_t t) const;
  void build_layout_from_messages();
  void on_layout_complete();
  void write_source(const TokenSource& src);
  void write_source_on_device(const TokenSource& src, const std::vector<RecvLayoutView>& layouts);
  void count_node_peer_bytes(const TokenSource& src);
  std::function<BlockChecksum(int, std::size_t, std::size_t)> block_checksum_to_send();
  void require_received_blocks_intact() const;
  void finish();
  void publish_signed_rows();
  void raise_if_row_corrupt();

  int slot_;
  DispatchInput input_;
  // Device memory: the caller's topk_idx and topk_weights, in GPU memory.
  const int32_t* device_topk_idx_ = nullptr;
  const float* device_topk_weights_ = nullptr;
  int64_t tokens_to_node_peers_ = 0;
  std::shared_ptr<const ReusableLayout> reused_;  // the layout taken instead of exchanged, or null
  // The GPU checks the routing against reused_ while the dispatch runs
  // (DeviceDispatchInput::Routes::kReused): its verdict is read at the end.
  bool verdict_pending_ = false;
  State state_ = State::kLayout;
  SlotBuffers& buf_;
  SlotView mine_;
  int msg_ints_ = 0;
  std::vector<int32_t> layout_out_, layout_in_;
  PeerRequests layout_reqs_;
  std::unique_ptr<Transfers> rail_recvs_, rail_sends_;
  std::vector<int32_t> rail_rows_;           // [num_nodes] rows my rail peer on node n sends me
  IncomingBlocks rail_in_;                   // the rail receives, by chunk
  bool rail_packed_ = false;
  OutgoingBlocks rail_blocks_;  // packed per destination node in rail_send
  // Per node: whether its rail peer's layout message arrived, which clears a
  // one-sided write to it.
  std::vector<char> layout_from_rail_peer_;
  // Rows of the input in the dispatch format, [num_tokens, row_bytes]: the
  // caller's x (x_encoded, or a dispatch format that is x's own dtype) or the
  // slot's staging matrix, which encode_routed_tokens() fills.
  const std::byte* token_rows_ = nullptr;
  bool rows_encoded_ = false;
  RowCopies copies_;  // the batch being built
  RowPlacement placement_;  // of the source being written
  // ExchangeConfig::checksum: the rows this rank writes into node peers' slots.
  std::optional<NodePeerChecksums::Rows> peer_rows_;
  // ExchangeConfig::checksum: the inter-node blocks this rank sends and receives.
  std::optional<BlockChecksums> sent_sums_, received_sums_;
};

}  // namespace epcomm::detail
