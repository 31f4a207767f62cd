// SPDX-License-Identifier: MIT
// The low-latency exchange on host memory (epcomm/low_latency.hpp): the slots
// node peers write into (NodeShm), the proxy for ranks on other nodes, and the
// round's state. Which row goes where is send_plan's; the byte layout is
// buffer_layout's; arrival words are arrival_word's.
#pragma once

#include <epcomm/low_latency.hpp>
#include <mpi.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "epcomm_kernels/codec.hpp"
#include "exchange/config_agreement.hpp"
#include "group_state.hpp"
#include "low_latency/backend.hpp"
#include "low_latency/buffer_layout.hpp"
#include "low_latency/mpi_proxy.hpp"
#include "low_latency/send_plan.hpp"
#include "node_shm.hpp"

namespace epcomm::detail {

class LowLatencyEngine final : public LowLatencyBackend, public Progressable, public ProxyArrivals {
 public:
  // After the group agreed on the config (make_low_latency_backend).
  LowLatencyEngine(std::shared_ptr<GroupState> group, const LowLatencyConfig& config,
                   const ConstructionAgreement& agreed);
  ~LowLatencyEngine() override;
  LowLatencyEngine(const LowLatencyEngine&) = delete;
  LowLatencyEngine& operator=(const LowLatencyEngine&) = delete;

  const LowLatencyConfig& config() const override { return config_; }
  void dispatch_send(const LowLatencyDispatchInput& input) override;
  LowLatencyRecv dispatch_recv(void* stream) override;
  void combine_send(const void* expert_out, void* stream) override;
  void combine_recv(void* out, void* stream) override;
  bool progress() override;

  bool background_progress(bool& busy) override;
  void arrived(ProxyKind kind, int peer, const std::byte* message, std::size_t bytes) override;

 private:
  // Where a round stands on this rank.
  enum class Stage { kIdle, kDispatchSent, kDispatchReceived, kCombineSent };

  // Segment of rank r, which must be on this node.
  std::byte* segment(int rank) const { return shm_->base(rank % shape_.ranks_per_node); }
  bool on_my_node(int rank) const { return rank / shape_.ranks_per_node == group_.node; }
  int remote_index(int rank) const;
  uint64_t* dispatch_word(int owner, uint64_t round, int source, int local_expert) const;
  std::size_t slot_index(int local_expert, int source, int i) const;
  uint64_t* combine_flag(int source, int owner) const;

  // Leaving a round waits for a background poll under way, so no MPI call of
  // this exchange runs on the progress thread once the caller's call returned.
  void set_stage(Stage s) {
    stage_ = s;
    std::lock_guard<std::mutex> lk(background_mu_);
    in_flight_.store(s == Stage::kDispatchSent || s == Stage::kCombineSent, std::memory_order_relaxed);
  }
  // Polls until this rank's own proxy sends completed (bounded by the timeout):
  // once a round's words all arrived, every peer has received or is receiving
  // them, so this takes at most the last fragments.
  void drain_sends(const char* call, uint64_t round);
  void check_usable(const char* call) const;
  // Runs the proxy until `kind`'s staging message for every rank on another
  // node may be written again.
  void wait_staging_free(ProxyKind kind, uint64_t round, const char* call);
  void push_command(const ProxyCommand& c, const char* call);
  // Polls until `missing()` returns no rank; on timeout records and throws
  // Error(kTimeout) naming the ranks it returned.
  template <class Missing>
  void wait_for(const char* call, uint64_t round, Missing missing);
  // wait_for_lock: poll even if the progress thread is polling (then after it),
  // so every command pushed before is posted; else skip if it is.
  bool poll_proxy(bool wait_for_lock);
  void notify();
  // Tells every rank this rank rejected `kind` of `round` and why.
  void reject(ProxyKind kind, uint64_t round, const std::string& reason);
  std::string reason_of(ProxyKind kind, int rank, uint64_t round) const;
  // Waits for every word of a dispatch or combine this rank rejected, as its
  // receive would have: peers write a dispatch's words after finishing the round
  // before (whose parity the next round reuses), and a combine's rows from other
  // nodes must land before the next round's rows for the same (token, k).
  void finish_rejected_round();
  [[noreturn]] void throw_rejected(ProxyKind kind, uint64_t round, const std::vector<int>& ranks);

  std::shared_ptr<GroupState> group_owner_;
  GroupState& group_;
  LowLatencyConfig config_;
  LowLatencyShape shape_;
  SharedLayout shared_;
  PrivateLayout private_layout_;
  const kernels::Codec& dtype_codec_;
  const kernels::Codec& dispatch_codec_;
  const kernels::Codec& combine_codec_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int comm_index_ = -1;
  std::unique_ptr<NodeShm> shm_;
  std::byte* private_ = nullptr;
  std::vector<char> remote_reasons_;  // [ranks][reason]: rejections the proxy received
  std::vector<std::byte> ring_memory_;
  std::unique_ptr<ProxyRing> ring_;
  std::unique_ptr<MpiProxy> proxy_;
  bool registered_ = false;

  // The caller's round (one caller thread at a time, as for Exchange).
  Stage stage_ = Stage::kIdle;
  // Whether this rank waits for peers (after a send, before its receive), for the
  // progress thread, which polls the proxy only then.
  std::atomic<bool> in_flight_{false};
  std::mutex background_mu_;  // held by background_progress while it polls
  // The caller polls itself inside a wait: the progress thread stands aside.
  std::atomic<bool> caller_waiting_{false};
  uint64_t round_ = 0;
  uint64_t rejected_dispatch_ = 0;  // rounds this rank rejected and did not receive
  uint64_t rejected_combine_ = 0;
  SendPlan plan_;
  std::vector<float> weights_;  // the round's topk_weights, for combine
  int num_tokens_ = 0;
  std::vector<std::byte> scratch_;
  std::vector<float> acc_;
  std::vector<int32_t> rows_to_;  // per rank, the current message's rows
  // Set by a timeout or an error of the proxy; later calls fail with it.
  mutable std::mutex failure_mu_;
  std::string failure_;
};

}  // namespace epcomm::detail
