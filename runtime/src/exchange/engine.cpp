// SPDX-License-Identifier: MIT
#include "exchange/engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <thread>

#include "device/peer_access.hpp"
#include "exchange/combine_op.hpp"
#include "exchange/config_agreement.hpp"
#include "exchange/dispatch_op.hpp"
#include "exchange/internode_factory.hpp"
#include "progress/backoff.hpp"
#include "util/agree.hpp"
#include "util/check.hpp"
#include "util/env.hpp"
#include "util/log.hpp"
#include "util/memory_limits.hpp"
#include "util/roll_call.hpp"

namespace epcomm::detail {
namespace {

using Clock = std::chrono::steady_clock;

// The rank-level header at the start of each segment, before the slots: the
// rank's failure record.
constexpr std::size_t kHeaderBytes = 4096;
static_assert(sizeof(FailureRecord) <= kHeaderBytes);
constexpr int kTagSpan = kTagHeader + 1;  // tags of one exchange: [tag_base, tag_base + kTagSpan)

// The config as the environment amends it (EPCOMM_CHECKSUM=1 turns checksums on,
// EPCOMM_GPU_SM_BUDGET sets a budget left 0).
ExchangeConfig with_environment(ExchangeConfig c) {
  c.checksum = c.checksum || env::checksum();
  if (c.gpu_sm_budget == 0) c.gpu_sm_budget = env::gpu_sm_budget();
  return c;
}

void validate_local(const ExchangeConfig& c, const GroupState& g) {
  EPCOMM_REQUIRE(c.num_experts > 0 && c.num_experts % g.size == 0, kInvalidArgument,
                 "num_experts=" << c.num_experts << " must be a positive multiple of the group size " << g.size);
  EPCOMM_REQUIRE(c.topk >= 1 && c.topk <= c.num_experts, kInvalidArgument,
                 "topk=" << c.topk << " must be in [1, num_experts=" << c.num_experts << "]");
  EPCOMM_REQUIRE(c.hidden >= 1, kInvalidArgument, "hidden=" << c.hidden << " must be positive");
  EPCOMM_REQUIRE(c.max_tokens_per_rank >= 0, kInvalidArgument,
                 "max_tokens_per_rank=" << c.max_tokens_per_rank << " is negative");
  EPCOMM_REQUIRE(c.expert_alignment >= 1, kInvalidArgument,
                 "expert_alignment=" << c.expert_alignment << " must be >= 1");
  EPCOMM_REQUIRE(c.max_recv_rows >= 0 && c.max_recv_rows <= INT32_MAX, kInvalidArgument,
                 "max_recv_rows=" << c.max_recv_rows << " must be in [0, 2^31)");
  EPCOMM_REQUIRE(c.max_inflight >= 1 && c.max_inflight <= 64, kInvalidArgument,
                 "max_inflight=" << c.max_inflight << " must be in [1, 64]");
  EPCOMM_REQUIRE(c.dtype == DType::kF32 || c.dtype == DType::kBF16, kInvalidArgument,
                 "unknown dtype value " << static_cast<int>(c.dtype));
  EPCOMM_REQUIRE(is_known_format(c.dispatch_format), kInvalidArgument,
                 "unknown dispatch_format value " << static_cast<int>(c.dispatch_format));
  EPCOMM_REQUIRE(is_known_format(c.combine_format), kInvalidArgument,
                 "unknown combine_format value " << static_cast<int>(c.combine_format));
  EPCOMM_REQUIRE(c.memory == MemorySpace::kHost || c.memory == MemorySpace::kDevice, kInvalidArgument,
                 "unknown memory space value " << static_cast<int>(c.memory));
  // The upper bound, the device's SM count, is checked with the device.
  EPCOMM_REQUIRE(c.gpu_sm_budget >= 0, kInvalidArgument,
                 "ExchangeConfig::gpu_sm_budget=" << c.gpu_sm_budget << " is negative (0 = no bound)");
}

// Carves consecutive, 256-byte aligned pieces out of one allocation (null base:
// only measures).
class Carver {
 public:
  explicit Carver(std::byte* base) : base_(base) {}
  template <class T>
  T* take(std::size_t count) {
    const std::size_t at = aligned(used_);
    used_ = at + count * sizeof(T);
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  // Bytes taken, rounded so that the next allocation carved after it is aligned.
  std::size_t bytes() const { return aligned(used_); }
  static std::size_t aligned(std::size_t n) { return (n + 255) / 256 * 256; }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

// Every rank compares every rank's config, so a mismatch fails all of them at once.
ConstructionAgreement check_config_agrees(const ExchangeConfig& c, GroupState& g) {
  const ConfigField fields[] = {{"num_experts", c.num_experts},
                                {"topk", c.topk},
                                {"hidden", c.hidden},
                                {"max_tokens_per_rank", c.max_tokens_per_rank},
                                {"dtype", static_cast<int64_t>(c.dtype)},
                                {"dispatch_format", static_cast<int64_t>(c.dispatch_format)},
                                {"combine_format", static_cast<int64_t>(c.combine_format)},
                                {"expert_alignment", c.expert_alignment},
                                {"max_recv_rows", c.max_recv_rows},
                                {"max_inflight", c.max_inflight},
                                {"transport (EPCOMM_TRANSPORT)", static_cast<int64_t>(g.transport)},
                                {"checksum (EPCOMM_CHECKSUM)", c.checksum ? 1 : 0},
                                {"memory", static_cast<int64_t>(c.memory)},
                                {"gpu_sm_budget (EPCOMM_GPU_SM_BUDGET)", c.gpu_sm_budget}};
  return agree_on_construction(g, "ExchangeConfig", "Exchange construction", fields);
}

FailureRecord* header_of(const NodeShm& shm, int local_rank) {
  return reinterpret_cast<FailureRecord*>(shm.base(local_rank));
}

}  // namespace

Op::Op(Engine& engine, uint64_t seq, const char* kind)
    : last_step(Clock::now()), engine_(engine), keep_alive_(engine.shared_from_this()), seq_(seq), kind_(kind) {}

Engine::Engine(std::shared_ptr<GroupState> g, const ExchangeConfig& c)
    : group(*g),
      config_(with_environment(c)),
      topo_{g->size, g->ranks_per_node, c.num_experts, c.topk},
      dtype_codec_(kernels::codec_for(kernels::plain_format(c.dtype))),
      dispatch_codec_(kernels::codec_for(c.dispatch_format)),
      combine_codec_(kernels::codec_for(c.combine_format)),
      group_owner_(std::move(g)),
      gpu_counts_(env::gpu_counts()) {
  validate_local(config_, group);
  gpu_direct_mode_ = gpu_direct_mode();
  const ConstructionAgreement agreed = check_config_agrees(config_, group);
  const uint64_t exchange_id = agreed.id;
  comm_ = group.exchange_comms->take(agreed.comm_index, group.comm, group.timeout_s);
  comm_lease_.index = agreed.comm_index;

  const int P = topo_.num_ranks, J = topo_.experts_per_rank(), L = topo_.max_rows_per_token_rank();
  const int64_t T = config_.max_tokens_per_rank;
  slot_layout_.num_sources = P;
  slot_layout_.num_local_experts = J;
  slot_layout_.max_rows_per_token = L;
  slot_layout_.row_bytes = dispatch_codec_.row_bytes(config_.hidden);
  slot_layout_.out_row_bytes = dtype_codec_.row_bytes(config_.hidden);
  slot_layout_.partial_row_bytes = combine_codec_.row_bytes(config_.hidden);
  slot_layout_.max_rows = config_.max_recv_rows > 0
                             ? config_.max_recv_rows
                             : std::min<int64_t>(INT32_MAX, T * P * L + int64_t{J} * (config_.expert_alignment - 1));
  slot_layout_.max_tokens = std::min<int64_t>(T * P, slot_layout_.max_rows);
  // Host memory: each owner keeps its partials, by token-list entry. Device
  // memory: the R - 1 node peers push theirs to the forwarder, each at most one
  // per token that forwarder handles (T per node) and per entry of its list.
  const int64_t R = topo_.ranks_per_node;
  slot_layout_.partial_rows = config_.memory == MemorySpace::kHost
                                  ? slot_layout_.max_tokens
                                  : (R - 1) * std::min<int64_t>(T * topo_.num_nodes(), slot_layout_.max_tokens);
  // Host memory: the whole payload in the node's shared memory, checksums
  // included. Device memory: in GPU memory, checksums beside the rows
  // (docs/failures.md); but where the node's GPUs cannot map each other's memory, the arrays node
  // peers write or read stay in the node's shared memory, which every GPU of the
  // node reaches over PCIe once registered (docs/gpu.md).
  const bool host = config_.memory == MemorySpace::kHost;
  const NodePeerAccess peer_access = host ? NodePeerAccess{} : node_peer_access(group, config_.device);
  gpu_payload_shared_ = peer_access.all;
  slot_layout_.shm_parts = host ? kAllSlotParts : peer_access.all ? 0u : unsigned{kPeerArrays};
  slot_layout_.compute();
  // With checksums and peer access, the checksum tables sit in GPU memory beside
  // the rows, where the kernels that write and read the rows sign and check them.
  const unsigned device_checksums = config_.checksum && peer_access.all ? unsigned{kChecksumArrays} : 0u;
  device_payload_ =
      slot_layout_.payload(host ? 0u : (kPeerArrays | kOwnArrays | device_checksums) & ~slot_layout_.shm_parts);
  rail_meta_bytes_ = sizeof(int32_t) * (1 + 2 * static_cast<std::size_t>(config_.topk));

  // One MPI message carries all rows between a rank and one rail peer.
  const std::size_t widest_block = std::max(rail_block_bytes(), combine_block_bytes());
  EPCOMM_REQUIRE(static_cast<double>(widest_block) < INT_MAX, kInvalidArgument,
                 "max_tokens_per_rank=" << T << " makes blocks of " << widest_block
                                        << " bytes, more than one MPI message (2 GiB); lower it");

  shm_ = std::make_unique<NodeShm>(group, kHeaderBytes + slot_layout_.bytes * config_.max_inflight,
                                  "exchange slots");
  std::vector<FailureRecord*> records;
  for (int ld = 0; ld < topo_.ranks_per_node; ++ld) records.push_back(header_of(*shm_, ld));
  void* tag_ub = nullptr;
  int has_ub = 0;
  EPCOMM_MPI(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &has_ub));  // set on the world only
  const int bases = has_ub ? std::max(1, *static_cast<int*>(tag_ub) / kTagSpan) : 1;
  tag_base_ = static_cast<int>(exchange_id % static_cast<uint64_t>(bases)) * kTagSpan;
  failures_ = std::make_unique<FailureChannel>(comm_, tag_base_ + kTagFailure, group.rank, group.size, exchange_id,
                                              std::move(records), group.local_rank);
  agreement_ = std::make_unique<OpAgreement>(comm_, tag_base_ + kTagHeader, group.rank, group.size);

  const int N = topo_.num_nodes();
  const std::size_t remote_nodes = static_cast<std::size_t>(N - 1);
  const std::size_t handled = static_cast<std::size_t>(T) * N;
  const std::size_t H = static_cast<std::size_t>(config_.hidden);
  // Rows are encoded once into a staging matrix unless the input already is rows.
  const bool staged = config_.dispatch_format != kernels::plain_format(config_.dtype);
  // The device encodes all of a node's remote partials at once, the host a few at
  // a time (a cache-sized scratch, also for the owner partials, the forwarder's
  // own subtotals and the final sums, which the device keeps in its kernels'
  // registers).
  const int64_t partial_rows = config_.memory == MemorySpace::kDevice ? (N == 1 ? 0 : T) : std::min<int64_t>(T, 64);
  // Rows in GPU memory that cross nodes: what this rank offers for moving them
  // without host staging, and whether to set GPU send blocks aside for it.
  if (config_.memory == MemorySpace::kDevice && N > 1 && T > 0) {
    gpu_direct_ = std::make_unique<GpuDirectSupport>(detect_gpu_direct(config_.device));
  }
  const bool direct_blocks =
      gpu_direct_ && gpu_direct_may_apply(gpu_direct_mode_, config_.checksum, *gpu_direct_, group.transport);
  // One slot's work buffers on the GPU, carved from base (null: only measures).
  // No out_acc: the device sums each output row in registers; on one node no
  // own_partials either: the forwarder's sums are the output (combine_op.cpp).
  const auto carve = [&](std::byte* base, SlotBuffers* s) {
    Carver piece(base);
    auto* staging = piece.take<std::byte>(staged ? T * slot_layout_.row_bytes : 0);
    auto* own = piece.take<float>(N == 1 ? 0 : T * H);
    auto* partial = piece.take<float>(partial_rows * H);
    auto* rail_staged = piece.take<std::byte>(remote_nodes * rail_block_bytes());
    auto* combine_staged = piece.take<std::byte>(remote_nodes * combine_block_bytes());
    auto* rail_direct = piece.take<std::byte>(direct_blocks ? remote_nodes * rail_block_bytes() : 0);
    auto* combine_direct = piece.take<std::byte>(direct_blocks ? remote_nodes * combine_block_bytes() : 0);
    if (s != nullptr) {
      s->rail_recv_staged = rail_staged;
      s->combine_recv_staged = combine_staged;
      s->rail_send_direct = direct_blocks ? rail_direct : nullptr;
      s->combine_send_direct = direct_blocks ? combine_direct : nullptr;
      s->token_staging = staging;
      s->own_partials = own;
      s->partial_acc = partial;
    }
    return piece.bytes();
  };
  // Pinned copies of the routing inputs: one per slot and the routing inbox.
  const std::size_t pinned_slot = 2 * static_cast<std::size_t>(T) * config_.topk * sizeof(int32_t) + 256;
  const std::size_t private_slot = carve(nullptr, nullptr);
  // Every rank learns whether all could allocate, so none goes on to wait for a
  // rank that gave up here.
  std::string alloc_error;
  ErrorCode alloc_code = ErrorCode::kSystem;
  try {
    if (config_.memory == MemorySpace::kDevice) {
      device = make_device_resources(group, config_.device, config_.gpu_sm_budget,
                                     device_payload_.bytes * config_.max_inflight, gpu_payload_shared_,
                                     private_slot * config_.max_inflight, pinned_slot * (config_.max_inflight + 1));
      if (!gpu_payload_shared_) {
        for (int ld = 0; ld < topo_.ranks_per_node; ++ld) {
          shm_registrations_.push_back(device->register_host(shm_->base(ld), shm_->bytes_per_rank()));
        }
        const char* what = "the exchange's rows, row metadata and owner partials go through the node's shared memory "
                           "(pinned, mapped into each GPU: PCIe) rather than from GPU to GPU; expert outputs stay in "
                           "GPU memory";
        if (peer_access.forced) {
          EPCOMM_LOG(kInfo, "exchange: " << peer_access.why_not << ": " << what);
        } else {
          EPCOMM_LOG(kWarn, "exchange: " << peer_access.why_not << ": " << what);
        }
      }
      Carver inbox(device->pinned_base() + pinned_slot * config_.max_inflight);
      inbox_topk_idx_ = inbox.take<int32_t>(static_cast<std::size_t>(T) * config_.topk);
      inbox_topk_weights_ = inbox.take<float>(static_cast<std::size_t>(T) * config_.topk);
    }

    for (int i = 0; i < config_.max_inflight; ++i) {
      SlotBuffers& s = slots.emplace_back();
      // Private buffers are placed (NUMA) and first-touched by the group's movers.
      WorkerPool& movers = *group.movers;
      s.rail_send.allocate(remote_nodes * rail_block_bytes(), movers, "the dispatch send buffer of a slot");
      s.rail_recv.allocate(remote_nodes * rail_block_bytes(), movers, "the dispatch receive buffer of a slot");
      s.combine_send.allocate(remote_nodes * combine_block_bytes(), movers, "the combine send buffer of a slot");
      s.combine_recv.allocate(remote_nodes * combine_block_bytes(), movers, "the combine receive buffer of a slot");
      s.partial_acc_rows = partial_rows;
      if (device) {
        carve(device->private_base() + private_slot * i, &s);
        Carver pinned(device->pinned_base() + pinned_slot * i);
        s.topk_idx_host = pinned.take<int32_t>(static_cast<std::size_t>(T) * config_.topk);
        s.topk_weights_host = pinned.take<float>(static_cast<std::size_t>(T) * config_.topk);
        for (HostBuffer* v : {&s.rail_send, &s.rail_recv, &s.combine_send, &s.combine_recv}) {
          s.registrations.push_back(device->register_host(v->data(), v->size()));
        }
        // One operation's lists: row copies (16 bytes each) of the rail packing, and
        // what the plan steps upload (the routes' token lists, the layouts, the
        // token-list entries of the owner partials and their sources).
        const std::size_t TN = static_cast<std::size_t>(T) * N;
        const std::size_t entries = static_cast<std::size_t>(slot_layout_.max_tokens);
        s.mover = device->make_mover(16 * TN + 4 * TN + 8 * entries + (1 << 20));
        PlanStepsShape shape;
        shape.topo = topo_;
        shape.node = group.node;
        shape.local_rank = group.local_rank;
        shape.hidden = config_.hidden;
        shape.max_tokens = T;
        shape.max_entries = slot_layout_.max_tokens;
        shape.record_bytes = rail_meta_bytes_;
        for (int ld = 0; ld < topo_.ranks_per_node; ++ld) shape.owners.push_back(slot_view(ld, i));
        // The kernels sign and check node peers' rows only where the checksum
        // tables are in GPU memory beside them (not through shared memory).
        shape.checksum = (device_payload_.parts & kChecksumArrays) != 0;
        s.plan = device->make_plan_steps(*s.mover, std::move(shape));
      } else {
        s.host_staging.allocate(staged ? static_cast<std::size_t>(T) * slot_layout_.row_bytes : 0, movers,
                                "the encoded input rows of a slot");
        s.host_own_partials.allocate(static_cast<std::size_t>(T) * H * sizeof(float), movers,
                                     "the combine partials of a slot");
        s.host_partial_acc.allocate(static_cast<std::size_t>(partial_rows) * H * sizeof(float), movers,
                                    "the combine partial sums of a slot");
        s.host_own_subtotals.allocate(static_cast<std::size_t>(partial_rows) * H * sizeof(float), movers,
                                      "the combine subtotals of a slot");
        s.token_staging = s.host_staging.data();
        s.own_partials = s.host_own_partials.as<float>();
        s.partial_acc = s.host_partial_acc.as<float>();
        s.own_subtotals = s.host_own_subtotals.as<float>();
        s.mover = make_host_row_mover(movers);
      }
      s.handled_offset.resize(N + 1);
      if (!device) {
        resize_or_fail(s.route_count, handled, "the routes of a slot");
        resize_or_fail(s.route_local, handled * topo_.ranks_per_node, "the routes of a slot");
        resize_or_fail(s.route_entry, handled * topo_.ranks_per_node, "the routes of a slot");
      }
    }
  } catch (const Error& e) {
    alloc_error = e.what();
    alloc_code = e.code();
  }
  const char allocated = alloc_error.empty() ? 1 : 0;
  const std::vector<std::byte> all_allocated =
      roll_call(group.comm, 3, &allocated, 1, group.setup_attempts, group.timeout_s, "Exchange allocation",
                &group.setup_left_messages);
  if (!alloc_error.empty()) throw Error(alloc_code, alloc_error);
  std::string short_of_memory;
  for (int r = 0; r < group.size; ++r) {
    if (all_allocated[r] == std::byte{0}) short_of_memory += (short_of_memory.empty() ? "" : ", ") + std::to_string(r);
  }
  EPCOMM_REQUIRE(short_of_memory.empty(), kSystem,
                 "ranks " << short_of_memory << " could not allocate their exchange buffers (see their errors)");
  const InterNodeSetup setup{
      group, comm_, tag_base_, config_.checksum, config_.max_inflight, N > 1 && T > 0, gpu_direct_.get()};
  // A rank may fail here alone (EPCOMM_GPU_DIRECT=1 where GPU direct is missing):
  // all learn it, so none waits in a later collective for it.
  std::string setup_error;
  ErrorCode setup_code = ErrorCode::kSystem;
  try {
    internode = make_internode(setup, [this](InterNode& net) { register_rail_regions(net); });
  } catch (const Error& e) {
    setup_error = e.what();
    setup_code = e.code();
  }
  const std::string setup_failed = ranks_that_failed(comm_, setup_error.empty());
  if (!setup_error.empty()) throw Error(setup_code, setup_error);
  EPCOMM_REQUIRE(setup_failed.empty(), kUnsupported,
                 "ranks " << setup_failed << " could not set up the inter-node transport (see their errors)");
  if (gpu_direct_) {
    EPCOMM_LOG(kInfo, "exchange: inter-node rows from GPU memory "
                          << (rails_on_device() ? "go GPU direct" : "are staged through pinned host memory")
                          << " over the " << internode->name() << " tier (EPCOMM_GPU_DIRECT="
                          << to_string(gpu_direct_mode_) << "): " << rails_.why
                          << "; detected: " << gpu_direct_->describe());
  }
  // Rows in GPU memory carry checksums in GPU memory beside them, signed and
  // checked by the kernels; not where node peers go through shared memory without
  // peer access (docs/failures.md).
  if (config_.checksum &&
      ((slot_layout_.shm_parts & kChecksumArrays) != 0 || (device_payload_.parts & kChecksumArrays) != 0)) {
    node_checksums = std::make_unique<NodePeerChecksums>(group, device != nullptr);
  }
  EPCOMM_LOG(kInfo, "exchange: hidden " << config_.hidden << ", " << config_.num_experts << " experts, top-"
                                        << config_.topk << ", " << config_.max_inflight << " slots of "
                                        << slot_layout_.bytes + device_payload_.bytes << " shared bytes ("
                                        << slot_layout_.max_rows << " rows, owner partials "
                                        << static_cast<std::size_t>(slot_layout_.partial_rows) * combine_row_bytes()
                                        << " bytes), inter-node transport " << internode->name());
}

void Engine::register_rail_regions(InterNode& net) {
  // Called again when verbs was tried and abandoned for MPI: chosen anew.
  for (SlotBuffers& s : slots) {
    s.rail_send_region = s.rail_recv_region = s.combine_send_region = s.combine_recv_region = -1;
  }
  rails_ = gpu_direct_ ? choose_rail_memory(gpu_direct_mode_, config_.checksum, net.name(),
                                            net.device_memory_unsupported())
                       : RailMemory{MemorySpace::kHost, "the exchange's memory is host memory"};
  const auto register_all = [&](MemorySpace space) {
    const bool direct = space == MemorySpace::kDevice;
    for (SlotBuffers& s : slots) {
      s.rail_send_block = direct ? s.rail_send_direct : s.rail_send.data();
      s.combine_send_block = direct ? s.combine_send_direct : s.combine_send.data();
      s.rail_send_region = net.register_region(s.rail_send_block, s.rail_send.size(), space);
      s.rail_recv_region =
          net.register_region(direct ? s.rail_recv_staged : s.rail_recv.data(), s.rail_recv.size(), space);
      s.combine_send_region = net.register_region(s.combine_send_block, s.combine_send.size(), space);
      s.combine_recv_region =
          net.register_region(direct ? s.combine_recv_staged : s.combine_recv.data(), s.combine_recv.size(), space);
    }
  };
  if (rails_on_device()) {
    try {
      register_all(MemorySpace::kDevice);
      return;
    } catch (const Error& e) {
      // The adapter is known only by trying: one that cannot take GPU memory
      // refuses the first region, before anything is registered, and the blocks
      // stay in host memory (unless GPU direct was required).
      if (gpu_direct_mode_ == GpuDirectMode::kOn || slots.front().rail_send_region >= 0) throw;
      rails_ = {MemorySpace::kHost, std::string("registering GPU memory failed: ") + e.what()};
    }
  }
  register_all(MemorySpace::kHost);
}

std::size_t Engine::rail_block_bytes() const {
  const std::size_t bytes = rail_bytes(static_cast<std::size_t>(config_.max_tokens_per_rank));
  return (bytes + detail::kRailBlockAlign - 1) / detail::kRailBlockAlign * detail::kRailBlockAlign;
}

std::size_t Engine::combine_block_bytes() const {
  return static_cast<std::size_t>(config_.max_tokens_per_rank) * combine_row_bytes();
}

void Op::mark_done() {
  done_.store(true, std::memory_order_release);
  if (engine_.device) engine_.device->release(seq_);
}

void Op::abandon_requests(std::initializer_list<Transfers*> sets) {
  bool released_all = true;
  for (Transfers* s : sets) released_all = s->abandon() && released_all;
  if (!released_all) {
    EPCOMM_LOG(kWarn, kind_ << " operation " << seq_
                            << ": a receive could not be cancelled (its peer stopped sending mid-message); "
                               "its buffers stay allocated until the process exits");
    new std::shared_ptr<Engine>(keep_alive_);  // deliberately never freed
  }
}

Engine::~Engine() {
  if (registered_) group.progress->remove(this);
  abandon_all();
}

void Engine::start_background() {
  if (group.progress) {
    group.progress->add(this);
    registered_ = true;
  }
}

void Engine::notify_progress_thread() const {
  if (group.progress) group.progress->notify();
}

void Engine::abandon_all() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!inflight_.empty()) {
    EPCOMM_LOG(kWarn, "dropping " << inflight_.size() << " unfinished exchange operation(s)");
  }
  set_inflight_aside();
  abandoned_.clear();
}

SlotView Engine::slot_view(int local_rank, int slot) const {
  SlotView v = SlotView::at(shm_->base(local_rank) + kHeaderBytes + slot_layout_.bytes * slot, slot_layout_);
  // A node peer's GPU payload is not mapped here where the GPUs lack peer access
  // (nor needed: it holds only that peer's own arrays): left null.
  if (device && (gpu_payload_shared_ || local_rank == group.local_rank)) {
    slot_layout_.point(device_payload_, device->shared_base(local_rank) + device_payload_.bytes * slot, v);
  }
  return v;
}

int Engine::first_local_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const {
  for (int ld = 0; ld < topo_.ranks_per_node; ++ld) {
    SlotView v = slot_view(ld, slot);
    // A peer that failed is behind for good: the next round's check_peers() reports
    // its failure record, naming the origin.
    if (load_flag(v.flags->*flag) < seq) return ld;
  }
  return -1;
}

std::string Engine::local_ranks_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const {
  std::string out;
  for (int ld = 0; ld < topo_.ranks_per_node; ++ld) {
    if (load_flag(slot_view(ld, slot).flags->*flag) < seq) {
      out += (out.empty() ? "" : ", ") + std::to_string(group.global_rank(group.node, ld)) + " (shared memory)";
    }
  }
  return out;
}

void Engine::check_healthy() {
  if (failure_.empty() && device && device->stream_wait_timed_out()) {
    failure_ = "epcomm rank " + std::to_string(group.rank) + ": a caller's stream held for an exchange operation " +
               "stopped waiting after " + std::to_string(group.timeout_s) +
               " s and went on: work enqueued after that operation may have read unfinished results";
    failure_code_ = ErrorCode::kTimeout;
    failure_reported_ = false;
  }
  if (failure_.empty()) return;
  // An error the progress thread met is reported once as itself, then the
  // exchange refuses work.
  if (!failure_reported_) {
    failure_reported_ = true;
    throw Error(failure_code_, failure_);
  }
  EPCOMM_FAIL(kGroupFailed, "the exchange is unusable after an earlier error: " << failure_);
}

void Engine::check_peers() {
  std::optional<PeerFailure> f = failures_->poll(position());
  if (!f) {
    if (std::optional<std::string> differ = agreement_->poll()) {
      const std::string why = "epcomm rank " + std::to_string(group.rank) + ": " + *differ;
      fail(next_seq_ - 1, ErrorCode::kMismatch, why);
      throw Error(ErrorCode::kMismatch, why);
    }
    return;
  }
  std::ostringstream why;
  why << "epcomm rank " << group.rank << ": the group failed because of rank " << f->origin;
  if (f->rejected_at) {
    why << ", which rejected the begin call that this rank made as operation " << f->rejected_at->seq
        << " (every rank must make the same begin calls; a begin rejected on one rank must be rejected on all)";
  }
  why << ": " << f->message;
  failure_ = why.str();
  failure_code_ = ErrorCode::kGroupFailed;
  failure_reported_ = true;
  // Whoever began the operation a peer rejected tells every rank, the rejecting
  // one included: the operation cannot complete anywhere.
  failures_->raise(f->origin, f->rejected_at ? f->rejected_at->seq : 0, failure_, f->rejected_at.has_value());
  set_inflight_aside();
  throw Error(ErrorCode::kGroupFailed, failure_);
}

// The checks take nothing: a rejected begin leaves no slot held and no sequence
// number used, so the exchange stays usable if every rank rejected it too.
template <class Checks>
void Engine::checked_begin(Checks&& checks) {
  check_healthy();
  check_peers();
  try {
    checks();
  } catch (const Error& e) {
    failures_->reject(position(), e.what());
    ++rejections_;
    throw;
  }
}

void Engine::fetch_device_input(DispatchInput& input, const SavedLayout* reuse, DeviceDispatchInput& out) {
  using Routes = DeviceDispatchInput::Routes;
  device->check_stream(input.stream);
  if (input.num_tokens <= 0 || input.num_tokens > config_.max_tokens_per_rank || !input.x || !input.topk_idx ||
      !input.topk_weights) {
    return;  // the checks reject it, or there is nothing to read
  }
  device->check_pointer(input.x, true, "DispatchInput::x");
  device->check_pointer(input.topk_idx, true, "DispatchInput::topk_idx");
  device->check_pointer(input.topk_weights, true, "DispatchInput::topk_weights");
  const Format format = config_.dispatch_format;
  const bool as_given = input.x_encoded || format == kernels::plain_format(config_.dtype);
  // LogFMT may fail on a value, and only a routed token's may fail the dispatch:
  // it encodes once the routes are known (DispatchOp::encode_routed_tokens).
  const bool encode_now = !as_given && logfmt_bits(format) == 0;
  DevicePlanSteps* plan = nullptr;
  {
    std::lock_guard<std::mutex> lk(mu_);
    SlotBuffers& s = slots[dispatch_count_ % slots.size()];
    // A slot held by a live handle is rejected by the checks; one that is free
    // stays free (only a begin takes a slot, and begins wait for begin_mu_).
    if (!s.busy) {
      // Across nodes the host packs the inter-node records from its copies of the
      // routing inputs and the routes' token lists: those still come to the host.
      const bool count_here = gpu_counts_ && topo_.num_nodes() == 1 && s.plan->can_count_routes();
      if (count_here || encode_now) s.mover->after(input.stream);
      if (count_here) {
        plan = s.plan.get();
        // The comparison on the GPU stands in for the host's only if nothing
        // before the dispatch's end reads the routes' lists by the counts (a
        // routed-token encode would).
        out.routes = reuse != nullptr && (as_given || encode_now) ? Routes::kReused : Routes::kCounted;
        std::vector<int32_t> expected;
        if (out.routes == Routes::kReused) {
          expected = reuse->expert_tokens;
          expected.insert(expected.end(), reuse->rank_tokens.begin(), reuse->rank_tokens.end());
          expected.insert(expected.end(), reuse->node_tokens.begin(), reuse->node_tokens.end());
        }
        plan->count_routes(input.topk_idx, input.topk_weights, input.num_tokens,
                           out.routes == Routes::kReused ? &expected : nullptr);
      }
      if (encode_now) {
        s.mover->encode(format, input.x, config_.dtype, input.num_tokens, config_.hidden, s.token_staging, nullptr);
        out.rows_encoded = true;
      }
    }
  }
  if (plan != nullptr) {
    // Only the counts (a few KB) come back, and only without a reused layout.
    if (out.routes == Routes::kCounted) out.counts = plan->counted_routes();
    return;
  }
  const std::size_t n = static_cast<std::size_t>(input.num_tokens) * config_.topk;
  device->read_async(input.stream, inbox_topk_idx_, input.topk_idx, n * sizeof(int32_t));
  device->read_async(input.stream, inbox_topk_weights_, input.topk_weights, n * sizeof(float));
  device->synchronize(input.stream);
  input.topk_idx = inbox_topk_idx_;
  input.topk_weights = inbox_topk_weights_;
}

void Engine::routes_from_device_counts(int slot, const DispatchInput& given, const int32_t* counts,
                                       TokenRoutes& routes) {
  const int E = topo_.num_experts, P = topo_.num_ranks;
  if (counts[0] >= 0) {
    // The first bad pick, as the host's check would find it: its token's row,
    // read back to name the value.
    const int K = topo_.topk;
    std::vector<int32_t> idx(K);
    std::vector<float> w(K);
    const std::size_t at = static_cast<std::size_t>(counts[0]) * K;
    RowMover& mover = *slots[slot].mover;
    mover.download(idx.data(), given.topk_idx + at, K * sizeof(int32_t));
    mover.download(w.data(), given.topk_weights + at, K * sizeof(float));
    reject_token_pick(topo_, idx.data(), w.data(), counts[0], counts[1]);
  }
  const int32_t* c = counts + kRouteCountsHeader;
  routes_from_counts(topo_, given.num_tokens, c, c + E, c + E + P, routes);
}

std::shared_ptr<DispatchOp> Engine::begin_dispatch(const DispatchInput& given, const DispatchOp* route,
                                                   std::shared_ptr<const ReusableLayout> layout) {
  DispatchInput input = given;
  // Device memory: the routing inputs come to the host first, once the caller's
  // stream reached them. Without the lock: that stream may still wait for earlier
  // operations, which the progress thread completes under it. An error here is
  // rejected below like any other check's.
  std::unique_lock<std::mutex> begin_lk(begin_mu_, std::defer_lock);
  std::exception_ptr device_error;
  DeviceDispatchInput device_input{given.topk_idx, given.topk_weights};
  using Routes = DeviceDispatchInput::Routes;
  if (device && input.memory == MemorySpace::kDevice) {
    begin_lk.lock();
    try {
      // A layout of another exchange is refused by the checks below.
      const bool own_layout = layout && layout->exchange.lock().get() == static_cast<const void*>(this);
      fetch_device_input(input, own_layout ? &layout->saved : nullptr, device_input);
    } catch (const Error&) {
      device_error = std::current_exception();
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  // Slots rotate in dispatch order, identically on every rank.
  const int slot = static_cast<int>(dispatch_count_ % slots.size());
  checked_begin([&] {
    if (device_error) std::rethrow_exception(device_error);
    EPCOMM_REQUIRE(input.memory == config_.memory, kInvalidArgument,
                   "DispatchInput::memory is " << to_string(input.memory) << " but the exchange was built for "
                                               << to_string(config_.memory) << " memory (ExchangeConfig::memory)");
    EPCOMM_REQUIRE(device || input.stream == nullptr, kInvalidArgument,
                   "DispatchInput::stream is set but the exchange's memory space is host");
    EPCOMM_REQUIRE(input.num_tokens >= 0 && input.num_tokens <= config_.max_tokens_per_rank, kBufferTooSmall,
                   "num_tokens=" << input.num_tokens << " exceeds the declared max_tokens_per_rank="
                                 << config_.max_tokens_per_rank);
    EPCOMM_REQUIRE(input.num_tokens == 0 || (input.x && input.topk_idx && input.topk_weights), kInvalidArgument,
                   "dispatch input has a null x, topk_idx or topk_weights with num_tokens=" << input.num_tokens);
    if (route) {
      EPCOMM_REQUIRE(&route->engine() == this, kInvalidArgument,
                     "dispatch along a DispatchHandle of another Exchange");
      EPCOMM_REQUIRE(input.num_tokens == route->num_tokens(), kInvalidArgument,
                     "dispatch along operation " << route->seq() << " got num_tokens=" << input.num_tokens
                                                 << " but that dispatch had " << route->num_tokens());
    }
    if (layout) {
      EPCOMM_REQUIRE(layout->exchange.lock().get() == static_cast<const void*>(this), kInvalidArgument,
                     "dispatch on a DispatchLayout of another Exchange");
    }
    EPCOMM_REQUIRE(!slots[slot].busy, kInvalidArgument,
                   "all " << slots.size() << " exchange slots are held by live DispatchHandles (slot " << slot
                          << " is still in use); drop a handle or raise max_inflight");
    // The routes of a free slot are scratch until the operation takes it; a
    // dispatch along an earlier route copies that route instead of building one.
    TokenRoutes& routes = slots[slot].routes;
    if (device_input.routes == Routes::kCounted) {
      routes_from_device_counts(slot, given, device_input.counts, routes);
    } else if (device_input.routes == Routes::kReused) {
      // The GPU checks the routing and compares the counts while the dispatch runs.
      const SavedLayout& saved = layout->saved;
      std::vector<int32_t> node_offset{0};
      for (int32_t c : saved.node_tokens) node_offset.push_back(node_offset.back() + c);
      routes_from_counts(topo_, input.num_tokens, saved.expert_tokens.data(), saved.rank_tokens.data(),
                         node_offset.data(), routes);
    } else if (route) {
      routes = slots[route->slot()].routes;
    } else {
      build_token_routes(topo_, input.topk_idx, input.topk_weights, input.num_tokens, routes);
    }
    if (layout && device_input.routes != Routes::kReused) {
      const std::string differs = first_count_difference(layout->saved, slots[slot].routes);
      EPCOMM_REQUIRE(differs.empty(), kInvalidArgument,
                     "dispatch on the layout of dispatch " << layout->origin << ": " << differs
                                                           << " (a reused layout needs the counts it was made from)");
    }
  });
  if (device && input.topk_idx == inbox_topk_idx_) {
    // The routing inputs stay with the slot for the operation's life.
    std::swap(slots[slot].topk_idx_host, inbox_topk_idx_);
    std::swap(slots[slot].topk_weights_host, inbox_topk_weights_);
  }
  std::shared_ptr<DispatchOp> op;
  try {
    const auto layout_of = static_cast<int32_t>(layout ? layout->origin & 0x7fffffff : 0);
    op = std::make_shared<DispatchOp>(*this, next_seq_, slot, input, std::move(layout),
                                      device ? &device_input : nullptr);
    agreement_->announce({OpHeader::kDispatch, layout_of, next_seq_, slot});
  } catch (const Error& e) {
    fail(next_seq_, e.code(), e.what());
    throw;
  }
  ++next_seq_;
  ++dispatch_count_;
  inflight_.push_back(op);
  return op;
}

std::shared_ptr<CombineOp> Engine::begin_combine(const std::shared_ptr<DispatchOp>& route, const void* expert_out,
                                                 int64_t expert_out_rows, void* out, int out_tokens,
                                                 const CombineOptions& options) {
  std::lock_guard<std::mutex> lk(mu_);
  checked_begin([&] {
    EPCOMM_REQUIRE(route && &route->engine() == this, kInvalidArgument,
                   "combine needs a DispatchHandle from this Exchange");
    EPCOMM_REQUIRE(route->done(), kInvalidArgument,
                   "combine on dispatch operation " << route->seq() << " before its wait() completed");
    EPCOMM_REQUIRE(!route->combine_in_flight, kInvalidArgument,
                   "a combine on dispatch operation " << route->seq() << " is already in flight");
    const int64_t rows = route->output().layout.num_rows();
    EPCOMM_REQUIRE(expert_out_rows >= rows, kBufferTooSmall,
                   "expert_out has " << expert_out_rows << " rows but the dispatch delivered " << rows);
    EPCOMM_REQUIRE(out_tokens >= route->num_tokens(), kBufferTooSmall,
                   "combine output holds " << out_tokens << " tokens but the dispatch sent " << route->num_tokens());
    EPCOMM_REQUIRE((rows == 0 || expert_out) && (route->num_tokens() == 0 || out), kInvalidArgument,
                   "combine got a null expert_out or out buffer");
    EPCOMM_REQUIRE(device || options.stream == nullptr, kInvalidArgument,
                   "combine got a stream but the exchange's memory space is host");
    if (device) {
      device->check_stream(options.stream);
      if (rows > 0) device->check_pointer(expert_out, true, "combine's expert_out");
      if (route->num_tokens() > 0) device->check_pointer(out, true, "combine's out");
    }
  });
  std::shared_ptr<CombineOp> op;
  try {
    op = std::make_shared<CombineOp>(*this, next_seq_, route, expert_out, out, options);
    agreement_->announce({OpHeader::kCombine, 0, next_seq_, static_cast<int64_t>(route->seq())});
  } catch (const Error& e) {
    fail(next_seq_, e.code(), e.what());
    throw;
  }
  ++next_seq_;
  inflight_.push_back(op);
  return op;
}

bool Engine::progress() {
  std::lock_guard<std::mutex> lk(mu_);
  return progress_locked();
}

bool Engine::background_progress(bool& busy) {
  // A caller inside wait() drives this engine itself: a second thread polling the
  // same requests only takes turns at the lock with it and, where ranks share
  // cores, takes the core a peer needs. Its wait() wakes the thread on leaving.
  if (waiters_.load(std::memory_order_acquire) > 0) return false;
  std::lock_guard<std::mutex> lk(mu_);
  if (!failure_.empty() || inflight_.empty()) return false;
  bool moved = false;
  try {
    moved = progress_locked();
  } catch (const Error&) {
    // progress_locked recorded the failure; the caller's next wait() reports it.
    failure_reported_ = false;
    return true;
  }
  busy |= !inflight_.empty();
  return moved;
}

bool Engine::progress_locked() {
  check_healthy();
  check_peers();
  bool moved = false;
  if (!inflight_.empty()) {
    try {
      moved = internode->poll();
    } catch (const Error& e) {
      fail_op(*inflight_.front(), e.code(), e.what());
      throw;
    }
  }
  const auto advance_all = [this, &moved] {
    for (std::size_t i = 0; i < inflight_.size(); ++i) {
      Op& op = *inflight_[i];
      try {
        if (op.advance()) {
          moved = true;
          op.last_step = Clock::now();
        }
      } catch (const Error& e) {
        fail_op(op, e.code(), e.what());
        throw;
      }
    }
  };
  advance_all();
  // The slots' queued row work (host movers). With other operations in flight, one
  // bounded round per slot and pass: a long copy or sum advances a share at a time
  // between the other operations' polls, and the lock is free between passes.
  // Alone, an operation has no one to interleave with, and every extra pass costs
  // MPI polls (which yield the core on an oversubscribed host): its work runs whole.
  bool rows_moved = false;
  for (SlotBuffers& s : slots) {
    while (s.mover->step()) {
      rows_moved = true;
      if (inflight_.size() > 1) break;
    }
  }
  if (rows_moved) {
    // Work that ran is a step of the operations waiting for it; those whose work is
    // complete publish now rather than a pass later.
    moved = true;
    for (const std::shared_ptr<Op>& op : inflight_) op->last_step = Clock::now();
    advance_all();
  }
  std::erase_if(inflight_, [](const std::shared_ptr<Op>& op) { return op->done(); });
  // A node peer's process gone stalls the operations for good; looked for only in
  // a round where nothing moved, when an operation may be waiting for it.
  if (!moved && !inflight_.empty()) {
    Op& first = *inflight_.front();
    try {
      peer_watch_.check(
          [&] { return "during " + std::string(first.kind()) + " operation " + std::to_string(first.seq()); });
    } catch (const Error& e) {
      fail_op(first, e.code(), e.what());
      throw;
    }
  }
  return moved;
}

void Engine::wait(Op& op) {
  // While this thread waits the progress thread leaves the engine to it, and takes
  // it back (for operations still in flight) once the wait ends, however it ends.
  struct Waiting {
    Engine& e;
    explicit Waiting(Engine& engine) : e(engine) { e.waiters_.fetch_add(1, std::memory_order_acq_rel); }
    ~Waiting() {
      e.waiters_.fetch_sub(1, std::memory_order_acq_rel);
      e.notify_progress_thread();
    }
  } waiting(*this);
  const auto wait_start = Clock::now();
  const auto timeout = std::chrono::duration<double>(group.timeout_s);
  Backoff backoff(group.host_ranks > group.host_cores, 64, 4096, std::chrono::microseconds(50));
  for (;;) {
    bool moved = false;
    {
      // The progress thread (if any) may hold the lock; then it is doing this work.
      std::unique_lock<std::mutex> lk(mu_, std::try_to_lock);
      if (lk.owns_lock()) {
        check_healthy();
        if (op.done()) return;
        moved = progress_locked();
        if (op.done()) {
          check_healthy();  // a held stream that gave up is this wait's error too
          return;
        }
        const auto now = Clock::now();
        if (!moved && now - std::max(op.last_step, wait_start) > timeout) {
          std::ostringstream why;
          why << op.kind() << " operation " << op.seq() << " timed out after " << group.timeout_s
              << " s in phase '" << op.phase() << "' waiting for ranks " << op.outstanding();
          const std::string message = "epcomm rank " + std::to_string(group.rank) + ": " + why.str();
          fail_op(op, ErrorCode::kTimeout, message);
          throw Error(ErrorCode::kTimeout, message);
        }
      }
    }
    if (moved) {
      backoff.reset();
    } else {
      backoff.pause();
    }
  }
}

void Engine::set_inflight_aside() {
  // Their queued row work never runs: the operations cannot complete anywhere.
  // Streams held for them go on (a peer's failure as well as this rank's; wait()
  // reports why), not after the group's timeout.
  if (device) device->release_all();
  for (SlotBuffers& s : slots) s.mover->forget_queued();
  abandoned_.insert(abandoned_.end(), inflight_.begin(), inflight_.end());
  inflight_.clear();
}

void Engine::fail(uint64_t seq, ErrorCode code, const std::string& why) {
  failure_ = why;
  failure_code_ = code;
  failure_reported_ = true;
  failures_->raise(group.rank, seq, why, true);
  set_inflight_aside();
}

}  // namespace epcomm::detail
