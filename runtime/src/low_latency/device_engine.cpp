// SPDX-License-Identifier: MIT
#include "low_latency/device_engine.hpp"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "device/cuda_call.hpp"
#include "device/cuda_scopes.hpp"
#include "device/ipc_memory.hpp"
#include "device/sm_budget.hpp"
#include "epcomm_kernels/cuda_low_latency.hpp"
#include "low_latency/buffer_layout.hpp"
#include "low_latency/device_proxy.hpp"
#include "util/agree.hpp"
#include "util/check.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

namespace kc = kernels::cuda;
using Diagnosis = kc::LowLatencyDiagnosis;

std::size_t round_up(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// The kernels' device scratch, after the PrivateLayout part of the private buffer.
struct ScratchLayout {
  std::size_t control = 0, peers = 0, slot = 0, weights = 0, counts = 0, sent_to = 0, rows_to = 0, recv_list = 0;
  std::size_t sent_prefix = 0, remote_row = 0, stage_pos = 0;  // across nodes
  std::size_t end = 0;
  ScratchLayout(const LowLatencyShape& s, std::size_t start) {
    std::size_t at = round_up(start);
    auto take = [&](std::size_t bytes) {
      const std::size_t here = at;
      at = round_up(at + bytes);
      return here;
    };
    const std::size_t pairs = static_cast<std::size_t>(s.max_tokens) * s.topk;
    const std::size_t max_recv =
        static_cast<std::size_t>(s.ranks) * s.max_tokens * static_cast<std::size_t>(std::min(s.topk, s.local_experts));
    control = take(sizeof(kc::LowLatencyControl));
    peers = take(sizeof(uint8_t*) * s.ranks);
    slot = take(sizeof(int32_t) * pairs);
    weights = take(sizeof(float) * pairs);
    counts = take(sizeof(int32_t) * s.ranks * s.local_experts);
    sent_to = take(sizeof(int32_t) * s.ranks);
    rows_to = take(sizeof(int32_t) * s.ranks);
    recv_list = take(sizeof(int32_t) * max_recv);
    if (s.remote_ranks() > 0) {
      sent_prefix = take(sizeof(int32_t) * (static_cast<std::size_t>(s.ranks) * s.local_experts + 1));
      remote_row = take(sizeof(int32_t) * pairs);
      stage_pos = take(sizeof(int32_t) * max_recv);
    }
    end = at;
  }
};

int chosen_device(int device) {
  int count = 0;
  const cudaError_t s = cudaGetDeviceCount(&count);
  if (s != cudaSuccess) cudaGetLastError();
  EPCOMM_REQUIRE(s == cudaSuccess && count > 0, kUnsupported,
                 "LowLatencyConfig::memory is device but this rank sees no CUDA device ("
                     << (s == cudaSuccess ? "none found" : cudaGetErrorString(s)) << ")");
  if (device < 0) EPCOMM_CUDA(cudaGetDevice(&device));
  EPCOMM_REQUIRE(device < count, kInvalidArgument,
                 "LowLatencyConfig::device=" << device << " but this rank sees " << count << " CUDA device(s)");
  return device;
}

// Collective over the node within a node, over the group across nodes: "" when
// every rank's ok is true, else the ranks whose was not.
std::string ranks_that_failed_here(GroupState& g, bool ok) {
  if (g.num_nodes > 1) return ranks_that_failed(g.comm, ok);
  return ranks_that_failed(g.node_comm, ok, [&](int ld) { return g.global_rank(g.node, ld); });
}

class DeviceLowLatencyEngine final : public LowLatencyBackend, public Progressable {
 public:
  DeviceLowLatencyEngine(std::shared_ptr<GroupState> g, const LowLatencyConfig& c, int device,
                         const kc::LowLatencyGeometry& geometry, const ConstructionAgreement& agreed);
  ~DeviceLowLatencyEngine() override;
  DeviceLowLatencyEngine(const DeviceLowLatencyEngine&) = delete;
  DeviceLowLatencyEngine& operator=(const DeviceLowLatencyEngine&) = delete;

  const LowLatencyConfig& config() const override { return config_; }
  void dispatch_send(const LowLatencyDispatchInput& input) override;
  LowLatencyRecv dispatch_recv(void* stream) override;
  void combine_send(const void* expert_out, void* stream) override;
  void combine_recv(void* out, void* stream) override;
  // Within a node, node peers write this GPU's memory themselves; across nodes
  // the proxy moves messages, on the group's progress thread (or here).
  bool progress() override;
  bool background_progress(bool& busy) override;

 private:
  enum class Stage { kIdle, kDispatchSent, kDispatchReceived, kCombineSent };

  // Throws what the kernels diagnosed since the last call (then the exchange is
  // failed), or kGroupFailed once it is.
  void check_usable(const char* call);
  std::string describe(const Diagnosis& d) const;
  // "" if ptr is memory this GPU's kernels may use, else why not.
  std::string pointer_problem(const void* ptr, const char* what) const;
  // "" if stream (a cudaStream_t, may be null) belongs to this exchange's GPU.
  std::string stream_problem(void* stream) const;
  void check_stream(void* stream) const;
  // The host refused this rank's input: the kernel still publishes rejected
  // words, so peers fail the round at once instead of at the timeout.
  [[noreturn]] void reject(bool dispatch, void* stream, const std::string& why);

  std::shared_ptr<GroupState> group_owner_;
  GroupState& group_;
  LowLatencyConfig config_;
  LowLatencyShape shape_;
  SharedLayout shared_;
  PrivateLayout private_layout_;
  ScratchLayout scratch_;
  int device_;
  kc::LowLatencyGeometry geometry_;
  kc::LowLatencyBuffers buffers_;
  Diagnosis* diagnosis_ = nullptr;  // pinned, mapped
  std::unique_ptr<DeviceBuffer> private_;
  std::unique_ptr<IpcMemory> shared_memory_;  // destroyed after the GPU and the proxy finished
  MPI_Comm comm_ = MPI_COMM_NULL;  // across nodes: the proxy's pooled communicator
  int comm_index_ = -1;
  std::unique_ptr<DeviceProxy> proxy_;  // across nodes
  bool registered_ = false;             // with the group's progress thread
  std::mutex proxy_failure_mu_;
  std::string proxy_failure_;  // the proxy's error, reported at the next call

  Stage stage_ = Stage::kIdle;
  uint64_t round_ = 0;  // rounds this rank's host started (the GPU counts its own)
  int num_tokens_ = 0;
  std::string failure_;
};

DeviceLowLatencyEngine::DeviceLowLatencyEngine(std::shared_ptr<GroupState> g, const LowLatencyConfig& c, int device,
                                               const kc::LowLatencyGeometry& geometry,
                                               const ConstructionAgreement& agreed)
    : group_owner_(std::move(g)),
      group_(*group_owner_),
      config_(c),
      shape_(LowLatencyShape::of(c, group_.size, group_.ranks_per_node)),
      shared_(shape_),
      private_layout_(shape_),
      scratch_(shape_, private_layout_.bytes),
      device_(device),
      geometry_(geometry) {
  DeviceScope scope(device_);
  // Collective (CUDA IPC handles over the node); fails on every rank together.
  shared_memory_ = std::make_unique<IpcMemory>(group_, device_, shared_.bytes);
  std::string why;
  ErrorCode code = ErrorCode::kSystem;
  try {
    EPCOMM_CUDA(cudaMemset(shared_memory_->mine(), 0, shared_.bytes));
    private_ = std::make_unique<DeviceBuffer>(device_, scratch_.end, "the low-latency exchange's output");
    std::byte* p = private_->get();
    EPCOMM_CUDA(cudaMemset(p, 0, scratch_.end));
    const kc::LowLatencyControl control = kc::low_latency_initial_control();
    EPCOMM_CUDA(cudaMemcpy(p + scratch_.control, &control, sizeof control, cudaMemcpyHostToDevice));
    std::vector<uint8_t*> peers(static_cast<std::size_t>(shape_.ranks));
    // By rank: the node's regions (IpcMemory counts by local rank); null for a
    // rank on another node, which the kernels reach through the staging.
    for (int r = 0; r < shape_.ranks; ++r) {
      if (group_.node_of(r) == group_.node) {
        peers[r] = reinterpret_cast<uint8_t*>(shared_memory_->base(r % shape_.ranks_per_node));
      }
    }
    EPCOMM_CUDA(cudaMemcpy(p + scratch_.peers, peers.data(), sizeof(uint8_t*) * peers.size(), cudaMemcpyHostToDevice));
    void* pinned = nullptr;
    EPCOMM_CUDA(cudaHostAlloc(&pinned, sizeof(Diagnosis), cudaHostAllocMapped | cudaHostAllocPortable));
    diagnosis_ = static_cast<Diagnosis*>(pinned);
    std::memset(diagnosis_, 0, sizeof(Diagnosis));
    EPCOMM_CUDA(cudaDeviceSynchronize());  // zeroed before any peer writes (the agreement below)
    kc::LowLatencyBuffers& b = buffers_;
    b.shared = reinterpret_cast<uint8_t* const*>(p + scratch_.peers);
    b.own_shared = reinterpret_cast<uint8_t*>(shared_memory_->mine());
    void* mapped = nullptr;
    EPCOMM_CUDA(cudaHostGetDevicePointer(&mapped, diagnosis_, 0));
    b.diagnosis = static_cast<Diagnosis*>(mapped);
    b.control = reinterpret_cast<kc::LowLatencyControl*>(p + scratch_.control);
    b.slot = reinterpret_cast<int32_t*>(p + scratch_.slot);
    b.weights = reinterpret_cast<float*>(p + scratch_.weights);
    b.counts = reinterpret_cast<int32_t*>(p + scratch_.counts);
    b.sent_to = reinterpret_cast<int32_t*>(p + scratch_.sent_to);
    b.rows_to = reinterpret_cast<int32_t*>(p + scratch_.rows_to);
    b.recv_list = reinterpret_cast<int32_t*>(p + scratch_.recv_list);
    b.out_rows = reinterpret_cast<uint8_t*>(p + private_layout_.out_rows);
    b.out_counts = reinterpret_cast<int32_t*>(p + private_layout_.out_counts);
    b.out_src_rank = reinterpret_cast<int32_t*>(p + private_layout_.out_src_rank);
    b.out_src_token = reinterpret_cast<int32_t*>(p + private_layout_.out_src_token);
    b.out_k = reinterpret_cast<int32_t*>(p + private_layout_.out_k);
    if (shape_.remote_ranks() > 0) {
      // Ranks on other nodes: the proxy's memory, and where its copies land.
      // Combine rows from other nodes land in the private layout's combine
      // landing, which holds max_rows_to_rank rows per remote rank and more.
      comm_ = group_.exchange_comms->take(agreed.comm_index, group_.comm, group_.timeout_s);
      comm_index_ = agreed.comm_index;
      std::byte* landing = p + private_layout_.combine_landing;
      proxy_ = std::make_unique<DeviceProxy>(group_, shape_, shared_, device_, shared_memory_->mine(), landing, comm_,
                                             MpiProxy::tag_base(agreed.id));
      geometry_.dispatch_message = static_cast<int64_t>(proxy_->dispatch_message());
      geometry_.combine_message = static_cast<int64_t>(proxy_->combine_message());
      geometry_.ring_capacity = proxy_->ring_capacity();
      b.staging = proxy_->staging();
      b.ring[0] = proxy_->ring(ProxyKind::kDispatch);
      b.ring[1] = proxy_->ring(ProxyKind::kCombine);
      b.remote_landing = reinterpret_cast<uint8_t*>(landing);
      b.sent_prefix = reinterpret_cast<int32_t*>(p + scratch_.sent_prefix);
      b.remote_row = reinterpret_cast<int32_t*>(p + scratch_.remote_row);
      b.stage_pos = reinterpret_cast<int32_t*>(p + scratch_.stage_pos);
    }
  } catch (const Error& e) {
    why = e.what();
    code = e.code();
  }
  // Also the barrier that keeps peers from writing before this rank zeroed.
  const std::string failed = ranks_that_failed_here(group_, why.empty());
  if (!why.empty() || !failed.empty()) {
    proxy_.reset();
    if (comm_index_ >= 0) group_.exchange_comms->give_back(comm_index_);
    if (diagnosis_ != nullptr) cudaFreeHost(diagnosis_);
    if (!why.empty()) throw Error(code, why);
    EPCOMM_FAIL(kBufferTooSmall, "node peer(s) " << failed
                                                 << " could not set up the low-latency exchange's GPU buffers; see "
                                                    "their errors");
  }
  if (proxy_) {
    group_.progress->add(this);
    registered_ = true;
  }
  EPCOMM_LOG(kDebug, "low-latency exchange on CUDA device " << device_ << ": " << shared_.bytes << " shared + "
                                                            << scratch_.end << " private bytes");
}

bool DeviceLowLatencyEngine::progress() {
  if (!proxy_) return false;
  try {
    return proxy_->try_poll();
  } catch (const Error& e) {
    std::lock_guard<std::mutex> lk(proxy_failure_mu_);
    if (proxy_failure_.empty()) proxy_failure_ = e.what();
    return false;
  }
}

bool DeviceLowLatencyEngine::background_progress(bool& busy) {
  // The GPU pushes commands without the host (a CUDA graph replays with no
  // call): the proxy polls for as long as the exchange lives, unless it failed.
  {
    std::lock_guard<std::mutex> lk(proxy_failure_mu_);
    if (!proxy_failure_.empty()) return false;
  }
  busy = true;
  return progress();
}

DeviceLowLatencyEngine::~DeviceLowLatencyEngine() {
  int previous = device_;
  cudaGetDevice(&previous);
  cudaSetDevice(device_);
  // Kernels still waiting for peers end at their timeout at the latest.
  cudaDeviceSynchronize();
  if (registered_) group_.progress->remove(this);
  proxy_.reset();  // sends what the kernels staged last, then stops
  if (comm_index_ >= 0) group_.exchange_comms->give_back(comm_index_);
  shared_memory_.reset();
  private_.reset();
  cudaFreeHost(diagnosis_);
  cudaSetDevice(previous);
}

std::string DeviceLowLatencyEngine::describe(const Diagnosis& d) const {
  std::ostringstream os;
  const char* op = d.op == 0 ? "dispatch" : "combine";
  os << "epcomm rank " << group_.rank << ": ";
  switch (d.code) {
    case Diagnosis::kTimeout:
      os << "timed out after " << group_.timeout_s << " s on the GPU in " << op << "_recv of round " << d.round
         << " waiting for rank(s) " << d.rank << " (its " << op << "_send of that round did not arrive)";
      break;
    case Diagnosis::kRejected:
      os << "rank " << d.rank << " rejected its " << op << " of round " << d.round << " (bad input; it reports why)";
      break;
    case Diagnosis::kBadInput:
      os << "dispatch_send of round " << d.round << " (checked on the GPU): ";
      if (d.expert < -1 || d.expert >= config_.num_experts) {
        os << "topk_idx[" << d.token << "][" << d.k << "]=" << d.expert << " outside [-1, num_experts="
           << config_.num_experts << ")";
      } else if (!std::isfinite(d.weight)) {
        os << "topk_weights[" << d.token << "][" << d.k << "]=" << d.weight << " is not finite";
      } else {
        os << "token " << d.token << " chooses expert " << d.expert << " twice (again at k=" << d.k << ")";
      }
      break;
    case Diagnosis::kBadOutput:
      os << "combine_send of round " << d.round << ": expert_out of local expert " << d.token << " row " << d.k
         << " has a value at column " << d.expert << " that combine_format " << to_string(config_.combine_format)
         << " cannot encode (NaN or infinity)";
      break;
    case Diagnosis::kProxyStalled:
      os << "the proxy took no " << op << " command for " << group_.timeout_s << " s (round " << d.round
         << "; its ring stayed full): the group's progress thread does not run";
      break;
    case Diagnosis::kMismatch:
      os << "combine of round " << d.round << ": rank " << d.rank << " returned " << d.expert
         << " rows but this rank sent it " << d.token << " (ranks made different calls?)";
      break;
    default:
      os << "unknown diagnosis code " << d.code << " from the low-latency kernels";
  }
  return os.str();
}

void DeviceLowLatencyEngine::check_usable(const char* call) {
  EPCOMM_REQUIRE(failure_.empty(), kGroupFailed,
                 call << " on a failed low-latency exchange (make a new one): " << failure_);
  {
    std::lock_guard<std::mutex> lk(proxy_failure_mu_);
    if (!proxy_failure_.empty()) {
      failure_ = "epcomm rank " + std::to_string(group_.rank) + ": the low-latency proxy failed: " + proxy_failure_;
      throw Error(ErrorCode::kSystem, failure_);
    }
  }
  const int32_t code = *static_cast<volatile int32_t*>(&diagnosis_->code);
  if (code == Diagnosis::kNone) return;
  std::atomic_thread_fence(std::memory_order_acquire);  // the fields were written before the code
  Diagnosis d;
  std::memcpy(&d, const_cast<const Diagnosis*>(diagnosis_), sizeof d);
  failure_ = describe(d);
  const ErrorCode error = code == Diagnosis::kTimeout    ? ErrorCode::kTimeout
                          : code == Diagnosis::kMismatch ? ErrorCode::kMismatch
                                                         : ErrorCode::kInvalidArgument;
  EPCOMM_LOG(kDebug, "low-latency kernels reported: " << failure_);
  throw Error(error, failure_);
}

std::string DeviceLowLatencyEngine::pointer_problem(const void* ptr, const char* what) const {
  std::ostringstream os;
  if (ptr == nullptr) {
    os << what << " is null";
    return os.str();
  }
  cudaPointerAttributes a{};
  const cudaError_t s = cudaPointerGetAttributes(&a, ptr);
  if (s != cudaSuccess) {
    cudaGetLastError();
    os << what << " (" << ptr << "): cudaPointerGetAttributes failed: " << cudaGetErrorString(s);
  } else if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged) {
    os << what << " (" << ptr << ") is host memory but the low-latency exchange's memory space is device";
  } else if (a.type == cudaMemoryTypeDevice && a.device != device_) {
    os << what << " (" << ptr << ") is memory of CUDA device " << a.device << " but the exchange runs on device "
       << device_;
  }
  return os.str();
}

std::string DeviceLowLatencyEngine::stream_problem(void* stream) const {
  if (stream == nullptr) return {};
  const auto st = static_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaError_t s = cudaStreamIsCapturing(st, &capture);
  // CUDA refuses cudaStreamGetDevice on a capturing stream; a stream of another
  // device then fails at the kernel launch instead.
  if (s == cudaSuccess && capture != cudaStreamCaptureStatusNone) return {};
  int d = -1;
  if (s == cudaSuccess) s = cudaStreamGetDevice(st, &d);
  if (s != cudaSuccess) {
    cudaGetLastError();
    return std::string("the stream passed is not usable: ") + cudaGetErrorString(s);
  }
  if (d == device_) return {};
  return "the stream passed belongs to CUDA device " + std::to_string(d) + " but the exchange runs on device " +
         std::to_string(device_);
}

void DeviceLowLatencyEngine::check_stream(void* stream) const {
  const std::string problem = stream_problem(stream);
  EPCOMM_REQUIRE(problem.empty(), kInvalidArgument, problem);
}

void DeviceLowLatencyEngine::reject(bool dispatch, void* stream, const std::string& why) {
  std::ostringstream os;
  os << "epcomm rank " << group_.rank << ": " << why;
  // The reason is what the caller needs; a failed launch of the rejected words
  // (peers then time out naming this rank) only adds to it.
  try {
    if (dispatch) {
      kc::low_latency_dispatch_send(geometry_, buffers_, nullptr, nullptr, nullptr, 0, true, stream);
    } else {
      kc::low_latency_combine_send(geometry_, buffers_, nullptr, true, stream);
    }
  } catch (const Error& e) {
    os << " (and the rejected words could not be sent, so peers wait for the timeout: " << e.what() << ")";
  }
  failure_ = os.str();
  stage_ = Stage::kIdle;
  throw Error(ErrorCode::kInvalidArgument, failure_);
}

void DeviceLowLatencyEngine::dispatch_send(const LowLatencyDispatchInput& in) {
  check_usable("dispatch_send");
  EPCOMM_REQUIRE(stage_ == Stage::kIdle || stage_ == Stage::kDispatchReceived, kInvalidArgument,
                 "dispatch_send while round " << round_ << " is in flight: finish it with dispatch_recv (and "
                                              << "combine_recv after a combine_send) first");
  DeviceScope scope(device_);
  RelaxedCapture relaxed;
  ++round_;
  // A stream this GPU cannot use: the rejected words go on this thread's default
  // stream of the exchange's device (not the legacy one, which a capture on
  // another of the caller's streams would forbid).
  if (const std::string problem = stream_problem(in.stream); !problem.empty()) {
    reject(true, cudaStreamPerThread, problem);
  }
  if (in.num_tokens < 0 || in.num_tokens > shape_.max_tokens) {
    std::ostringstream os;
    os << "num_tokens=" << in.num_tokens << " outside [0, max_tokens_per_rank=" << shape_.max_tokens << "]";
    reject(true, in.stream, os.str());
  }
  if (in.num_tokens > 0) {
    for (const auto& [ptr, what] : {std::pair<const void*, const char*>{in.x, "x"},
                                    {in.topk_idx, "topk_idx"},
                                    {in.topk_weights, "topk_weights"}}) {
      const std::string problem = pointer_problem(ptr, what);
      if (!problem.empty()) reject(true, in.stream, problem + " with num_tokens=" + std::to_string(in.num_tokens));
    }
  }
  kc::low_latency_dispatch_send(geometry_, buffers_, in.x, in.topk_idx, in.topk_weights, in.num_tokens, false,
                                in.stream);
  num_tokens_ = in.num_tokens;
  stage_ = Stage::kDispatchSent;
}

LowLatencyRecv DeviceLowLatencyEngine::dispatch_recv(void* stream) {
  check_usable("dispatch_recv");
  EPCOMM_REQUIRE(stage_ == Stage::kDispatchSent, kInvalidArgument, "dispatch_recv without a dispatch_send");
  RelaxedCapture relaxed;
  check_stream(stream);
  DeviceScope scope(device_);
  kc::low_latency_dispatch_recv(geometry_, buffers_, stream);
  stage_ = Stage::kDispatchReceived;
  LowLatencyRecv r;
  r.rows = buffers_.out_rows;
  r.format = config_.dispatch_format;
  r.row_bytes = shape_.dispatch_row;
  r.num_local_experts = shape_.local_experts;
  r.rows_per_expert = shape_.rows_per_expert();
  r.counts = buffers_.out_counts;
  r.src_rank = buffers_.out_src_rank;
  r.src_token = buffers_.out_src_token;
  return r;
}

void DeviceLowLatencyEngine::combine_send(const void* expert_out, void* stream) {
  check_usable("combine_send");
  EPCOMM_REQUIRE(stage_ == Stage::kDispatchReceived, kInvalidArgument,
                 "combine_send without a dispatch_recv of this round");
  DeviceScope scope(device_);
  RelaxedCapture relaxed;
  if (const std::string problem = stream_problem(stream); !problem.empty()) reject(false, cudaStreamPerThread, problem);
  // The host does not know the row counts (they are on the GPU): expert_out is
  // required even when no row arrived.
  const std::string problem = pointer_problem(expert_out, "expert_out");
  if (!problem.empty()) reject(false, stream, "combine_send: " + problem);
  kc::low_latency_combine_send(geometry_, buffers_, expert_out, false, stream);
  stage_ = Stage::kCombineSent;
}

void DeviceLowLatencyEngine::combine_recv(void* out, void* stream) {
  check_usable("combine_recv");
  EPCOMM_REQUIRE(stage_ == Stage::kCombineSent, kInvalidArgument, "combine_recv without a combine_send");
  RelaxedCapture relaxed;
  check_stream(stream);
  if (num_tokens_ > 0) {
    const std::string problem = pointer_problem(out, "out");
    EPCOMM_REQUIRE(problem.empty(), kInvalidArgument, "combine_recv: " << problem);
  }
  DeviceScope scope(device_);
  kc::low_latency_combine_recv(geometry_, buffers_, num_tokens_, out, stream);
  stage_ = Stage::kIdle;
}

kc::LowLatencyGeometry geometry_of(const LowLatencyConfig& c, const GroupState& g) {
  const LowLatencyShape s = LowLatencyShape::of(c, g.size, g.ranks_per_node);
  const SharedLayout l(s);
  kc::LowLatencyGeometry geo;
  geo.ranks = s.ranks;
  geo.rank = g.rank;
  geo.ranks_per_node = s.ranks_per_node;
  geo.max_rows_to_rank = s.max_rows_to_rank();  // the proxy's message sizes and ring come with the proxy
  geo.local_experts = s.local_experts;
  geo.max_tokens = s.max_tokens;
  geo.topk = s.topk;
  geo.hidden = s.hidden;
  geo.dtype = c.dtype;
  geo.dispatch_format = c.dispatch_format;
  geo.combine_format = c.combine_format;
  for (int p = 0; p < 2; ++p) {
    geo.counts[p] = static_cast<int64_t>(l.counts[p]);
    geo.meta[p] = static_cast<int64_t>(l.meta[p]);
    geo.rows[p] = static_cast<int64_t>(l.rows[p]);
  }
  geo.combine_flags = static_cast<int64_t>(l.combine_flags);
  geo.combine_rows = static_cast<int64_t>(l.combine_rows);
  geo.timeout_ns = static_cast<uint64_t>(g.timeout_s * 1e9);
  geo.sm_budget = c.gpu_sm_budget;
  return geo;
}

}  // namespace

std::shared_ptr<LowLatencyBackend> make_device_low_latency_engine(std::shared_ptr<GroupState> group,
                                                                  const LowLatencyConfig& config,
                                                                  const ConstructionAgreement& agreed) {
  // Across nodes the GPU pushes commands at any time (a replayed CUDA graph
  // calls no host code), so the proxy needs the group's progress thread. The
  // same answer on every rank: the group options are the same everywhere.
  EPCOMM_REQUIRE(group->num_nodes == 1 || group->progress != nullptr, kUnsupported,
                 "LowLatencyExchange on device memory across nodes ("
                     << group->num_nodes << " nodes of " << group->ranks_per_node
                     << " ranks) needs the group's progress thread, which runs the proxy; this group has none "
                        "(GroupOptions::progress or EPCOMM_PROGRESS_THREAD=0): use host memory or enable it");
  // Every rank checks its device first, so none waits in the mapping collective
  // for a peer that already gave up.
  std::string why;
  ErrorCode code = ErrorCode::kUnsupported;
  int device = -1;
  kc::LowLatencyGeometry geometry = geometry_of(config, *group);
  try {
    device = chosen_device(config.device);
    check_sm_budget(config.gpu_sm_budget, device, "LowLatencyConfig");
    DeviceScope scope(device);
    // Before any kernel waits: loading a kernel later could wait for it.
    kc::low_latency_prepare(geometry);
  } catch (const Error& e) {
    why = e.what();
    code = e.code();
  }
  const std::string failed = ranks_that_failed_here(*group, why.empty());
  if (!why.empty()) throw Error(code, why);
  EPCOMM_REQUIRE(failed.empty(), kUnsupported,
                 "rank(s) " << failed << " cannot run the low-latency exchange on a CUDA device; see their errors");
  return std::make_shared<DeviceLowLatencyEngine>(std::move(group), config, device, geometry, agreed);
}

}  // namespace epcomm::detail
