// SPDX-License-Identifier: MIT
#include "low_latency/engine.hpp"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "low_latency/arrival_word.hpp"
#include "progress/backoff.hpp"
#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReasonBytes = sizeof(ProxyMessageHeader::reason);

void copy_reason(char* dst, const std::string& reason) {
  const std::size_t n = std::min(reason.size(), kReasonBytes - 1);
  std::memcpy(dst, reason.data(), n);
  dst[n] = '\0';
}

const char* kind_name(ProxyKind kind) { return kind == ProxyKind::kDispatch ? "dispatch" : "combine"; }

}  // namespace

LowLatencyEngine::LowLatencyEngine(std::shared_ptr<GroupState> g, const LowLatencyConfig& c,
                                   const ConstructionAgreement& agreed)
    : group_owner_(std::move(g)),
      group_(*group_owner_),
      config_(c),
      shape_(LowLatencyShape::of(c, group_.size, group_.ranks_per_node)),
      shared_(shape_),
      private_layout_(shape_),
      dtype_codec_(kernels::codec_for(kernels::plain_format(c.dtype))),
      dispatch_codec_(kernels::codec_for(c.dispatch_format)),
      combine_codec_(kernels::codec_for(c.combine_format)) {
  comm_ = group_.exchange_comms->take(agreed.comm_index, group_.comm, group_.timeout_s);
  comm_index_ = agreed.comm_index;
  try {
    shm_ = std::make_unique<NodeShm>(group_, shared_.bytes, "low-latency exchange");
    private_ = static_cast<std::byte*>(std::aligned_alloc(256, std::max<std::size_t>(256, private_layout_.bytes)));
    EPCOMM_REQUIRE(private_ != nullptr, kSystem,
                   "cannot allocate " << private_layout_.bytes << " bytes for the low-latency exchange");
    std::memset(private_, 0, private_layout_.bytes);
    remote_reasons_.assign(static_cast<std::size_t>(shape_.ranks) * kReasonBytes, '\0');
    scratch_.resize(std::max(shape_.dispatch_row, shape_.combine_row));
    acc_.resize(static_cast<std::size_t>(shape_.hidden));
    rows_to_.resize(static_cast<std::size_t>(shape_.ranks));
    std::vector<int> remote;
    for (int r = 0; r < shape_.ranks; ++r) {
      if (!on_my_node(r)) remote.push_back(r);
    }
    if (!remote.empty()) {
      // A round has at most one message of each kind per remote rank in the ring.
      const uint32_t capacity = std::bit_ceil(static_cast<uint32_t>(2 * remote.size()));
      ring_memory_.assign(ProxyRing::bytes(capacity), std::byte{0});
      ring_ = std::make_unique<ProxyRing>(ring_memory_.data(), capacity);
      proxy_ = std::make_unique<MpiProxy>(
          comm_, MpiProxy::tag_base(agreed.id), std::move(remote),
          MpiProxy::Buffers{private_ + private_layout_.dispatch_staging, private_ + private_layout_.dispatch_landing,
                            shape_.dispatch_message_bytes()},
          MpiProxy::Buffers{private_ + private_layout_.combine_staging, private_ + private_layout_.combine_landing,
                            shape_.combine_message_bytes()},
          std::vector<ProxyRing*>{ring_.get()}, *this, group_.timeout_s);
    }
  } catch (...) {
    std::free(private_);
    group_.exchange_comms->give_back(comm_index_);
    throw;
  }
  if (group_.progress) {
    group_.progress->add(this);
    registered_ = true;
  }
  EPCOMM_LOG(kDebug, "low-latency exchange: " << shared_.bytes << " shared + " << private_layout_.bytes
                                              << " private bytes per rank");
}

LowLatencyEngine::~LowLatencyEngine() {
  if (registered_) group_.progress->remove(this);
  bool leak = false;
  if (proxy_) {
    // A send whose receive was matched completes at the next poll; give peers a
    // moment, not the whole timeout (a dead peer would hold the destructor).
    const auto until = Clock::now() + std::chrono::milliseconds(500);
    try {
      while (proxy_->sends_pending() && Clock::now() < until) proxy_->poll();
    } catch (const Error&) {
      // MPI failed: keep the buffers below.
    }
    leak = proxy_->sends_pending();
    proxy_.reset();
  }
  // A send MPI still holds reads the staging memory: it must outlive the process.
  if (leak) {
    EPCOMM_LOG(kWarn, "low-latency exchange dropped with sends pending; keeping their buffers");
  } else {
    std::free(private_);
  }
  group_.exchange_comms->give_back(comm_index_);
}

int LowLatencyEngine::remote_index(int rank) const {
  const int first_local = group_.node * shape_.ranks_per_node;
  return rank < first_local ? rank : rank - shape_.ranks_per_node;
}

uint64_t* LowLatencyEngine::dispatch_word(int owner, uint64_t round, int source, int local_expert) const {
  return reinterpret_cast<uint64_t*>(segment(owner) + shared_.counts[round & 1]) +
         static_cast<std::size_t>(source) * shape_.local_experts + local_expert;
}

std::size_t LowLatencyEngine::slot_index(int local_expert, int source, int i) const {
  return (static_cast<std::size_t>(local_expert) * shape_.ranks + source) * shape_.max_tokens + i;
}

uint64_t* LowLatencyEngine::combine_flag(int source, int owner) const {
  return reinterpret_cast<uint64_t*>(segment(source) + shared_.combine_flags) + owner;
}

void LowLatencyEngine::check_usable(const char* call) const {
  std::lock_guard<std::mutex> lk(failure_mu_);
  EPCOMM_REQUIRE(failure_.empty(), kGroupFailed,
                 call << " on a failed low-latency exchange (make a new one): " << failure_);
}

bool LowLatencyEngine::poll_proxy(bool wait_for_lock) {
  if (!proxy_) return false;
  try {
    return wait_for_lock ? proxy_->poll() : proxy_->try_poll();
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lk(failure_mu_);
    if (failure_.empty()) failure_ = e.what();
    throw;
  }
}

void LowLatencyEngine::notify() {
  if (group_.progress) group_.progress->notify();
}

bool LowLatencyEngine::progress() { return poll_proxy(false); }

bool LowLatencyEngine::background_progress(bool& busy) {
  // Between rounds nothing of this exchange is in flight (what a peer sent early
  // waits in MPI for this rank's next call); the thread then leaves MPI alone.
  std::lock_guard<std::mutex> lk(background_mu_);
  busy = proxy_ && in_flight_.load(std::memory_order_relaxed);
  if (!busy || caller_waiting_.load(std::memory_order_relaxed)) return false;
  try {
    return poll_proxy(false);
  } catch (const Error&) {
    return false;  // recorded; the caller's next call reports it
  }
}

template <class Missing>
void LowLatencyEngine::wait_for(const char* call, uint64_t round, Missing missing) {
  const auto start = Clock::now();
  const auto timeout = std::chrono::duration<double>(group_.timeout_s);
  Backoff backoff(group_.host_ranks > group_.host_cores, 64, 4096, std::chrono::microseconds(20));
  struct Waiting {
    std::atomic<bool>& flag;
    explicit Waiting(std::atomic<bool>& f) : flag(f) { flag.store(true, std::memory_order_relaxed); }
    ~Waiting() { flag.store(false, std::memory_order_relaxed); }
  } waiting(caller_waiting_);
  for (;;) {
    std::string who = missing();
    if (who.empty()) return;
    if (poll_proxy(false)) {
      backoff.reset();
      continue;
    }
    if (Clock::now() - start > timeout) {
      std::ostringstream os;
      os << "epcomm rank " << group_.rank << ": timed out after " << group_.timeout_s << " s in " << call
         << " of round " << round << " waiting for rank(s) " << who;
      if (proxy_) {
        const std::string sends = proxy_->pending_sends();
        if (!sends.empty()) os << "; sends still pending to " << sends;
      }
      {
        std::lock_guard<std::mutex> lk(failure_mu_);
        if (failure_.empty()) failure_ = os.str();
      }
      set_stage(Stage::kIdle);  // failed: the progress thread stops polling
      throw Error(ErrorCode::kTimeout, os.str());
    }
    backoff.pause();
  }
}

void LowLatencyEngine::wait_staging_free(ProxyKind kind, uint64_t round, const char* call) {
  if (!proxy_) return;
  poll_proxy(true);  // pops every command pushed so far: their sends are then posted
  wait_for(call, round, [&] {
    std::string who;
    for (int r = 0; r < shape_.ranks; ++r) {
      if (on_my_node(r) || proxy_->staging_free(kind, remote_index(r))) continue;
      who += (who.empty() ? "" : ", ") + std::to_string(r) + " (its receive of the previous " + kind_name(kind) +
             " message)";
    }
    return who;
  });
}

void LowLatencyEngine::drain_sends(const char* call, uint64_t round) {
  if (!proxy_) return;
  wait_for(call, round, [&] { return proxy_->pending_sends(); });
}

void LowLatencyEngine::push_command(const ProxyCommand& c, const char* call) {
  wait_for(call, c.seq, [&] { return ring_->push(c) ? std::string() : std::string("the proxy (command ring full)"); });
}

void LowLatencyEngine::reject(ProxyKind kind, uint64_t round, const std::string& reason) {
  auto* record = reinterpret_cast<RejectRecord*>(
      shm_->mine() + (kind == ProxyKind::kDispatch ? shared_.dispatch_reject : shared_.combine_reject));
  copy_reason(record->reason, reason);
  std::atomic_ref<uint64_t>(record->seq).store(round, std::memory_order_release);
  wait_staging_free(kind, round, kind == ProxyKind::kDispatch ? "dispatch_send" : "combine_send");
  for (int r = 0; r < shape_.ranks; ++r) {
    if (on_my_node(r)) {
      if (kind == ProxyKind::kDispatch) {
        for (int j = 0; j < shape_.local_experts; ++j) {
          publish_word(dispatch_word(r, round, group_.rank, j), ArrivalWord::pack(round, true, 0));
        }
      } else {
        publish_word(combine_flag(r, group_.rank), ArrivalWord::pack(round, true, 0));
      }
      continue;
    }
    auto* h = reinterpret_cast<ProxyMessageHeader*>(proxy_->staging(kind, remote_index(r)));
    h->seq = round;
    h->rejected = 1;
    h->rows = 0;
    copy_reason(h->reason, reason);
    push_command({kind, r, round, sizeof(ProxyMessageHeader)}, "reject");
  }
  poll_proxy(false);
  notify();
}

std::string LowLatencyEngine::reason_of(ProxyKind kind, int rank, uint64_t round) const {
  if (!on_my_node(rank)) return std::string(remote_reasons_.data() + static_cast<std::size_t>(rank) * kReasonBytes);
  const auto* record = reinterpret_cast<const RejectRecord*>(
      segment(rank) + (kind == ProxyKind::kDispatch ? shared_.dispatch_reject : shared_.combine_reject));
  if (std::atomic_ref<uint64_t>(const_cast<uint64_t&>(record->seq)).load(std::memory_order_acquire) != round) {
    return "(its reason was overwritten by a later rejection)";
  }
  return std::string(record->reason, strnlen(record->reason, sizeof record->reason));
}

void LowLatencyEngine::throw_rejected(ProxyKind kind, uint64_t round, const std::vector<int>& ranks) {
  set_stage(Stage::kIdle);
  std::ostringstream os;
  os << kind_name(kind) << " of round " << round << " was rejected by rank";
  if (ranks.size() > 1) os << "s";
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    os << (i ? ", " : " ") << ranks[i] << " (" << reason_of(kind, ranks[i], round) << ")";
  }
  os << "; the exchange stays usable";
  fail(ErrorCode::kInvalidArgument, os.str());
}

// --- dispatch ---------------------------------------------------------------

void LowLatencyEngine::dispatch_send(const LowLatencyDispatchInput& in) {
  check_usable("dispatch_send");
  // A round may end after dispatch_recv (no combine) or after combine_recv.
  EPCOMM_REQUIRE(stage_ == Stage::kIdle || stage_ == Stage::kDispatchReceived, kInvalidArgument,
                 "dispatch_send while round " << round_ << " is in flight: finish it with dispatch_recv (and "
                                              << "combine_recv after a combine_send) first");
  finish_rejected_round();
  const uint64_t round = ++round_;
  set_stage(Stage::kIdle);  // the previous round's output is gone, even if this one is rejected
  const int P = shape_.ranks, J = shape_.local_experts, K = shape_.topk, me = group_.rank;
  try {
    EPCOMM_REQUIRE(in.num_tokens <= 0 || in.x != nullptr, kInvalidArgument,
                   "x is null with num_tokens=" << in.num_tokens);
    plan_dispatch(in.topk_idx, in.topk_weights, in.num_tokens, shape_.max_tokens, config_.num_experts, K, P, plan_);
  } catch (const Error& e) {
    reject(ProxyKind::kDispatch, round, e.what());
    rejected_dispatch_ = round;
    throw;
  }
  num_tokens_ = in.num_tokens;
  weights_.assign(in.topk_weights, in.topk_weights + static_cast<std::size_t>(in.num_tokens) * K);
  wait_staging_free(ProxyKind::kDispatch, round, "dispatch_send");

  // Each remote message: header, counts, then (token, k) and the row of each row,
  // expert by expert; first_row[r * J + j] is where expert j's rows start.
  const std::size_t meta_at = kernels::low_latency::dispatch_meta_offset(J);
  std::vector<int32_t> first_row(static_cast<std::size_t>(P) * J, 0);
  for (int r = 0; r < P; ++r) {
    rows_to_[r] = 0;
    for (int j = 0; j < J; ++j) {
      first_row[static_cast<std::size_t>(r) * J + j] = rows_to_[r];
      rows_to_[r] += plan_.count(r, j);
    }
  }
  const std::size_t D = shape_.dispatch_row;
  const auto* x = static_cast<const std::byte*>(in.x);
  for (int t = 0; t < in.num_tokens; ++t) {
    bool encoded = false;
    for (int k = 0; k < K; ++k) {
      const int32_t i = plan_.slot[static_cast<std::size_t>(t) * K + k];
      if (i < 0) continue;
      if (!encoded) {
        // BF16, F32 and FP8 represent every input (non-finite values included).
        dispatch_codec_.encode_row(x + static_cast<std::size_t>(t) * shape_.out_row, config_.dtype, shape_.hidden,
                                   scratch_.data());
        encoded = true;
      }
      const int e = in.topk_idx[static_cast<std::size_t>(t) * K + k];
      const int r = e / J, j = e % J;
      const int32_t token_k[2] = {t, k};
      std::byte *row, *meta;
      if (on_my_node(r)) {
        const std::size_t at = slot_index(j, me, i);
        row = segment(r) + shared_.rows[round & 1] + at * D;
        meta = segment(r) + shared_.meta[round & 1] + at * sizeof token_k;
      } else {
        std::byte* msg = proxy_->staging(ProxyKind::kDispatch, remote_index(r));
        const std::size_t q = static_cast<std::size_t>(first_row[static_cast<std::size_t>(r) * J + j] + i);
        meta = msg + meta_at + q * sizeof token_k;
        row = msg + meta_at + static_cast<std::size_t>(rows_to_[r]) * sizeof token_k + q * D;
      }
      std::memcpy(row, scratch_.data(), D);
      std::memcpy(meta, token_k, sizeof token_k);
    }
  }
  // Counts last: node peers' words with release, other nodes' through the proxy.
  for (int r = 0; r < P; ++r) {
    if (on_my_node(r)) {
      for (int j = 0; j < J; ++j) {
        publish_word(dispatch_word(r, round, me, j),
                     ArrivalWord::pack(round, false, static_cast<uint32_t>(plan_.count(r, j))));
      }
      continue;
    }
    std::byte* msg = proxy_->staging(ProxyKind::kDispatch, remote_index(r));
    auto* h = reinterpret_cast<ProxyMessageHeader*>(msg);
    h->seq = round;
    h->rejected = 0;
    h->rows = static_cast<uint32_t>(rows_to_[r]);
    for (int j = 0; j < J; ++j) {
      const int32_t c = plan_.count(r, j);
      std::memcpy(msg + sizeof(ProxyMessageHeader) + sizeof(int32_t) * j, &c, sizeof c);
    }
    const std::size_t bytes = meta_at + static_cast<std::size_t>(rows_to_[r]) * (2 * sizeof(int32_t) + D);
    push_command({ProxyKind::kDispatch, r, round, bytes}, "dispatch_send");
  }
  set_stage(Stage::kDispatchSent);
  poll_proxy(false);
  notify();
}

void LowLatencyEngine::finish_rejected_round() {
  // Without these waits a rank that rejected round n could write round n + 1
  // into the parity of round n - 1 while a slow owner still reads it there, or
  // receive a late round-n combine row over a round-n + 1 row.
  auto wait_all = [&](uint64_t round, auto word_of) {
    wait_for("dispatch_send (arrivals of the rejected round)", round, [&] {
      std::string who;
      for (int s = 0; s < shape_.ranks; ++s) {
        if (!read_word(word_of(s)).is_for(round)) who += (who.empty() ? "" : ", ") + std::to_string(s);
      }
      return who;
    });
    drain_sends("dispatch_send", round);
  };
  if (const uint64_t round = rejected_dispatch_) {
    wait_all(round, [&](int s) { return dispatch_word(group_.rank, round, s, 0); });
    rejected_dispatch_ = 0;
  }
  if (const uint64_t round = rejected_combine_) {
    wait_all(round, [&](int o) { return combine_flag(group_.rank, o); });
    rejected_combine_ = 0;
  }
}

LowLatencyRecv LowLatencyEngine::dispatch_recv(void*) {
  check_usable("dispatch_recv");
  EPCOMM_REQUIRE(stage_ == Stage::kDispatchSent, kInvalidArgument, "dispatch_recv without a dispatch_send");
  const uint64_t round = round_;
  const int P = shape_.ranks, J = shape_.local_experts, me = group_.rank;
  wait_for("dispatch_recv", round, [&] {
    std::string who;
    for (int s = 0; s < P; ++s) {
      for (int j = 0; j < J; ++j) {
        if (read_word(dispatch_word(me, round, s, j)).is_for(round)) continue;
        who += (who.empty() ? "" : ", ") + std::to_string(s);
        break;
      }
    }
    return who;
  });
  drain_sends("dispatch_recv", round);
  std::vector<int> rejected;
  for (int s = 0; s < P; ++s) {
    if (read_word(dispatch_word(me, round, s, 0)).rejected) rejected.push_back(s);
  }
  if (!rejected.empty()) throw_rejected(ProxyKind::kDispatch, round, rejected);

  // Compact each expert's slot regions in source order: rows by (source, token).
  const std::size_t D = shape_.dispatch_row;
  const int64_t per_expert = shape_.rows_per_expert();
  std::byte* out_rows = private_ + private_layout_.out_rows;
  auto* counts = reinterpret_cast<int32_t*>(private_ + private_layout_.out_counts);
  auto* src_rank = reinterpret_cast<int32_t*>(private_ + private_layout_.out_src_rank);
  auto* src_token = reinterpret_cast<int32_t*>(private_ + private_layout_.out_src_token);
  auto* out_k = reinterpret_cast<int32_t*>(private_ + private_layout_.out_k);
  const std::byte* rows = shm_->mine() + shared_.rows[round & 1];
  const auto* meta = reinterpret_cast<const int32_t*>(shm_->mine() + shared_.meta[round & 1]);
  for (int j = 0; j < J; ++j) {
    int64_t n = 0;
    for (int s = 0; s < P; ++s) {
      const uint32_t c = read_word(dispatch_word(me, round, s, j)).count;
      const std::size_t from = slot_index(j, s, 0);
      const std::size_t to = static_cast<std::size_t>(j * per_expert + n);
      std::memcpy(out_rows + to * D, rows + from * D, c * D);
      for (uint32_t i = 0; i < c; ++i) {
        src_rank[to + i] = s;
        src_token[to + i] = meta[2 * (from + i)];
        out_k[to + i] = meta[2 * (from + i) + 1];
      }
      n += c;
    }
    counts[j] = static_cast<int32_t>(n);
  }
  set_stage(Stage::kDispatchReceived);
  LowLatencyRecv r;
  r.rows = out_rows;
  r.format = config_.dispatch_format;
  r.row_bytes = D;
  r.num_local_experts = J;
  r.rows_per_expert = per_expert;
  r.counts = counts;
  r.src_rank = src_rank;
  r.src_token = src_token;
  return r;
}

// --- combine ----------------------------------------------------------------

void LowLatencyEngine::combine_send(const void* expert_out, void*) {
  check_usable("combine_send");
  EPCOMM_REQUIRE(stage_ == Stage::kDispatchReceived, kInvalidArgument,
                 "combine_send without a dispatch_recv of this round");
  const uint64_t round = round_;
  const int P = shape_.ranks, J = shape_.local_experts, K = shape_.topk, me = group_.rank;
  const auto* counts = reinterpret_cast<const int32_t*>(private_ + private_layout_.out_counts);
  const auto* src_rank = reinterpret_cast<const int32_t*>(private_ + private_layout_.out_src_rank);
  const auto* src_token = reinterpret_cast<const int32_t*>(private_ + private_layout_.out_src_token);
  const auto* out_k = reinterpret_cast<const int32_t*>(private_ + private_layout_.out_k);
  int64_t real_rows = 0;
  for (int j = 0; j < J; ++j) real_rows += counts[j];
  if (expert_out == nullptr && real_rows > 0) {
    std::ostringstream os;
    os << "epcomm rank " << me << ": combine_send got expert_out=null with " << real_rows << " rows received";
    set_stage(Stage::kIdle);
    reject(ProxyKind::kCombine, round, os.str());
    rejected_combine_ = round;
    throw Error(ErrorCode::kInvalidArgument, os.str());
  }
  wait_staging_free(ProxyKind::kCombine, round, "combine_send");
  std::fill(rows_to_.begin(), rows_to_.end(), 0);
  // Remote messages: header, (token, k) of every row, then the rows, which start
  // after room for the most rows so both are written in one pass.
  const std::size_t C = shape_.combine_row;
  const std::size_t rows_at = kernels::low_latency::combine_rows_offset(shape_.max_rows_to_rank());
  const auto* y = static_cast<const std::byte*>(expert_out);
  for (int j = 0; j < J; ++j) {
    for (int32_t q = 0; q < counts[j]; ++q) {
      const std::size_t at = static_cast<std::size_t>(j * shape_.rows_per_expert() + q);
      const int s = src_rank[at];
      const int32_t token_k[2] = {src_token[at], out_k[at]};
      std::byte* dst;
      if (on_my_node(s)) {
        dst = segment(s) + shared_.combine_rows + (static_cast<std::size_t>(token_k[0]) * K + token_k[1]) * C;
      } else {
        std::byte* msg = proxy_->staging(ProxyKind::kCombine, remote_index(s));
        std::memcpy(msg + sizeof(ProxyMessageHeader) + static_cast<std::size_t>(rows_to_[s]) * 8, token_k, 8);
        dst = msg + rows_at + static_cast<std::size_t>(rows_to_[s]) * C;
      }
      const int bad = combine_codec_.encode_row(y + at * shape_.out_row, config_.dtype, shape_.hidden, dst);
      if (bad >= 0) {
        std::ostringstream os;
        os << "epcomm rank " << me << ": expert_out of local expert " << j << " row " << q << " (source rank " << s
           << ", token " << token_k[0] << ") has a value at column " << bad << " that combine_format "
           << to_string(config_.combine_format) << " cannot encode (NaN or infinity)";
        set_stage(Stage::kIdle);
        reject(ProxyKind::kCombine, round, os.str());
        rejected_combine_ = round;
        throw Error(ErrorCode::kInvalidArgument, os.str());
      }
      ++rows_to_[s];
    }
  }
  for (int s = 0; s < P; ++s) {
    if (on_my_node(s)) {
      publish_word(combine_flag(s, me), ArrivalWord::pack(round, false, static_cast<uint32_t>(rows_to_[s])));
      continue;
    }
    std::byte* msg = proxy_->staging(ProxyKind::kCombine, remote_index(s));
    auto* h = reinterpret_cast<ProxyMessageHeader*>(msg);
    h->seq = round;
    h->rejected = 0;
    h->rows = static_cast<uint32_t>(rows_to_[s]);
    push_command({ProxyKind::kCombine, s, round, rows_at + static_cast<std::size_t>(rows_to_[s]) * C},
                 "combine_send");
  }
  set_stage(Stage::kCombineSent);
  poll_proxy(false);
  notify();
}

void LowLatencyEngine::combine_recv(void* out, void*) {
  check_usable("combine_recv");
  EPCOMM_REQUIRE(stage_ == Stage::kCombineSent, kInvalidArgument, "combine_recv without a combine_send");
  const uint64_t round = round_;
  const int P = shape_.ranks, K = shape_.topk, me = group_.rank;
  wait_for("combine_recv", round, [&] {
    std::string who;
    for (int o = 0; o < P; ++o) {
      if (!read_word(combine_flag(me, o)).is_for(round)) who += (who.empty() ? "" : ", ") + std::to_string(o);
    }
    return who;
  });
  drain_sends("combine_recv", round);
  std::vector<int> rejected;
  for (int o = 0; o < P; ++o) {
    const ArrivalWord w = read_word(combine_flag(me, o));
    if (w.rejected) {
      rejected.push_back(o);
    } else if (static_cast<int32_t>(w.count) != plan_.rows_to(o)) {
      set_stage(Stage::kIdle);
      EPCOMM_FAIL(kMismatch, "combine of round " << round << ": rank " << o << " returned " << w.count
                                                  << " rows but this rank sent it " << plan_.rows_to(o)
                                                  << " (ranks made different calls?)");
    }
  }
  if (!rejected.empty()) throw_rejected(ProxyKind::kCombine, round, rejected);
  EPCOMM_REQUIRE(out != nullptr || num_tokens_ == 0, kInvalidArgument, "combine_recv got out=null");
  set_stage(Stage::kIdle);
  // Fixed order, k = 0..topk-1, in FP32: deterministic whatever the arrival order.
  const std::byte* rows = shm_->mine() + shared_.combine_rows;
  auto* o = static_cast<std::byte*>(out);
  for (int t = 0; t < num_tokens_; ++t) {
    std::fill(acc_.begin(), acc_.end(), 0.0f);
    for (int k = 0; k < K; ++k) {
      const std::size_t at = static_cast<std::size_t>(t) * K + k;
      if (plan_.slot[at] < 0) continue;
      combine_codec_.accumulate_row(rows + at * shape_.combine_row, shape_.hidden, weights_[at], acc_.data());
    }
    dtype_codec_.encode_row(acc_.data(), DType::kF32, shape_.hidden, o + static_cast<std::size_t>(t) * shape_.out_row);
  }
}

// --- the proxy's arrivals -----------------------------------------------------

void LowLatencyEngine::arrived(ProxyKind kind, int peer, const std::byte* msg, std::size_t) {
  ProxyMessageHeader h;
  std::memcpy(&h, msg, sizeof h);
  const int J = shape_.local_experts, K = shape_.topk, me = group_.rank;
  if (h.rejected) {
    copy_reason(remote_reasons_.data() + static_cast<std::size_t>(peer) * kReasonBytes,
                std::string(h.reason, strnlen(h.reason, sizeof h.reason)));
  }
  if (kind == ProxyKind::kDispatch) {
    const std::size_t D = shape_.dispatch_row;
    const std::byte* meta = msg + kernels::low_latency::dispatch_meta_offset(J);
    const std::byte* rows = meta + static_cast<std::size_t>(h.rows) * 8;
    std::vector<uint32_t> counts(static_cast<std::size_t>(J), 0);
    if (!h.rejected) std::memcpy(counts.data(), msg + sizeof(ProxyMessageHeader), sizeof(int32_t) * J);
    std::size_t q = 0;
    for (int j = 0; j < J; ++j) {
      const std::size_t at = slot_index(j, peer, 0);
      std::memcpy(shm_->mine() + shared_.meta[h.seq & 1] + at * 8, meta + q * 8, counts[j] * 8);
      std::memcpy(shm_->mine() + shared_.rows[h.seq & 1] + at * D, rows + q * D, counts[j] * D);
      q += counts[j];
    }
    for (int j = 0; j < J; ++j) {
      publish_word(dispatch_word(me, h.seq, peer, j), ArrivalWord::pack(h.seq, h.rejected != 0, counts[j]));
    }
    return;
  }
  const std::size_t C = shape_.combine_row;
  const std::byte* meta = msg + sizeof(ProxyMessageHeader);
  const std::byte* rows = msg + kernels::low_latency::combine_rows_offset(shape_.max_rows_to_rank());
  for (uint32_t q = 0; q < (h.rejected ? 0 : h.rows); ++q) {
    int32_t token_k[2];
    std::memcpy(token_k, meta + q * 8, 8);
    std::memcpy(shm_->mine() + shared_.combine_rows + (static_cast<std::size_t>(token_k[0]) * K + token_k[1]) * C,
                rows + q * C, C);
  }
  publish_word(combine_flag(me, peer), ArrivalWord::pack(h.seq, h.rejected != 0, h.rejected ? 0 : h.rows));
}

}  // namespace epcomm::detail
