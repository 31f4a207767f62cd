// SPDX-License-Identifier: MIT
// The exchange engine: buffers of every slot, the operation sequence, and progress.
//
// Operations (dispatch, combine) are small state machines. begin posts what can be
// posted at once; progress() advances every in-flight operation in sequence order
// (a rank waiting on its second micro-batch still forwards its peers' first one);
// wait() drives progress until its operation completes, backing off when idle and
// throwing a diagnosis when no step was made for the group's timeout.
#pragma once

#include <epcomm/error.hpp>
#include <epcomm/exchange.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "device/device_resources.hpp"
#include "epcomm_kernels/codec.hpp"
#include "exchange/failure_channel.hpp"
#include "exchange/internode.hpp"
#include "exchange/mpi_tags.hpp"
#include "exchange/node_peer_checksums.hpp"
#include "exchange/op_agreement.hpp"
#include "exchange/peer_requests.hpp"
#include "exchange/rail_memory.hpp"
#include "exchange/row_mover.hpp"
#include "exchange/slot_layout.hpp"
#include "group_state.hpp"
#include "node_peer_liveness.hpp"
#include "node_shm.hpp"
#include "plan/rail_block.hpp"
#include "plan/token_routes.hpp"
#include "plan/topology.hpp"
#include "util/host_buffer.hpp"

namespace epcomm::detail {

class Engine;
struct ReusableLayout;
struct SavedLayout;
struct DeviceDispatchInput;

// Returns the engine's communicator to the group's pool on destruction (see
// comm_pool.hpp), also when the owner's constructor throws later on.
struct CommLease {
  CommPool& pool;
  int index = -1;
  ~CommLease() {
    if (index >= 0) pool.give_back(index);
  }
};

// Private (per rank) buffers of one slot, sized from the declared maxima.
struct SlotBuffers {
  std::atomic<bool> busy{false};  // a DispatchOp holds the slot
  TokenRoutes routes;
  // Inter-node buffers (host memory; with device memory, registered so kernels
  // read and write them in place). Send buffers are packed, one block per
  // destination node; receive buffers hold a fixed block per source node
  // (block_offset()), so a one-sided transport can write without asking where.
  HostBuffer rail_send, rail_recv;          // dispatch
  HostBuffer combine_send, combine_recv;    // combine
  std::vector<std::shared_ptr<void>> registrations;    // of the four above; freed first
  // The four above as regions of the inter-node tier (the same ids on every rank).
  RegionId rail_send_region = -1, rail_recv_region = -1, combine_send_region = -1, combine_recv_region = -1;

  // Work buffers in the exchange's memory space (host storage below, or GPU).
  std::byte* token_staging = nullptr;  // dispatch: input rows encoded, indexed by token
  float* own_partials = nullptr;       // combine: this node's partials of my own tokens (device, one node: none)
  float* partial_acc = nullptr;        // combine: owner and remote partials (and on the
  int64_t partial_acc_rows = 0;        //   host the final sums) before encoding, this
                                       //   many rows at a time
  float* own_subtotals = nullptr;      // combine (host): the forwarder's own rows' sums,
                                       //   partial_acc_rows at a time
  // Device memory: rail_recv and combine_recv copied to the GPU chunk by chunk as
  // they land, at the same offsets, so kernels read received rows from GPU memory
  // (a bulk copy by the copy engine) rather than row by row across PCIe. With
  // GPU-direct rails (Engine::rails_on_device()) the tier writes them itself.
  std::byte* rail_recv_staged = nullptr;
  std::byte* combine_recv_staged = nullptr;
  // Device memory, where GPU direct may apply (rail_memory.hpp): send blocks in
  // GPU memory, used instead of rail_send and combine_send with GPU-direct rails.
  std::byte* rail_send_direct = nullptr;
  std::byte* combine_send_direct = nullptr;
  // The send blocks the tier reads, packed and encoded into: rail_send and
  // combine_send, or the two above with GPU-direct rails.
  std::byte* rail_send_block = nullptr;
  std::byte* combine_send_block = nullptr;
  // Device memory: pinned host copies of the routing inputs (the dispatch's, once
  // it took the slot: see Engine's routing inbox).
  int32_t* topk_idx_host = nullptr;
  float* topk_weights_host = nullptr;
  std::unique_ptr<RowMover> mover;  // carries out this slot's batches, in order
  // Device memory: placement, fan-out and combine sums by kernels on the mover's
  // stream (declared after it: destroyed first).
  std::unique_ptr<DevicePlanSteps> plan;

  // Forwarding record of the last dispatch: the tokens this rank wrote to its node,
  // grouped by source node (own tokens at this node's index), and for each the
  // (local rank, token-list entry) pairs it reached, ranks_per_node slots apiece.
  // With device memory the record itself lives on the GPU (plan).
  std::vector<int32_t> handled_offset;  // [num_nodes + 1] into handled tokens
  std::vector<int32_t> route_count;     // [handled]
  std::vector<int32_t> route_local;     // [handled * ranks_per_node]
  std::vector<int32_t> route_entry;     // [handled * ranks_per_node]

  // Host memory space: storage behind the work buffers.
  HostBuffer host_staging, host_own_partials, host_partial_acc, host_own_subtotals;
};

class Op {
 public:
  Op(Engine& engine, uint64_t seq, const char* kind);
  virtual ~Op() = default;
  // One round of non-blocking work under the engine's lock; true if anything
  // moved. Throws on error.
  virtual bool advance() = 0;
  // Safe from any thread: completion is published with release semantics.
  bool done() const { return done_.load(std::memory_order_acquire); }
  // Phase name and the peers it still waits for, for timeout messages.
  virtual std::string phase() const = 0;
  virtual std::string outstanding() const = 0;

  Engine& engine() const { return engine_; }
  uint64_t seq() const { return seq_; }
  const char* kind() const { return kind_; }
  ExchangeStats stats;
  std::chrono::steady_clock::time_point last_step;

 protected:
  Engine& engine_;
  std::shared_ptr<Engine> keep_alive_;
  uint64_t seq_;
  const char* kind_;
  // Publishes completion (and lets the caller's stream go, with device memory).
  void mark_done();
  // For destructors of unfinished operations: abandons their requests. If MPI could
  // not cancel a receive, the engine (owner of the buffer it may still write) is
  // kept alive for the rest of the process instead of hanging in MPI_Wait.
  void abandon_requests(std::initializer_list<Transfers*> sets);

 private:
  std::atomic<bool> done_{false};
};

// Every entry point takes the engine's lock, so the caller's thread and the
// group's progress thread (when on) take turns; all MPI calls of an exchange are
// made under it.
class Engine : public std::enable_shared_from_this<Engine>, public Progressable {
 public:
  Engine(std::shared_ptr<GroupState> group, const ExchangeConfig& config);
  ~Engine();

  // route: an earlier dispatch whose routing this one reuses, or null; layout: an
  // earlier dispatch's layout this one reuses instead of exchanging its own, or null.
  std::shared_ptr<DispatchOp> begin_dispatch(const DispatchInput& input, const DispatchOp* route = nullptr,
                                             std::shared_ptr<const ReusableLayout> layout = nullptr);
  std::shared_ptr<CombineOp> begin_combine(const std::shared_ptr<DispatchOp>& route, const void* expert_out,
                                           int64_t expert_out_rows, void* out, int out_tokens,
                                           const CombineOptions& options);
  bool progress();
  void wait(Op& op);
  bool background_progress(bool& busy) override;
  // Registers with the group's progress thread; called once the engine is owned by
  // a shared_ptr (ops keep it alive through shared_from_this).
  void start_background();
  // Drops in-flight operations (their requests are cancelled): Exchange teardown.
  void abandon_all();

  // Throws Error(kGroupFailed) if an earlier operation failed.
  void check_healthy();
  void notify_progress_thread() const;

  // What the operations read of the engine's setup.
  const ExchangeConfig& config() const { return config_; }
  const Topology& topo() const { return topo_; }
  const kernels::Codec& dtype_codec() const { return dtype_codec_; }  // rows of config().dtype
  MPI_Comm comm() const { return comm_; }  // the engine's own duplicate of the group's
  const SlotLayout& slot_layout() const { return slot_layout_; }
  std::size_t rail_meta_bytes() const { return rail_meta_bytes_; }  // per token on the wire

  // Data members in construction order (destruction runs backwards, which the
  // comments rely on): the operations use the public ones, the rest is the
  // engine's own or read through the accessors above.
  GroupState& group;

 private:
  const ExchangeConfig config_;
  const Topology topo_;
  const kernels::Codec& dtype_codec_;
  const kernels::Codec& dispatch_codec_;
  const kernels::Codec& combine_codec_;
  CommLease comm_lease_{*group.exchange_comms};
  std::unique_ptr<NodeShm> shm_;
  MPI_Comm comm_ = MPI_COMM_NULL;  // from the group's pool
  SlotLayout slot_layout_;
  std::size_t rail_meta_bytes_ = 0;  // index, ids, weights

 public:
  // Device memory only (else null): GPU buffers, movers' streams, the stream gate.
  // Before the slots: their movers and registrations go first.
  std::unique_ptr<DeviceResources> device;

 private:
  // Where the node's GPUs lack peer access, the node's shared memory registered with
  // every GPU, one segment per node rank (after shm_ and device: released first).
  std::vector<std::shared_ptr<void>> shm_registrations_;
  // One slot's payload arrays in GPU memory: those not in the node's shared memory
  // (slot_layout_.shm_parts), in a region node peers map where gpu_payload_shared_.
  SlotPayload device_payload_;
  bool gpu_payload_shared_ = true;
  int tag_base_ = 0;                   // the exchange's first MPI tag (mpi_tags.hpp)
  GpuDirectMode gpu_direct_mode_ = GpuDirectMode::kAuto;  // EPCOMM_GPU_DIRECT
  // Device memory with rows crossing nodes: what this rank offers for GPU direct
  // (else null), and where its inter-node blocks live.
  std::unique_ptr<GpuDirectSupport> gpu_direct_;
  RailMemory rails_;
  // After shm and comm: destroyed before both (it reads one and receives on the other).
  std::unique_ptr<FailureChannel> failures_;
  std::unique_ptr<OpAgreement> agreement_;

 public:
  std::deque<SlotBuffers> slots;  // a deque: slots hold atomics and never move
  // After the slots: destroyed first, deregistering their memory before it is freed.
  std::unique_ptr<InterNode> internode;
  // ExchangeConfig::checksum, else null.
  std::unique_ptr<NodePeerChecksums> node_checksums;

  // Bytes on the inter-node tier: the dispatch block of `tokens` tokens, records
  // and rows (plan/rail_block.hpp); a combine partial.
  std::size_t rail_bytes(std::size_t tokens) const {
    return detail::rail_block_bytes(tokens, rail_meta_bytes_, slot_layout_.row_bytes);
  }
  std::size_t rail_records_bytes(std::size_t tokens) const {
    return detail::rail_records_bytes(tokens, rail_meta_bytes_);
  }
  std::size_t combine_row_bytes() const { return combine_codec_.row_bytes(config_.hidden); }
  // Bytes of one node's block in an inter-node buffer: max_tokens_per_rank tokens,
  // rounded up to keep the next block 16-byte aligned. Every inter-node buffer
  // holds num_nodes - 1 of them.
  std::size_t rail_block_bytes() const;
  std::size_t combine_block_bytes() const;

  bool on_device() const { return device != nullptr; }
  // Device memory: whether the inter-node tier moves this rank's blocks in GPU
  // memory itself (CUDA-aware MPI, GPUDirect RDMA) rather than pinned host
  // buffers the GPU packs and unpacks (rail_memory.hpp).
  bool rails_on_device() const { return rails_.space == MemorySpace::kDevice; }
  // A slot as its users see it: control, layout and plan metadata in the node's
  // shared memory; rows and expert outputs there too, or in GPU memory.
  SlotView slot_view(int local_rank, int slot) const;
  // The tag of an operation's phase (mpi_tags.hpp).
  int mpi_tag(uint64_t seq, int phase) const { return exchange_tag(tag_base_, seq, phase); }
  // First node peer whose flag is below `seq`, or -1.
  int first_local_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const;
  std::string local_ranks_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const;

 private:
  // The make_internode callback: registers every slot's inter-node blocks, in GPU
  // memory where rail_memory.hpp's choice says so (rails_), else in host memory.
  void register_rail_regions(InterNode& net);
  bool progress_locked();
  void fail_op(Op& op, ErrorCode code, const std::string& why) { fail(op.seq(), code, why); }
  // Records the failure of operation `seq`, publishes it in shared memory and tells
  // every rank (which then fail with kGroupFailed naming this rank).
  void fail(uint64_t seq, ErrorCode code, const std::string& why);
  // Reads the failure channel; throws Error(kGroupFailed) naming the origin if a
  // peer failed, or rejected a begin this rank made as an operation. Then compares
  // the peers' operation headers; throws Error(kMismatch) if one began another op.
  void check_peers();
  // Runs a begin's checks; if one throws, announces the rejection and rethrows.
  template <class Checks>
  void checked_begin(Checks&& checks);
  BeginPosition position() const { return {next_seq_, rejections_}; }
  // Device memory, the part of a dispatch begin before its checks (without mu_).
  // On one node, with the slot the dispatch will take free: enqueues on the
  // slot's mover the GPU's check and count of the routing (count_routes) and
  // waits for the counts only; with a reused layout (`reuse`) and rows that need
  // no encode after routing, the GPU compares the counts with the layout's and
  // nothing is waited for. Otherwise enqueues the copy of the caller's routing
  // inputs into the routing inbox, for the host's checks and routes, and waits
  // for it (input then points at the inbox). Either way, for a dispatch format
  // that cannot fail to encode, enqueues the encode of every input row into the
  // slot's staging matrix, so the GPU encodes while the host routes. Fills `out`.
  void fetch_device_input(DispatchInput& input, const SavedLayout* reuse, DeviceDispatchInput& out);
  // The routes of the dispatch taking `slot` from count_routes' counts (pinned);
  // throws the host check's error for the first bad pick they name.
  void routes_from_device_counts(int slot, const DispatchInput& given, const int32_t* counts, TokenRoutes& routes);
  std::shared_ptr<GroupState> group_owner_;
  // Device memory: dispatch begins one at a time (taken before mu_), so the routing
  // inbox and the slot a begin encodes into stay its own until it took the slot.
  std::mutex begin_mu_;
  // Whether a dispatch on GPU memory on one node may be counted on the GPU
  // (EPCOMM_GPU_COUNTS).
  const bool gpu_counts_;
  // Pinned host memory the next dispatch's routing inputs are copied into; it
  // trades places with the slot's copies when the dispatch takes the slot.
  int32_t* inbox_topk_idx_ = nullptr;
  float* inbox_topk_weights_ = nullptr;
  std::mutex mu_;
  std::atomic<int> waiters_{0};  // threads inside wait(): the progress thread leaves the engine to them
  NodePeerWatch peer_watch_{group};  // node peers killed while operations wait
  bool registered_ = false;
  std::vector<std::shared_ptr<Op>> inflight_;
  // Operations a failure cut short, dropped at teardown (abandon_all) rather than in
  // fail(): cancelling a receive whose sender died takes a grace period, which must
  // not delay this rank's report of the failure.
  std::vector<std::shared_ptr<Op>> abandoned_;
  // A failure's: inflight_ into abandoned_, and the row work the movers still
  // queue for them forgotten.
  void set_inflight_aside();
  uint64_t next_seq_ = 1;
  uint64_t rejections_ = 0;  // begins rejected by their checks (they take no sequence number)
  uint64_t dispatch_count_ = 0;
  std::string failure_;  // the first error's message; empty while healthy
  ErrorCode failure_code_ = ErrorCode::kGroupFailed;
  bool failure_reported_ = false;
};

}  // namespace epcomm::detail
