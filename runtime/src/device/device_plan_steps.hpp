// SPDX-License-Identifier: MIT
// The plan steps of the device exchange that the host exchange computes row by
// row (runtime/src/plan and the operations), done by kernels (kernels/cuda,
// epcomm_kernels/cuda_plan.hpp) on a slot's mover stream, in the mover's order:
//
//   dispatch: each source's row positions on the node's owners (place_source_rows),
//     the payload once per owner straight into its GPU over CUDA IPC, every row's
//     metadata and the owner's token list, and the forwarding record combine reads
//     (into the writer's own slot, the payload into every row of a token at once);
//     the owner's fan-out of the rows node peers wrote, and padding rows, once
//     every writer is done;
//   combine: each owner's partials of the tokens node peers forward, written
//     straight into each forwarder's GPU over CUDA IPC, the forwarder's per-token
//     sums over its own rows and those partials (in its own memory) from that
//     record, and the source's sum over node partials, in the host combine's
//     order (fused with the forwarder's sums where only this node is involved);
//   with node peer checksums (PlanStepsShape::checksum): the writer signs each
//     payload it writes into a peer's slot in the writing kernel, the owner checks
//     them in its fan-out; the owner signs its partials in the kernel that sums
//     and pushes them, the forwarder checks them in the kernel that sums them. A
//     mismatch is recorded in pinned host memory, which the host reads once the
//     mover is idle (checksum_mismatch), where the operation waits anyway.
//
// The host keeps the layout exchange and the phase flags; on one node the routing
// checks, counts and token lists are made on the GPU too (count_routes) and only
// the counts come to the host; what it sends the GPU per operation are the small
// layouts (and, across nodes, the routes' token lists, made on the host there). Positions and orders are the host plan's, so the device
// exchange stays bit-identical to the host one (its test oracle).
//
// This header has no CUDA type: builds without CUDA never construct one.
#pragma once

#include <epcomm/types.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "exchange/row_mover.hpp"
#include "exchange/slot_layout.hpp"
#include "plan/token_routes.hpp"
#include "plan/topology.hpp"

namespace epcomm::detail {

// What a slot's plan steps are sized for and where they write.
struct PlanStepsShape {
  Topology topo;
  int node = 0;        // this rank's node
  int local_rank = 0;  // this rank's index in it
  int hidden = 0;
  int64_t max_tokens = 0;        // per rank (max_tokens_per_rank)
  int64_t max_entries = 0;       // of one owner's token list (SlotLayout::max_tokens)
  std::size_t record_bytes = 0;  // one token's record in an inter-node block
  // The slot on every rank of the node, by local rank: rows, outputs, metadata
  // (and with checksums the row_sum and partial_sum tables, in GPU memory).
  std::vector<SlotView> owners;
  bool checksum = false;  // ExchangeConfig::checksum: sign and check node peers' rows
};

// count_routes' header before its counts: the first bad pick's token and k (-1
// if none) and whether the routing was rejected (kernels::cuda::kRouteCountsHeader).
constexpr int kRouteCountsHeader = 3;

// A row that failed its node peer checksum (DevicePlanSteps::checksum_mismatch).
struct PeerRowMismatch {
  int owner = 0;    // the local rank whose slot holds the row
  int64_t row = 0;  // dispatch: the row there; combine: the owner partial's token-list entry
  uint32_t got = 0, expected = 0;  // its CRC32C, and the one its writer took
};

class DevicePlanSteps {
 public:
  virtual ~DevicePlanSteps() = default;

  // Whether count_routes can count for this shape (its shared memory holds a
  // counter per expert, rank and node).
  virtual bool can_count_routes() const = 0;
  // This rank's routing as a source, checked and counted on the GPU as
  // build_token_routes does on the host (kernels::cuda::count_routes), its
  // per-node token lists written into this slot's plan buffers, where
  // set_routes(routes) then finds them. topk_idx / topk_weights: the caller's, in
  // GPU memory. Without `expected` the header and counts are copied to pinned
  // memory (counted_routes waits for them); with it (a reused layout's counts:
  // experts, ranks, tokens per node) the GPU compares them instead and nothing is
  // copied: route_verdict says, once the mover passed the kernel. Either way the
  // placement of the own tokens writes nothing if the routing was rejected.
  virtual void count_routes(const int32_t* topk_idx, const float* topk_weights, int num_tokens,
                            const std::vector<int32_t>* expected) = 0;
  // The counts of the last count_routes without `expected`, once copied:
  // kRouteCountsHeader ints (bad token, bad pick, rejected), then
  // expert_tokens, rank_tokens, node_offset; pinned memory, valid until the next
  // count_routes.
  virtual const int32_t* counted_routes() = 0;
  // After a count_routes with `expected`, once the mover passed it: whether it
  // rejected the routing, and the first bad pick (token, k; -1 if none: the
  // counts differ from the expected ones).
  struct RouteVerdict {
    bool rejected = false;
    int32_t token = -1, k = -1;
  };
  virtual RouteVerdict route_verdict() = 0;
  // The last count_routes' counts, read back for an error message (waits):
  // counted_routes()'s layout.
  virtual std::vector<int32_t> download_route_counts() = 0;
  // A dispatch's routes (this rank as a source): their per-node token lists, for
  // the placement of its own tokens and for combine's final sums; uploaded unless
  // count_routes made them on the GPU (routes.lists_on_device).
  virtual void set_routes(const TokenRoutes& routes) = 0;
  // With routes made on the GPU on one node: dst row t = encode(format, x row t)
  // for every routed token t (the node's list), as RowMover::encode_tokens; the
  // first token it could not encode and its column, or {-1, -1} (waits).
  struct BadElement {
    int32_t token = -1;
    int column = -1;
  };
  virtual BadElement encode_routed_tokens(Format format, const void* x, DType x_type, void* dst) = 0;
  // Writes this rank's own tokens bound for its node into the owners' slots, as
  // the host's write_source does: topk_idx / topk_weights are the caller's GPU
  // arrays, token_rows the input rows in the dispatch format indexed by token;
  // owners: the node's receive layouts by local rank. The forwarding record of
  // handled token first_handled + i is written on the GPU.
  virtual void write_own_tokens(int source, const int32_t* topk_idx, const float* topk_weights,
                                const std::byte* token_rows, int32_t first_handled,
                                const std::vector<RecvLayoutView>& owners) = 0;
  // The same for `count` tokens of a remote source received in an inter-node block
  // (records, then rows), in this GPU's memory (the block as copied from its pinned
  // receive buffer).
  virtual void write_block_tokens(int source, int32_t count, const std::byte* block, int32_t first_handled,
                                  const std::vector<RecvLayoutView>& owners) = 0;
  // Once the mover is idle: empty, or why a source wrote more than its layout
  // announced (the host's kMismatch message). Clears it.
  virtual std::string placement_error() = 0;
  // This rank's receive layout, once known (uploaded ahead of finish, off the
  // path from the last writer's flag to the fan-out).
  virtual void set_own_layout(const RecvLayoutView& mine) = 0;
  // The owner's fan-out and padding rows, over the layout set_own_layout gave.
  virtual void finish() = 0;
  // Where one dispatch's combines push owner partials (plan/pushed_partials.hpp):
  // as owner, the token-list entries node peers forward and their sources, and
  // by source the base of its entries' rows on its forwarder; as forwarder, by
  // node n and owner ld (n * R + ld), the base of the rows ld pushes here.
  struct PartialPushes {
    std::vector<int32_t> entries, sources;
    std::vector<int64_t> to_forwarders;
    std::vector<int64_t> from_owners;
  };
  // The pushes set for dispatch `dispatch` (its sequence number), or null: a
  // dispatch's combines upload them once.
  virtual const PartialPushes* partial_pushes(uint64_t dispatch) const = 0;
  virtual const PartialPushes& set_partial_pushes(uint64_t dispatch, PartialPushes pushes) = 0;
  // This rank's owner partials, as the host combine forms them: for each entry of
  // the pushes set last, the FP32 sum of (weighted ? weight : 1) *
  // decode(out_format, expert_out row) over its rows in expert order, encoded in
  // partial_format straight into its forwarder's slot. expert_out: the caller's,
  // this GPU's memory.
  virtual void sum_owner_partials(Format out_format, Format partial_format, const std::byte* expert_out,
                                  bool weighted) = 0;
  // Once the mover is idle: the first element the last sum_owner_partials could
  // not encode, as (position in entries) * hidden + column, or -1 (waits).
  virtual int64_t owner_partials_bad() = 0;
  // acc[d] = the node partial, in the host combine's order, of handled token
  // first + d (of node `node`'s tokens), for d < count: over the owners it
  // reached in route order, this rank's FP32 subtotal of its rows (from
  // expert_out) or decode(partial_format, the partial the owner pushed here).
  virtual void sum_routed(Format out_format, Format partial_format, const std::byte* expert_out, int node,
                          int64_t first, int64_t count, bool weighted, float* acc) = 0;
  // Where every token of the routes concerns this node only: out[t] = the final
  // sum of token t (its node partial, handled token first + its index in this
  // node's list, added to zero; +0 for a token not on the list), in dtype, in
  // one pass: sum_routed and sum_node_partials fused.
  virtual void sum_routed_to_output(Format partial_format, const std::byte* expert_out, int64_t first,
                                    bool weighted, DType dtype, void* out) = 0;
  // Where node n's partials of this rank's tokens are: the partial of the i-th
  // token of the node's list in the routes at rows + i * row_bytes.
  struct NodePartialRows {
    const void* rows = nullptr;
    std::size_t row_bytes = 0;
  };
  // out[t] = the sum in FP32, from zero, in node order, of token t's node partials
  // (FP32 for this rank's node, `format` for the others; nodes by node), encoded
  // in dtype, for every token t of the routes: the host combine's final sum, in
  // one pass.
  virtual void sum_node_partials(Format format, const std::vector<NodePartialRows>& nodes, DType dtype,
                                 void* out) = 0;
  // The first (local rank, token entry) of handled token h's forwarding record,
  // read back for an error message (waits for the mover).
  virtual void first_route(int64_t h, int32_t* local_rank, int32_t* entry) = 0;

  // With checksums, at the start of each operation on the slot (the slot's
  // earlier operations complete): forgets the last one's mismatch and signed row.
  virtual void begin_checksums() = 0;
  // Once the mover is idle: the first row the checks enqueued since
  // begin_checksums found corrupted, if any. Reads pinned memory only.
  virtual std::optional<PeerRowMismatch> checksum_mismatch() = 0;
  // Fault injection, once the mover is idle: flips one bit in the middle of a row
  // (row_bytes long) signed since begin_checksums, after its checksum was taken,
  // and waits for the flip; false if no row was signed.
  virtual bool flip_signed_row_bit(std::size_t row_bytes) = 0;
  // Whether a row was signed since begin_checksums (once the mover is idle).
  virtual bool signed_any() = 0;
};

// CUDA builds only (DeviceResources::make_plan_steps): steps on `mover`'s stream
// (the device mover of the same device), which outlives them.
std::unique_ptr<DevicePlanSteps> make_cuda_plan_steps(int device, RowMover& mover, PlanStepsShape shape);

}  // namespace epcomm::detail
