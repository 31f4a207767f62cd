// SPDX-License-Identifier: MIT
#include "exchange/engine.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <thread>

#include "exchange/combine_op.hpp"
#include "exchange/dispatch_op.hpp"
#include "progress/backoff.hpp"
#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

using Clock = std::chrono::steady_clock;

// The rank-level header at the start of each segment, before the slots.
struct RankHeader {
  alignas(64) uint64_t failed_seq;  // an operation this rank abandoned (0: none)
};
constexpr std::size_t kHeaderBytes = 4096;

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
}

// Carves consecutive, 256-byte aligned pieces out of one allocation.
class Carver {
 public:
  explicit Carver(std::byte* base) : base_(base) {}
  template <class T>
  T* take(std::size_t count) {
    const std::size_t at = (used_ + 255) / 256 * 256;
    used_ = at + count * sizeof(T);
    return base_ == nullptr ? nullptr : reinterpret_cast<T*>(base_ + at);
  }
  std::size_t used() const { return used_; }

 private:
  std::byte* base_;
  std::size_t used_ = 0;
};

// Every rank compares every rank's config, so a mismatch fails all of them at once.
void check_config_agrees(const ExchangeConfig& c, const GroupState& g) {
  static constexpr const char* kNames[] = {"num_experts",     "topk",           "hidden",
                                           "max_tokens_per_rank", "dtype",      "dispatch_format",
                                           "combine_format",  "expert_alignment", "max_recv_rows",
                                           "max_inflight",    "transport (EPCOMM_TRANSPORT)", "memory"};
  constexpr int kFields = sizeof(kNames) / sizeof(kNames[0]);
  const int64_t mine[kFields] = {c.num_experts,
                                 c.topk,
                                 c.hidden,
                                 c.max_tokens_per_rank,
                                 static_cast<int64_t>(c.dtype),
                                 static_cast<int64_t>(c.dispatch_format),
                                 static_cast<int64_t>(c.combine_format),
                                 c.expert_alignment,
                                 c.max_recv_rows,
                                 c.max_inflight,
                                 static_cast<int64_t>(g.transport),
                                 static_cast<int64_t>(c.memory)};
  std::vector<int64_t> all(static_cast<std::size_t>(kFields) * g.size);
  MPI_Request req;
  EPCOMM_MPI(MPI_Iallgather(mine, kFields, MPI_INT64_T, all.data(), kFields, MPI_INT64_T, g.comm, &req));
  const auto deadline = Clock::now() + std::chrono::duration<double>(g.timeout_s);
  for (int flag = 0;;) {
    EPCOMM_MPI(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    if (flag) break;
    if (Clock::now() > deadline) {
      EPCOMM_FAIL(kTimeout, "timed out after " << g.timeout_s
                                              << " s in phase 'setup': not every rank created the Exchange");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  for (int r = 0; r < g.size; ++r) {
    for (int f = 0; f < kFields; ++f) {
      const int64_t theirs = all[static_cast<std::size_t>(r) * kFields + f];
      EPCOMM_REQUIRE(theirs == mine[f], kMismatch,
                     "ExchangeConfig differs across ranks: rank " << r << " has " << kNames[f] << "=" << theirs
                                                                  << " but this rank has " << mine[f]);
    }
  }
}

RankHeader* header_of(const NodeShm& shm, int local_rank) {
  return reinterpret_cast<RankHeader*>(shm.base(local_rank));
}

}  // namespace

Op::Op(Engine& engine, uint64_t seq, const char* kind)
    : last_step(Clock::now()), engine_(engine), keep_alive_(engine.shared_from_this()), seq_(seq), kind_(kind) {}

Engine::Engine(std::shared_ptr<GroupState> g, const ExchangeConfig& c)
    : group(*g),
      config(c),
      topo{g->size, g->ranks_per_node, c.num_experts, c.topk},
      dispatch_codec(kernels::codec_for(c.dispatch_format)),
      combine_codec(kernels::codec_for(c.combine_format)),
      dtype_codec(kernels::codec_for(kernels::plain_format(c.dtype))),
      group_owner_(std::move(g)) {
  validate_local(config, group);
  check_config_agrees(config, group);
  EPCOMM_MPI(MPI_Comm_dup(group.comm, &comm));

  const int P = topo.num_ranks, J = topo.experts_per_rank(), L = topo.max_rows_per_token_rank();
  const int64_t T = config.max_tokens_per_rank;
  slot_layout.num_sources = P;
  slot_layout.num_local_experts = J;
  slot_layout.max_rows_per_token = L;
  slot_layout.row_bytes = dispatch_codec.row_bytes(config.hidden);
  slot_layout.out_row_bytes = dtype_codec.row_bytes(config.hidden);
  slot_layout.max_rows = config.max_recv_rows > 0
                             ? config.max_recv_rows
                             : std::min<int64_t>(INT32_MAX, T * P * L + int64_t{J} * (config.expert_alignment - 1));
  slot_layout.max_tokens = std::min<int64_t>(T * P, slot_layout.max_rows);
  slot_layout.payload_in_shm = config.memory == MemorySpace::kHost;
  slot_layout.compute();
  rail_meta_bytes = sizeof(int32_t) * (1 + 2 * static_cast<std::size_t>(config.topk));

  // One MPI message carries all rows between a rank and one rail peer.
  const std::size_t widest_row = std::max(rail_row_bytes(), combine_row_bytes());
  EPCOMM_REQUIRE(static_cast<double>(T) * widest_row < INT_MAX, kInvalidArgument,
                 "max_tokens_per_rank=" << T << " x " << widest_row
                                        << " bytes per row exceeds one MPI message (2 GiB); lower it");

  shm = std::make_unique<NodeShm>(group, kHeaderBytes + slot_layout.bytes * config.max_inflight,
                                  "exchange slots");

  const int N = topo.num_nodes();
  const std::size_t remote_nodes = static_cast<std::size_t>(N - 1);
  const std::size_t handled = static_cast<std::size_t>(T) * N;
  const std::size_t H = static_cast<std::size_t>(config.hidden);
  const std::size_t max_rows = static_cast<std::size_t>(slot_layout.max_rows);
  // Rows are encoded once into a staging matrix unless the input already is rows.
  const bool staged = config.dispatch_format != kernels::plain_format(config.dtype);
  // The device encodes all of a node's remote partials at once, the host a few at
  // a time (a cache-sized scratch).
  const int64_t partial_rows = N == 1 ? 0 : config.memory == MemorySpace::kDevice ? T : std::min<int64_t>(T, 64);
  // One slot's work buffers, carved from base (null: only measures).
  const auto carve = [&](std::byte* base, SlotBuffers* s) {
    Carver piece(base);
    auto* staging = piece.take<std::byte>(staged ? T * slot_layout.row_bytes : 0);
    auto* own = piece.take<float>(T * H);
    auto* out_acc = piece.take<float>(config.dtype != DType::kF32 ? T * H : 0);
    auto* partial = piece.take<float>(partial_rows * H);
    auto* weight = piece.take<float>(max_rows);
    auto* src_rank = piece.take<int32_t>(max_rows);
    auto* src_token = piece.take<int32_t>(max_rows);
    if (s != nullptr) {
      s->token_staging = staging;
      s->own_partials = own;
      s->out_acc = out_acc;
      s->partial_acc = partial;
      s->out_weight = weight;
      s->out_src_rank = src_rank;
      s->out_src_token = src_token;
    }
    return piece.used();
  };
  const std::size_t pinned_slot = 2 * static_cast<std::size_t>(T) * config.topk * sizeof(int32_t) + 256;
  if (config.memory == MemorySpace::kDevice) {
    Carver shared(nullptr);
    shared.take<std::byte>(max_rows * slot_layout.row_bytes);
    shared.take<std::byte>(max_rows * slot_layout.out_row_bytes);
    device_slot_bytes = (shared.used() + 255) / 256 * 256;
    const std::size_t private_slot = (carve(nullptr, nullptr) + 255) / 256 * 256;
    device = make_device_resources(group, config.device, device_slot_bytes * config.max_inflight,
                                   private_slot * config.max_inflight, pinned_slot * config.max_inflight);
  }

  for (int i = 0; i < config.max_inflight; ++i) {
    SlotBuffers& s = slots.emplace_back();
    s.rail_send.resize(remote_nodes * rail_block_bytes());
    s.rail_recv.resize(remote_nodes * rail_block_bytes());
    s.combine_send.resize(remote_nodes * combine_block_bytes());
    s.combine_recv.resize(remote_nodes * combine_block_bytes());
    s.partial_acc_rows = partial_rows;
    if (device) {
      const std::size_t private_slot = (carve(nullptr, nullptr) + 255) / 256 * 256;
      carve(device->private_base() + private_slot * i, &s);
      Carver pinned(device->pinned_base() + pinned_slot * i);
      s.topk_idx_host = pinned.take<int32_t>(static_cast<std::size_t>(T) * config.topk);
      s.topk_weights_host = pinned.take<float>(static_cast<std::size_t>(T) * config.topk);
      for (auto* v : {&s.rail_send, &s.rail_recv, &s.combine_send, &s.combine_recv}) {
        s.registrations.push_back(device->register_host(v->data(), v->size()));
      }
      // One operation's lists: row copies (16 bytes each) of the rail packing, of
      // every source's writes and of the fan-out; sums (12 bytes a source, 4 a
      // destination) of the node partials and of the final sums, per node.
      const std::size_t TN = static_cast<std::size_t>(T) * N;
      s.mover = device->make_mover(16 * (TN * (topo.ranks_per_node + 1) + max_rows) +
                                   12 * TN * config.topk + 8 * TN * (N + 1) + (1 << 20));
    } else {
      s.host_staging.resize(staged ? static_cast<std::size_t>(T) * slot_layout.row_bytes : 0);
      s.host_own_partials.resize(static_cast<std::size_t>(T) * H);
      if (config.dtype != DType::kF32) s.host_out_acc.resize(static_cast<std::size_t>(T) * H);
      s.host_partial_acc.resize(static_cast<std::size_t>(partial_rows) * H);
      s.token_staging = s.host_staging.data();
      s.own_partials = s.host_own_partials.data();
      s.out_acc = s.host_out_acc.data();
      s.partial_acc = s.host_partial_acc.data();
      s.mover = make_host_row_mover();
    }
    s.handled_offset.resize(N + 1);
    s.route_count.resize(handled);
    s.route_local.resize(handled * topo.ranks_per_node);
    s.route_entry.resize(handled * topo.ranks_per_node);
  }
  internode = make_internode(*this);
  EPCOMM_LOG(kInfo, "exchange: hidden " << config.hidden << ", " << config.num_experts << " experts, top-"
                                        << config.topk << ", " << config.max_inflight << " slots of "
                                        << slot_layout.bytes << " shared bytes (" << slot_layout.max_rows
                                        << " rows), inter-node transport " << internode->name());
}

std::size_t Engine::rail_block_bytes() const {
  return static_cast<std::size_t>(config.max_tokens_per_rank) * rail_row_bytes();
}

std::size_t Engine::combine_block_bytes() const {
  return static_cast<std::size_t>(config.max_tokens_per_rank) * combine_row_bytes();
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

CommFreer::~CommFreer() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
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
  inflight_.clear();
}

SlotView Engine::slot_view(int local_rank, int slot) const {
  SlotView v = SlotView::at(shm->base(local_rank) + kHeaderBytes + slot_layout.bytes * slot, slot_layout);
  if (device) {
    std::byte* base = device->shared_base(local_rank) + device_slot_bytes * slot;
    v.rows = base;
    v.expert_out = base + (static_cast<std::size_t>(slot_layout.max_rows) * slot_layout.row_bytes + 255) / 256 * 256;
  }
  return v;
}

int Engine::mpi_tag(uint64_t seq, int phase) const {
  return static_cast<int>(seq % 4096) * kTagPhases + phase;
}

int Engine::first_local_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const {
  for (int ld = 0; ld < topo.ranks_per_node; ++ld) {
    SlotView v = slot_view(ld, slot);
    if (load_flag(v.flags->*flag) >= seq) continue;
    const uint64_t failed = load_flag(header_of(*shm, ld)->failed_seq);
    EPCOMM_REQUIRE(failed == 0, kGroupFailed,
                   "rank " << group.global_rank(group.node, ld) << " abandoned operation " << failed
                           << " after an error (see its log); operation " << seq << " cannot complete");
    return ld;
  }
  return -1;
}

std::string Engine::local_ranks_behind(int slot, uint64_t SlotFlags::*flag, uint64_t seq) const {
  std::string out;
  for (int ld = 0; ld < topo.ranks_per_node; ++ld) {
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

std::shared_ptr<DispatchOp> Engine::begin_dispatch(const DispatchInput& given) {
  DispatchInput input = given;
  // Device memory: the routing inputs come to the host first, once the caller's
  // stream reached them. Without the lock: that stream may still wait for earlier
  // operations, which the progress thread completes under it.
  std::vector<int32_t> idx_host;
  std::vector<float> weights_host;
  if (device && input.memory == MemorySpace::kDevice && input.num_tokens > 0 &&
      input.num_tokens <= config.max_tokens_per_rank && input.x && input.topk_idx && input.topk_weights) {
    device->check_stream(input.stream);
    device->check_pointer(input.x, true, "DispatchInput::x");
    device->check_pointer(input.topk_idx, true, "DispatchInput::topk_idx");
    device->check_pointer(input.topk_weights, true, "DispatchInput::topk_weights");
    const std::size_t n = static_cast<std::size_t>(input.num_tokens) * config.topk;
    idx_host.resize(n);
    weights_host.resize(n);
    device->read_after(input.stream, idx_host.data(), input.topk_idx, n * sizeof(int32_t));
    device->read_after(input.stream, weights_host.data(), input.topk_weights, n * sizeof(float));
    input.topk_idx = idx_host.data();
    input.topk_weights = weights_host.data();
  }
  std::lock_guard<std::mutex> lk(mu_);
  check_healthy();
  EPCOMM_REQUIRE(input.memory == config.memory, kInvalidArgument,
                 "DispatchInput::memory is " << to_string(input.memory) << " but the exchange was built for "
                                             << to_string(config.memory) << " memory (ExchangeConfig::memory)");
  EPCOMM_REQUIRE(device || input.stream == nullptr, kInvalidArgument,
                 "DispatchInput::stream is set but the exchange's memory space is host");
  EPCOMM_REQUIRE(input.num_tokens >= 0 && input.num_tokens <= config.max_tokens_per_rank, kBufferTooSmall,
                 "num_tokens=" << input.num_tokens << " exceeds the declared max_tokens_per_rank="
                               << config.max_tokens_per_rank);
  EPCOMM_REQUIRE(input.num_tokens == 0 || (input.x && input.topk_idx && input.topk_weights), kInvalidArgument,
                 "dispatch input has a null x, topk_idx or topk_weights with num_tokens=" << input.num_tokens);
  // Slots rotate in dispatch order, identically on every rank.
  const int slot = static_cast<int>(dispatch_count_ % slots.size());
  EPCOMM_REQUIRE(!slots[slot].busy, kInvalidArgument,
                 "all " << slots.size() << " exchange slots are held by live DispatchHandles (slot " << slot
                        << " is still in use); drop a handle or raise max_inflight");
  auto op = std::make_shared<DispatchOp>(*this, next_seq_, slot, input);
  ++next_seq_;
  ++dispatch_count_;
  inflight_.push_back(op);
  return op;
}

std::shared_ptr<CombineOp> Engine::begin_combine(const std::shared_ptr<DispatchOp>& route, const void* expert_out,
                                                 int64_t expert_out_rows, void* out, int out_tokens, void* stream) {
  std::lock_guard<std::mutex> lk(mu_);
  check_healthy();
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
  EPCOMM_REQUIRE(device || stream == nullptr, kInvalidArgument,
                 "combine got a stream but the exchange's memory space is host");
  if (device) {
    device->check_stream(stream);
    if (rows > 0) device->check_pointer(expert_out, true, "combine's expert_out");
    if (route->num_tokens() > 0) device->check_pointer(out, true, "combine's out");
  }
  auto op = std::make_shared<CombineOp>(*this, next_seq_, route, expert_out, out, stream);
  ++next_seq_;
  inflight_.push_back(op);
  return op;
}

bool Engine::progress() {
  std::lock_guard<std::mutex> lk(mu_);
  return progress_locked();
}

bool Engine::background_progress(bool& busy) {
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
  bool moved = false;
  if (!inflight_.empty()) {
    try {
      moved = internode->poll();
    } catch (const Error& e) {
      fail_op(*inflight_.front(), e.code(), e.what());
      throw;
    }
  }
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
  std::erase_if(inflight_, [](const std::shared_ptr<Op>& op) { return op->done(); });
  return moved;
}

void Engine::wait(Op& op) {
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

void Engine::fail_op(Op& op, ErrorCode code, const std::string& why) {
  failure_ = why;
  failure_code_ = code;
  failure_reported_ = true;
  store_flag(header_of(*shm, group.local_rank)->failed_seq, op.seq());
  // Streams held for operations that will not complete go on; wait() reports why.
  if (device) device->release_all();
  inflight_.clear();
}

}  // namespace epcomm::detail
