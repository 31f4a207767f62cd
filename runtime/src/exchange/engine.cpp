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
}

// Every rank compares every rank's config, so a mismatch fails all of them at once.
void check_config_agrees(const ExchangeConfig& c, const GroupState& g) {
  static constexpr const char* kNames[] = {"num_experts",     "topk",           "hidden",
                                           "max_tokens_per_rank", "dtype",      "dispatch_format",
                                           "combine_format",  "expert_alignment", "max_recv_rows",
                                           "max_inflight",    "transport (EPCOMM_TRANSPORT)"};
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
                                 static_cast<int64_t>(g.transport)};
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
  for (int i = 0; i < config.max_inflight; ++i) {
    SlotBuffers& s = slots.emplace_back();
    s.rail_send.resize(remote_nodes * rail_block_bytes());
    s.rail_recv.resize(remote_nodes * rail_block_bytes());
    if (!is_plain_format(config.dispatch_format)) {
      s.encoded_tokens.resize(static_cast<std::size_t>(T) * slot_layout.row_bytes);
    }
    s.combine_send.resize(remote_nodes * combine_block_bytes());
    s.combine_recv.resize(remote_nodes * combine_block_bytes());
    s.own_partials.resize(static_cast<std::size_t>(T) * config.hidden);
    if (config.dtype != DType::kF32) s.out_acc.resize(static_cast<std::size_t>(T) * config.hidden);
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
  return SlotView::at(shm->base(local_rank) + kHeaderBytes + slot_layout.bytes * slot, slot_layout);
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
  if (failure_.empty()) return;
  // An error the progress thread met is reported once as itself, then the
  // exchange refuses work.
  if (!failure_reported_) {
    failure_reported_ = true;
    throw Error(failure_code_, failure_);
  }
  EPCOMM_FAIL(kGroupFailed, "the exchange is unusable after an earlier error: " << failure_);
}

std::shared_ptr<DispatchOp> Engine::begin_dispatch(const DispatchInput& input, const DispatchOp* route) {
  std::lock_guard<std::mutex> lk(mu_);
  check_healthy();
  EPCOMM_REQUIRE(input.memory == MemorySpace::kHost && input.stream == nullptr, kUnsupported,
                 "dispatch input in device memory or on a stream is not supported by this build");
  EPCOMM_REQUIRE(input.num_tokens >= 0 && input.num_tokens <= config.max_tokens_per_rank, kBufferTooSmall,
                 "num_tokens=" << input.num_tokens << " exceeds the declared max_tokens_per_rank="
                               << config.max_tokens_per_rank);
  EPCOMM_REQUIRE(input.num_tokens == 0 || (input.x && input.topk_idx && input.topk_weights), kInvalidArgument,
                 "dispatch input has a null x, topk_idx or topk_weights with num_tokens=" << input.num_tokens);
  if (route) {
    EPCOMM_REQUIRE(&route->engine() == this, kInvalidArgument,
                   "dispatch along a DispatchHandle of another Exchange");
    EPCOMM_REQUIRE(input.num_tokens == route->num_tokens(), kInvalidArgument,
                   "dispatch along operation " << route->seq() << " got num_tokens=" << input.num_tokens
                                               << " but that dispatch had " << route->num_tokens());
  }
  // Slots rotate in dispatch order, identically on every rank.
  const int slot = static_cast<int>(dispatch_count_ % slots.size());
  EPCOMM_REQUIRE(!slots[slot].busy, kInvalidArgument,
                 "all " << slots.size() << " exchange slots are held by live DispatchHandles (slot " << slot
                        << " is still in use); drop a handle or raise max_inflight");
  auto op = std::make_shared<DispatchOp>(*this, next_seq_, slot, input,
                                         route ? &slots[route->slot()].routes : nullptr);
  ++next_seq_;
  ++dispatch_count_;
  inflight_.push_back(op);
  return op;
}

std::shared_ptr<CombineOp> Engine::begin_combine(const std::shared_ptr<DispatchOp>& route, const void* expert_out,
                                                 int64_t expert_out_rows, void* out, int out_tokens,
                                                 const CombineOptions& options) {
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
  auto op = std::make_shared<CombineOp>(*this, next_seq_, route, expert_out, out, options);
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
        if (op.done()) return;
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
  inflight_.clear();
}

}  // namespace epcomm::detail
