// SPDX-License-Identifier: MIT
// The low-latency exchange on GPU memory (LowLatencyConfig::memory = kDevice)
// against the host LowLatencyExchange on the same inputs, which is its oracle
// (test_low_latency.cpp checks the host exchange against an independent
// reference): received rows bit for bit, counts, source ranks and tokens
// identical, and the combine bit-identical (both sum k = 0..topk-1 with the same
// separately rounded multiply and add). Also a CUDA graph of dispatch + combine
// replayed with new inputs, a silent peer (timeout naming it) and bad input seen
// by the host and by the GPU. One GPU per rank of the host; skips, with a
// message, where no CUDA device is present. Within a node (CUDA IPC) and, with
// EPCOMM_RANKS_PER_NODE=1, across emulated nodes (the proxy): the same tests.
#include <cuda_runtime_api.h>
#include <epcomm/epcomm.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/cuda_presence.hpp"
#include "support/expect_error.hpp"
#include "support/low_latency_reference.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;

void cuda_ok(cudaError_t s, const char* what) {
  if (s != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(s));
}
#define CUDA_OK(call) cuda_ok((call), #call)

int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// How long a round's kernels may take at most: two waits (dispatch and
// combine), each ending at the group's timeout, and slack for the work itself.
double round_limit_s(double timeout_s) { return 2 * timeout_s + 30; }
double round_limit_s(const epcomm::Group& g) { return round_limit_s(g.timeout_s()); }

// A hang must show where it is: every rank prints each test's start and end to
// stderr (unbuffered; rank 0's gtest output goes to stdout), and a watchdog
// aborts the job, naming the test, its last step and when that step began, when
// one test runs longer than EPCOMM_TEST_WATCHDOG_S. A healthy test takes
// seconds; a failing one a group timeout per failing step, and a stream wait
// past its bound (round_limit_s) aborts the job itself. The default, two round
// limits of the group's default timeout (EPCOMM_TIMEOUT_S, else 60 s, as Group
// takes it), leaves that abort, which names the wait, time to come first.
// Without either a kernel or an MPI call that never returns would leave ctest
// with no output at all.
class Progress final : public testing::EmptyTestEventListener {
 public:
  static Progress& get() {
    static Progress* p = [] {
      auto* q = new Progress;
      testing::UnitTest::GetInstance()->listeners().Append(q);  // gtest owns it
      return q;
    }();
    return *p;
  }
  // What the running test does now, shown if the watchdog fires.
  void step(const std::string& what) {
    const std::lock_guard<std::mutex> lock(mu_);
    step_ = what;
    step_started_ = Clock::now();
  }
  void say(const std::string& what) {
    std::fprintf(stderr, "[rank %d] %s\n", world_rank(), what.c_str());
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  void OnTestProgramStart(const testing::UnitTest&) override {
    const char* env = std::getenv("EPCOMM_TEST_WATCHDOG_S");
    const char* group_env = std::getenv("EPCOMM_TIMEOUT_S");
    const double timeout_s = group_env != nullptr && std::atof(group_env) > 0 ? std::atof(group_env) : 60.0;
    limit_s_ = env != nullptr && std::atof(env) > 0 ? std::atof(env) : 2 * round_limit_s(timeout_s);
    watchdog_ = std::thread([this] { watch(); });
  }
  void OnTestProgramEnd(const testing::UnitTest&) override {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
  }
  void OnTestStart(const testing::TestInfo& t) override {
    const std::string name = std::string(t.test_suite_name()) + "." + t.name();
    {
      const std::lock_guard<std::mutex> lock(mu_);
      test_ = name;
      step_ = "starting";
      started_ = step_started_ = Clock::now();
      running_ = true;
    }
    say("start " + name);
  }
  void OnTestEnd(const testing::TestInfo& t) override {
    double took = 0;
    {
      const std::lock_guard<std::mutex> lock(mu_);
      running_ = false;
      took = std::chrono::duration<double>(Clock::now() - started_).count();
    }
    say(std::string(t.result()->Passed() ? "passed " : (t.result()->Skipped() ? "skipped " : "FAILED ")) +
        t.test_suite_name() + "." + t.name() + " in " + std::to_string(took) + " s");
  }
  void watch() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_; })) {
      if (!running_) continue;
      const double ran = std::chrono::duration<double>(Clock::now() - started_).count();
      if (ran < limit_s_) continue;
      const double step_at = std::chrono::duration<double>(step_started_ - started_).count();
      std::fprintf(stderr,
                   "[rank %d] WATCHDOG: %s has run %.0f s (limit EPCOMM_TEST_WATCHDOG_S=%.0f s); its last step, begun "
                   "at %.1f s: %s; aborting the job\n",
                   world_rank(), test_.c_str(), ran, limit_s_, step_at, step_.c_str());
      std::fflush(stderr);
      std::fflush(stdout);
      MPI_Abort(MPI_COMM_WORLD, 124);
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::thread watchdog_;
  std::string test_, step_;
  Clock::time_point started_, step_started_;
  bool running_ = false, stop_ = false;
  double limit_s_ = 0;
};
[[maybe_unused]] const bool kProgressRegistered = (Progress::get(), true);

void step(const std::string& what) { Progress::get().step(what); }

// Waits for `stream` at most limit_s. The exchange's kernels give up after the
// group's timeout, so a stream still busy past that hangs for good: the job is
// aborted with where it hung (a throw would only move the hang into a
// destructor's cudaDeviceSynchronize).
void wait_stream(cudaStream_t stream, double limit_s, const std::string& where) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const cudaError_t s = cudaStreamQuery(stream);
    if (s == cudaSuccess) return;
    if (s != cudaErrorNotReady) throw std::runtime_error(where + ": cudaStreamQuery: " + cudaGetErrorString(s));
    if (std::chrono::steady_clock::now() - start > std::chrono::duration<double>(limit_s)) {
      Progress::get().say("HANG: " + where + ": the stream has not finished after " + std::to_string(limit_s) +
                          " s although every wait of the exchange's kernels is bounded; aborting the job");
      std::fflush(stdout);
      MPI_Abort(MPI_COMM_WORLD, 125);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

// True on every rank iff ok on every rank: ranks leave a loop, or skip a step,
// together, so no rank waits in a collective the others never reach.
bool on_all_ranks(bool ok) {
  int mine = ok ? 1 : 0, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

// Runs one rank's part of a test before a barrier: an exception becomes a
// failure here, so this rank still reaches the barrier its peers wait in.
template <class F>
void this_rank_part(F f) {
  try {
    f();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << " threw: " << e.what();
  }
}

// GPU memory of a fixed size.
class DeviceArray {
 public:
  explicit DeviceArray(std::size_t bytes) : bytes_(bytes > 0 ? bytes : 1) {
    CUDA_OK(cudaMalloc(&ptr_, bytes_));
    CUDA_OK(cudaMemset(ptr_, 0, bytes_));
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void* get() const { return ptr_; }
  template <class T>
  void fill(const std::vector<T>& v) {
    if (v.size() * sizeof(T) > bytes_) throw std::runtime_error("DeviceArray::fill: too many bytes");
    if (v.empty()) return;
    CUDA_OK(cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    // From pageable memory cudaMemcpy may return before its DMA (on the legacy
    // stream) landed; the exchange's kernels run on a non-blocking stream.
    CUDA_OK(cudaStreamSynchronize(cudaStreamLegacy));
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

template <class T>
std::vector<T> to_host(const void* dev, std::size_t count) {
  std::vector<T> v(count);
  if (count > 0) CUDA_OK(cudaMemcpy(v.data(), dev, count * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// Within a node (CUDA IPC) and across emulated nodes (EPCOMM_RANKS_PER_NODE=1:
// the proxy), the same tests.
#define SKIP_UNLESS_GPU() \
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: low-latency GPU tests skipped"

struct GpuCase {
  std::string name;
  int experts_per_rank;
  int topk;
  int hidden;
  int max_tokens;
  DType dtype;
  Format dispatch_format;
  Format combine_format;
};

std::ostream& operator<<(std::ostream& os, const GpuCase& c) { return os << c.name; }

epcomm::LowLatencyConfig config_of(const epcomm::Group& g, const GpuCase& c, epcomm::MemorySpace memory) {
  epcomm::LowLatencyConfig cfg;
  cfg.num_experts = c.experts_per_rank * g.size();
  cfg.topk = c.topk;
  cfg.hidden = c.hidden;
  cfg.max_tokens_per_rank = c.max_tokens;
  cfg.dtype = c.dtype;
  cfg.dispatch_format = c.dispatch_format;
  cfg.combine_format = c.combine_format;
  cfg.memory = memory;
  if (memory == epcomm::MemorySpace::kDevice) cfg.device = host_local_gpu();
  return cfg;
}

// One rank's inputs of a round, on the host and copied to the GPU.
struct RoundInput {
  RankInput input;
  std::vector<std::byte> x;  // input.x in the config's dtype
};

RoundInput make_input(const epcomm::Group& g, const epcomm::LowLatencyConfig& c, int num_tokens, uint64_t seed) {
  const Shape s{g.size(), g.ranks_per_node(), c.num_experts, c.topk, c.hidden};
  RoundInput r;
  r.input = make_rank_input(s, num_tokens, 99, 0.1, seed, g.rank());
  r.x = to_dtype(r.input.x, c.dtype);
  return r;
}

// What the receive and the combine produced, in host memory.
struct Outcome {
  std::vector<int32_t> counts, src_rank, src_token;
  std::vector<std::byte> rows;  // the first counts[j] rows of each expert, back to back
  std::vector<std::byte> out;   // combine_recv's output
};

Outcome real_rows(const epcomm::LowLatencyRecv& r, const std::vector<int32_t>& counts, const std::byte* rows,
                  const int32_t* src_rank, const int32_t* src_token) {
  Outcome o;
  o.counts = counts;
  for (int j = 0; j < r.num_local_experts; ++j) {
    const int64_t at = j * r.rows_per_expert;
    o.src_rank.insert(o.src_rank.end(), src_rank + at, src_rank + at + counts[j]);
    o.src_token.insert(o.src_token.end(), src_token + at, src_token + at + counts[j]);
    o.rows.insert(o.rows.end(), rows + at * static_cast<int64_t>(r.row_bytes),
                  rows + (at + counts[j]) * static_cast<int64_t>(r.row_bytes));
  }
  return o;
}

// The oracle's round; y: expert outputs in dispatch_recv's layout, made by
// make_y from the received rows (or given).
Outcome host_round(epcomm::LowLatencyExchange& ex, const RoundInput& in,
                   const std::function<std::vector<std::byte>(const epcomm::LowLatencyRecv&)>& make_y,
                   std::vector<std::byte>* y_used) {
  const epcomm::LowLatencyConfig& c = ex.config();
  epcomm::LowLatencyDispatchInput d;
  d.x = in.x.data();
  d.topk_idx = in.input.topk_idx.data();
  d.topk_weights = in.input.topk_weights.data();
  d.num_tokens = in.input.num_tokens;
  ex.dispatch_send(d);
  const epcomm::LowLatencyRecv r = ex.dispatch_recv();
  const std::vector<int32_t> counts(r.counts, r.counts + r.num_local_experts);
  Outcome o = real_rows(r, counts, static_cast<const std::byte*>(r.rows), r.src_rank, r.src_token);
  std::vector<std::byte> y = make_y(r);
  ex.combine_send(y.data());
  o.out.assign(static_cast<std::size_t>(in.input.num_tokens) * c.hidden * epcomm::dtype_size(c.dtype), std::byte{0});
  ex.combine_recv(o.out.data());
  if (y_used != nullptr) *y_used = std::move(y);
  return o;
}

// The oracle's round with the expert outputs expert_outputs() makes from the
// received rows; y: those outputs, for the device round to combine too.
Outcome host_round_with_outputs(epcomm::LowLatencyExchange& ex, const epcomm::LowLatencyConfig& cfg, int rank,
                                const RoundInput& in, std::vector<std::byte>& y) {
  return host_round(
      ex, in,
      [&](const epcomm::LowLatencyRecv& r) {
        return expert_outputs(cfg, rank * r.num_local_experts, r.num_local_experts, r.rows_per_expert, r.rows,
                              r.row_bytes, r.counts);
      },
      &y);
}

// GPU copies of a round's inputs and the combine's input and output.
struct DeviceRound {
  DeviceArray x, idx, w, y, out;
  explicit DeviceRound(const epcomm::LowLatencyConfig& c, int64_t rows_per_expert)
      : x(static_cast<std::size_t>(c.max_tokens_per_rank) * c.hidden * epcomm::dtype_size(c.dtype)),
        idx(static_cast<std::size_t>(c.max_tokens_per_rank) * c.topk * 4),
        w(static_cast<std::size_t>(c.max_tokens_per_rank) * c.topk * 4),
        y(static_cast<std::size_t>(c.num_experts) * rows_per_expert * c.hidden * epcomm::dtype_size(c.dtype)),
        out(static_cast<std::size_t>(c.max_tokens_per_rank) * c.hidden * epcomm::dtype_size(c.dtype)) {}
  void fill(const RoundInput& in, const std::vector<std::byte>& y_host) {
    x.fill(in.x);
    idx.fill(in.input.topk_idx);
    w.fill(in.input.topk_weights);
    y.fill(y_host);
  }
  epcomm::LowLatencyDispatchInput input(int num_tokens, cudaStream_t stream) const {
    epcomm::LowLatencyDispatchInput d;
    d.x = x.get();
    d.topk_idx = static_cast<const int32_t*>(idx.get());
    d.topk_weights = static_cast<const float*>(w.get());
    d.num_tokens = num_tokens;
    d.stream = stream;
    return d;
  }
};

// Reads the device exchange's results after the stream finished the round
// (waiting at most limit_s for it).
Outcome read_device(const epcomm::LowLatencyRecv& r, const DeviceRound& dev, const epcomm::LowLatencyConfig& c,
                    int num_tokens, cudaStream_t stream, double limit_s) {
  wait_stream(stream, limit_s, "the round's kernels");
  const int J = r.num_local_experts;
  const auto counts = to_host<int32_t>(r.counts, J);
  const std::size_t n = static_cast<std::size_t>(J * r.rows_per_expert);
  const auto src_rank = to_host<int32_t>(r.src_rank, n);
  const auto src_token = to_host<int32_t>(r.src_token, n);
  const auto rows = to_host<std::byte>(r.rows, n * r.row_bytes);
  Outcome o = real_rows(r, counts, rows.data(), src_rank.data(), src_token.data());
  o.out = to_host<std::byte>(dev.out.get(), static_cast<std::size_t>(num_tokens) * c.hidden * epcomm::dtype_size(c.dtype));
  return o;
}

void expect_identical(const Outcome& dev, const Outcome& host, const std::string& where) {
  ASSERT_EQ(dev.counts, host.counts) << where << ": counts per local expert";
  ASSERT_EQ(dev.src_rank, host.src_rank) << where << ": source ranks";
  ASSERT_EQ(dev.src_token, host.src_token) << where << ": source tokens";
  ASSERT_EQ(dev.rows.size(), host.rows.size()) << where;
  for (std::size_t i = 0; i < dev.rows.size(); ++i) {
    ASSERT_EQ(dev.rows[i], host.rows[i]) << where << ": dispatched rows differ at byte " << i;
  }
  ASSERT_EQ(dev.out.size(), host.out.size()) << where;
  for (std::size_t i = 0; i < dev.out.size(); ++i) {
    ASSERT_EQ(dev.out[i], host.out[i]) << where << ": combine output differs at byte " << i;
  }
}

// One eager round on the GPU: the calls as a caller would make them, on its stream.
Outcome device_round(epcomm::LowLatencyExchange& ex, DeviceRound& dev, const RoundInput& in,
                     const std::vector<std::byte>& y, cudaStream_t stream, double limit_s) {
  dev.fill(in, y);
  ex.dispatch_send(dev.input(in.input.num_tokens, stream));
  const epcomm::LowLatencyRecv r = ex.dispatch_recv(stream);
  ex.combine_send(dev.y.get(), stream);
  ex.combine_recv(dev.out.get(), stream);
  return read_device(r, dev, ex.config(), in.input.num_tokens, stream, limit_s);
}

class Stream {
 public:
  Stream() { CUDA_OK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

class LowLatencyGpu : public MpiTest, public testing::WithParamInterface<GpuCase> {};

TEST_P(LowLatencyGpu, BitIdenticalToTheHostExchange) {
  const GpuCase& c = GetParam();
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  epcomm::LowLatencyExchange host(g, config_of(g, c, epcomm::MemorySpace::kHost));
  epcomm::LowLatencyExchange device(g, config_of(g, c, epcomm::MemorySpace::kDevice));
  const epcomm::LowLatencyConfig& cfg = host.config();
  DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
  Stream stream;
  // Rounds of both parities; rank 1 sends nothing in round 1, rank 0 the most.
  for (int round = 0; round < 3; ++round) {
    std::mt19937 rng(static_cast<unsigned>(round * 131 + g.rank()));
    int tokens = std::uniform_int_distribution<int>(1, c.max_tokens)(rng);
    if (g.rank() == 0) tokens = c.max_tokens;
    if (g.rank() == 1 && round == 1) tokens = 0;
    const RoundInput in = make_input(g, cfg, tokens, 1000 + static_cast<uint64_t>(round));
    step("round " + std::to_string(round));
    std::vector<std::byte> y;
    const Outcome want = host_round_with_outputs(host, cfg, g.rank(), in, y);
    const Outcome got = device_round(device, dev, in, y, stream.get(), round_limit_s(g));
    expect_identical(got, want, c.name + " round " + std::to_string(round));
  }
}

std::vector<GpuCase> cases() {
  std::vector<GpuCase> v;
  // The hidden sizes of common models, and one not a multiple of 128.
  for (int h : {128, 2048, 2560, 4096, 7168, 8192, 300}) {
    v.push_back({"fp8_bf16_h" + std::to_string(h), 8, 8, h, 32, DType::kBF16, Format::kFP8, Format::kBF16});
  }
  v.push_back({"ue8m0_bf16_h7168", 8, 8, 7168, 16, DType::kBF16, Format::kFP8UE8M0, Format::kBF16});
  v.push_back({"bf16_bf16_h7168", 8, 8, 7168, 16, DType::kBF16, Format::kBF16, Format::kBF16});
  v.push_back({"f32_f32_h130_dtype_f32", 4, 3, 130, 24, DType::kF32, Format::kF32, Format::kF32});
  v.push_back({"bf16_from_f32_h129", 4, 3, 129, 24, DType::kF32, Format::kBF16, Format::kBF16});
  // top-1 .. top-9 (10 experts in all on 2 ranks).
  for (int k = 1; k <= 9; ++k) {
    v.push_back({"ue8m0_top" + std::to_string(k), 5, k, 256, 20, DType::kBF16, Format::kFP8UE8M0, Format::kBF16});
  }
  // Every combine format.
  v.push_back({"combine_f32", 4, 4, 384, 16, DType::kBF16, Format::kFP8, Format::kF32});
  for (int bits = 3; bits <= 16; ++bits) {
    v.push_back({"combine_logfmt" + std::to_string(bits), 4, 4, 384, 16, DType::kBF16, Format::kFP8,
                 epcomm::logfmt_format(bits)});
  }
  v.push_back({"logfmt10_dtype_f32_h200", 4, 5, 200, 16, DType::kF32, Format::kBF16, Format::kLogFMT10});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, LowLatencyGpu, testing::ValuesIn(cases()),
                         [](const testing::TestParamInfo<GpuCase>& p) { return p.param.name; });

// Within an SM budget (LowLatencyConfig::gpu_sm_budget) each kernel gets at most
// that many blocks and loops over the rest of its experts, tokens and rows: one
// block, and DeepSeek's 20, give the host exchange's bits. The receive kernels
// wait for words other GPUs write, so one block per kernel must finish too.
TEST_F(MpiTest, BitIdenticalWithinAnSmBudget) {
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  const GpuCase kBudgetCases[] = {
      {"fp8_bf16_h7168", 8, 8, 7168, 32, DType::kBF16, Format::kFP8, Format::kBF16},
      {"ue8m0_top9", 5, 9, 256, 20, DType::kBF16, Format::kFP8UE8M0, Format::kBF16},
      {"bf16_from_f32_h129", 4, 3, 129, 24, DType::kF32, Format::kBF16, Format::kBF16},
      {"combine_logfmt10", 4, 4, 384, 16, DType::kBF16, Format::kFP8, epcomm::logfmt_format(10)},
  };
  Stream stream;
  for (const GpuCase& c : kBudgetCases) {
    for (int budget : {1, 20}) {
      const std::string where = c.name + " within " + std::to_string(budget) + " SMs";
      step(where);
      epcomm::LowLatencyExchange host(g, config_of(g, c, epcomm::MemorySpace::kHost));
      epcomm::LowLatencyConfig dc = config_of(g, c, epcomm::MemorySpace::kDevice);
      dc.gpu_sm_budget = budget;
      epcomm::LowLatencyExchange device(g, dc);
      ASSERT_EQ(device.config().gpu_sm_budget, budget);
      const epcomm::LowLatencyConfig& cfg = host.config();
      DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
      // Both parities; rank 1 sends nothing in round 1.
      for (int round = 0; round < 2; ++round) {
        const int tokens = g.rank() == 1 && round == 1 ? 0 : c.max_tokens - round;
        const RoundInput in = make_input(g, cfg, tokens, 2000 + static_cast<uint64_t>(budget * 10 + round));
        std::vector<std::byte> y;
        const Outcome want = host_round_with_outputs(host, cfg, g.rank(), in, y);
        const Outcome got = device_round(device, dev, in, y, stream.get(), round_limit_s(g));
        expect_identical(got, want, where + " round " + std::to_string(round));
      }
      if (!on_all_ranks(!testing::Test::HasFailure())) return;
    }
  }
}

// Two micro-batches on two exchanges (the header's pattern), each on a stream of
// its own within 20 SMs, their calls interleaved as a two-micro-batch decode step
// makes them: both bit-identical to the host exchange.
TEST_F(MpiTest, TwoExchangesOnTwoStreamsWithinAnSmBudget) {
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  const GpuCase c{"two", 8, 8, 2048, 32, DType::kBF16, Format::kFP8, Format::kBF16};
  epcomm::LowLatencyExchange host(g, config_of(g, c, epcomm::MemorySpace::kHost));
  epcomm::LowLatencyConfig dc = config_of(g, c, epcomm::MemorySpace::kDevice);
  dc.gpu_sm_budget = 20;
  epcomm::LowLatencyExchange ex0(g, dc), ex1(g, dc);
  const epcomm::LowLatencyConfig& cfg = host.config();
  const int64_t per_expert = int64_t{g.size()} * c.max_tokens;
  DeviceRound dev0(cfg, per_expert), dev1(cfg, per_expert);
  Stream s0, s1;
  const RoundInput in0 = make_input(g, cfg, c.max_tokens, 3000), in1 = make_input(g, cfg, c.max_tokens - 5, 3001);
  std::vector<std::byte> y0, y1;
  step("the host exchange's rounds");
  const Outcome want0 = host_round_with_outputs(host, cfg, g.rank(), in0, y0);
  const Outcome want1 = host_round_with_outputs(host, cfg, g.rank(), in1, y1);
  step("two exchanges on two streams");
  dev0.fill(in0, y0);
  dev1.fill(in1, y1);
  ex0.dispatch_send(dev0.input(in0.input.num_tokens, s0.get()));
  ex1.dispatch_send(dev1.input(in1.input.num_tokens, s1.get()));
  const epcomm::LowLatencyRecv r0 = ex0.dispatch_recv(s0.get());
  const epcomm::LowLatencyRecv r1 = ex1.dispatch_recv(s1.get());
  ex0.combine_send(dev0.y.get(), s0.get());
  ex1.combine_send(dev1.y.get(), s1.get());
  ex0.combine_recv(dev0.out.get(), s0.get());
  ex1.combine_recv(dev1.out.get(), s1.get());
  const double limit_s = round_limit_s(g);
  expect_identical(read_device(r0, dev0, cfg, in0.input.num_tokens, s0.get(), limit_s), want0, "micro-batch 0");
  expect_identical(read_device(r1, dev1, cfg, in1.input.num_tokens, s1.get(), limit_s), want1, "micro-batch 1");
}

// An SM budget beyond the device is an error on every rank naming the value, the
// device's SM count and the rank.
TEST_F(MpiTest, SmBudgetAboveTheDeviceIsRefused) {
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, host_local_gpu()));
  const GpuCase c{"budget", 4, 2, 256, 8, DType::kBF16, Format::kBF16, Format::kBF16};
  epcomm::LowLatencyConfig dc = config_of(g, c, epcomm::MemorySpace::kDevice);
  dc.gpu_sm_budget = sms + 1;
  expect_error([&] { epcomm::LowLatencyExchange ex(g, dc); }, epcomm::ErrorCode::kInvalidArgument,
               {"gpu_sm_budget=" + std::to_string(sms + 1), std::to_string(sms) + " SMs",
                "rank " + std::to_string(g.rank())});
}

// dispatch_send .. combine_recv captured once in a CUDA graph (capture mode
// `mode`), replayed `replays` times with new tokens, routing, weights and expert
// outputs written into the same buffers; every replay against the host exchange
// on the same inputs, then one eager round.
void graph_replays(cudaStreamCaptureMode mode, int replays) {
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  const GpuCase c{"graph", 8, 8, 2048, 32, DType::kBF16, Format::kFP8, Format::kBF16};
  epcomm::LowLatencyExchange host(g, config_of(g, c, epcomm::MemorySpace::kHost));
  epcomm::LowLatencyExchange device(g, config_of(g, c, epcomm::MemorySpace::kDevice));
  const epcomm::LowLatencyConfig& cfg = host.config();
  const int64_t per_expert = int64_t{g.size()} * c.max_tokens;
  DeviceRound dev(cfg, per_expert);
  Stream stream;
  const int tokens = c.max_tokens - 3;  // fixed: the graph holds it
  const double limit_s = round_limit_s(g);

  // Every rank learns whether all captured before any replays: a rank that
  // could not would leave its peers' kernels waiting for its words.
  step("capture");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  epcomm::LowLatencyRecv r;
  std::string capture_error;
  try {
    CUDA_OK(cudaStreamBeginCapture(stream.get(), mode));
    try {
      device.dispatch_send(dev.input(tokens, stream.get()));
      r = device.dispatch_recv(stream.get());
      device.combine_send(dev.y.get(), stream.get());
      device.combine_recv(dev.out.get(), stream.get());
    } catch (...) {
      cudaGraph_t partial = nullptr;
      cudaStreamEndCapture(stream.get(), &partial);  // leave the stream usable
      if (partial != nullptr) cudaGraphDestroy(partial);
      throw;
    }
    CUDA_OK(cudaStreamEndCapture(stream.get(), &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
  } catch (const std::exception& e) {
    capture_error = e.what();
  }
  EXPECT_EQ(capture_error, "") << "rank " << g.rank() << ": capturing dispatch + combine failed";
  if (!on_all_ranks(capture_error.empty())) {
    ADD_FAILURE() << "a rank could not capture the exchange (see its message): no replays";
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
    return;
  }
  Progress::get().say("captured; replaying " + std::to_string(replays) + " times");

  std::mt19937 rng(static_cast<unsigned>(77 + g.rank()));
  const std::size_t y_elems = static_cast<std::size_t>(cfg.num_experts / g.size()) * per_expert * c.hidden;
  bool all_ok = true;
  for (int replay = 0; replay < replays && all_ok; ++replay) {
    const std::string where = "replay " + std::to_string(replay);
    try {
      const RoundInput in = make_input(g, cfg, tokens, 5000 + static_cast<uint64_t>(replay));
      // Expert outputs independent of the rows: the same buffer feeds both
      // exchanges, whose layouts are compared identical first.
      std::vector<float> yf(y_elems);
      std::uniform_int_distribution<int> v(-64, 64);
      for (float& f : yf) f = static_cast<float>(v(rng)) / 32.0f;
      const std::vector<std::byte> y = to_dtype(yf, cfg.dtype);
      step(where + ": the host exchange's round");
      const Outcome want = host_round(host, in, [&](const epcomm::LowLatencyRecv&) { return y; }, nullptr);
      step(where + ": the graph on the GPU");
      dev.fill(in, y);
      CUDA_OK(cudaGraphLaunch(exec, stream.get()));
      const Outcome got = read_device(r, dev, cfg, tokens, stream.get(), limit_s);
      step(where + ": comparing");
      expect_identical(got, want, where);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "rank " << g.rank() << ", " << where << ": " << e.what();
    }
    // The first failed replay on any rank ends the replays on every rank; a
    // failed exchange would otherwise make each later replay fail the same way.
    all_ok = on_all_ranks(!testing::Test::HasFailure());
    if (!all_ok) ADD_FAILURE() << "replays stopped at " << where << " (failed on this rank or a peer)";
    if (replay % 25 == 24) Progress::get().say(std::to_string(replay + 1) + " replays checked");
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  if (!all_ok) return;
  // After the replays the exchange still works eagerly.
  step("eager round after the replays");
  const RoundInput in = make_input(g, cfg, tokens, 9000);
  std::vector<std::byte> y;
  const Outcome want = host_round_with_outputs(host, cfg, g.rank(), in, y);
  expect_identical(device_round(device, dev, in, y, stream.get(), limit_s), want, "eager round after the replays");
}

// Thread-local capture: this thread's calls (the exchange's host-side checks
// among them) must be legal during the capture, while other threads of the
// process (MPI's, the group's progress thread) cannot invalidate it.
TEST_F(MpiTest, CudaGraphReplaysWithNewInputs) { graph_replays(cudaStreamCaptureModeThreadLocal, 100); }

// Global capture, PyTorch's default: no thread of the process may make a call
// the capture forbids while it lasts, epcomm's own threads included.
TEST_F(MpiTest, CudaGraphCapturesInGlobalMode) { graph_replays(cudaStreamCaptureModeGlobal, 5); }

// A rank that never sends: the GPU wait of the others gives up after the
// group's timeout, and their next call reports kTimeout naming it; the exchange
// then refuses further work, and a new exchange on the group works.
TEST_F(MpiTest, SilentPeerTimesOutNamingIt) {
  epcomm::GroupOptions o;
  o.timeout_s = 1;
  const epcomm::Group g(MPI_COMM_WORLD, o);
  SKIP_UNLESS_GPU();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  const GpuCase c{"silent", 2, 2, 256, 4, DType::kBF16, Format::kFP8, Format::kBF16};
  const epcomm::LowLatencyConfig cfg = config_of(g, c, epcomm::MemorySpace::kDevice);
  const RoundInput in = make_input(g, cfg, c.max_tokens, 70);
  Stream stream;
  {
    epcomm::LowLatencyExchange ex(g, cfg);
    DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
    dev.fill(in, std::vector<std::byte>{});
    const int silent = g.size() - 1;
    step("a round without rank " + std::to_string(silent));
    if (g.rank() != silent) {
      this_rank_part([&] {
        ex.dispatch_send(dev.input(c.max_tokens, stream.get()));
        ex.dispatch_recv(stream.get());
        wait_stream(stream.get(), round_limit_s(g), "dispatch_recv waiting for a silent peer");  // gave up after ~1 s
        expect_error([&] { ex.combine_send(dev.y.get(), stream.get()); }, epcomm::ErrorCode::kTimeout,
                     {"timed out after 1 s on the GPU in dispatch_recv",
                      "waiting for rank(s) " + std::to_string(silent)});
        expect_error([&] { ex.dispatch_send(dev.input(c.max_tokens, stream.get())); },
                     epcomm::ErrorCode::kGroupFailed, {"timed out"});
      });
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  epcomm::LowLatencyExchange host(g, config_of(g, c, epcomm::MemorySpace::kHost));
  epcomm::LowLatencyExchange again(g, cfg);
  DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
  std::vector<std::byte> y;
  const Outcome want = host_round_with_outputs(host, cfg, g.rank(), in, y);
  step("a new exchange after the timeout");
  expect_identical(device_round(again, dev, in, y, stream.get(), round_limit_s(g)), want,
                   "new exchange after the timeout");
}

// Bad input: an expert id out of range is seen on the GPU (the sender's next
// call names it, every other rank's names the sender); a host pointer is refused
// by the host at once, and peers learn it from the rejected words, not a timeout.
TEST_F(MpiTest, BadInputIsReportedOnEveryRank) {
  const epcomm::Group g(MPI_COMM_WORLD);
  SKIP_UNLESS_GPU();
  const int device = host_local_gpu();
  CUDA_OK(cudaSetDevice(device));
  const GpuCase c{"bad", 2, 2, 256, 4, DType::kBF16, Format::kFP8, Format::kBF16};
  const epcomm::LowLatencyConfig cfg = config_of(g, c, epcomm::MemorySpace::kDevice);
  Stream stream;
  {
    epcomm::LowLatencyExchange ex(g, cfg);
    RoundInput in = make_input(g, cfg, c.max_tokens, 80);
    if (g.rank() == 0) in.input.topk_idx[5] = cfg.num_experts + 3;  // token 2, k 1
    DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
    dev.fill(in, std::vector<std::byte>{});
    step("an expert id out of range, seen on the GPU");
    this_rank_part([&] {
      ex.dispatch_send(dev.input(c.max_tokens, stream.get()));
      ex.dispatch_recv(stream.get());
      wait_stream(stream.get(), round_limit_s(g), "dispatch_recv of a round with a bad expert id");
      if (g.rank() == 0) {
        expect_error([&] { ex.combine_send(dev.y.get(), stream.get()); }, epcomm::ErrorCode::kInvalidArgument,
                     {"topk_idx[2][1]=" + std::to_string(cfg.num_experts + 3), "outside [-1, num_experts="});
      } else {
        expect_error([&] { ex.combine_send(dev.y.get(), stream.get()); }, epcomm::ErrorCode::kInvalidArgument,
                     {"rank 0 rejected its dispatch"});
      }
    });
    MPI_Barrier(MPI_COMM_WORLD);
  }
  {
    epcomm::LowLatencyExchange ex(g, cfg);
    const RoundInput in = make_input(g, cfg, c.max_tokens, 81);
    DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
    dev.fill(in, std::vector<std::byte>{});
    epcomm::LowLatencyDispatchInput d = dev.input(c.max_tokens, stream.get());
    step("host memory as x, refused by the host");
    this_rank_part([&] {
      if (g.rank() == 0) {
        d.x = in.x.data();  // host memory
        expect_error([&] { ex.dispatch_send(d); }, epcomm::ErrorCode::kInvalidArgument, {"x (", "is host memory"});
      } else {
        ex.dispatch_send(d);
        ex.dispatch_recv(stream.get());
        wait_stream(stream.get(), round_limit_s(g), "dispatch_recv of a round rank 0 rejected");
        expect_error([&] { ex.combine_send(dev.y.get(), stream.get()); }, epcomm::ErrorCode::kInvalidArgument,
                     {"rank 0 rejected its dispatch"});
      }
    });
    MPI_Barrier(MPI_COMM_WORLD);
  }
  int count = 0;
  CUDA_OK(cudaGetDeviceCount(&count));
  if (count < 2) return;  // the same on every rank of the host
  {
    // A stream of another GPU: refused at once, peers told through the words.
    epcomm::LowLatencyExchange ex(g, cfg);
    const RoundInput in = make_input(g, cfg, c.max_tokens, 82);
    DeviceRound dev(cfg, int64_t{g.size()} * c.max_tokens);
    dev.fill(in, std::vector<std::byte>{});
    step("a stream of another GPU, refused by the host");
    this_rank_part([&] {
      if (g.rank() == 0) {
        cudaStream_t foreign = nullptr;
        CUDA_OK(cudaSetDevice((device + 1) % count));
        const cudaError_t made = cudaStreamCreateWithFlags(&foreign, cudaStreamNonBlocking);
        CUDA_OK(cudaSetDevice(device));
        CUDA_OK(made);
        expect_error([&] { ex.dispatch_send(dev.input(c.max_tokens, foreign)); }, epcomm::ErrorCode::kInvalidArgument,
                     {"belongs to CUDA device"});
        cudaStreamDestroy(foreign);
      } else {
        ex.dispatch_send(dev.input(c.max_tokens, stream.get()));
        ex.dispatch_recv(stream.get());
        wait_stream(stream.get(), round_limit_s(g), "dispatch_recv of a round rank 0 rejected (foreign stream)");
        expect_error([&] { ex.combine_send(dev.y.get(), stream.get()); }, epcomm::ErrorCode::kInvalidArgument,
                     {"rank 0 rejected its dispatch"});
      }
    });
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

// Across nodes the proxy runs on the group's progress thread: a group without
// one refuses device memory on every rank alike, with no GPU needed to see it.
TEST_F(MpiTest, AcrossNodesWithoutAProgressThreadIsRefused) {
  epcomm::GroupOptions o;
  o.progress = epcomm::GroupOptions::Progress::kInline;
  const epcomm::Group g(MPI_COMM_WORLD, o);
  if (g.num_nodes() == 1) GTEST_SKIP() << "one node: run with EPCOMM_RANKS_PER_NODE=1";
  epcomm::LowLatencyConfig cfg;
  cfg.num_experts = 2 * g.size();
  cfg.topk = 2;
  cfg.hidden = 256;
  cfg.max_tokens_per_rank = 4;
  cfg.memory = epcomm::MemorySpace::kDevice;
  expect_error([&] { epcomm::LowLatencyExchange ex(g, cfg); }, epcomm::ErrorCode::kUnsupported,
               {"across nodes", "needs the group's progress thread"});
  // The group is still usable: a host exchange works.
  cfg.memory = epcomm::MemorySpace::kHost;
  epcomm::LowLatencyExchange ex(g, cfg);
  EXPECT_EQ(ex.config().memory, epcomm::MemorySpace::kHost);
}

}  // namespace
}  // namespace epcomm_test
