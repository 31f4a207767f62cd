// SPDX-License-Identifier: MIT
// The exchange on GPU memory (ExchangeConfig::memory = kDevice) against the host
// exchange on the same inputs, which is its oracle: received rows, row metadata,
// segment counts and combine outputs must be identical bit for bit, for every wire
// format. Results are read through the caller's stream without waiting on the
// host first, so the stream ordering is what is tested; with EPCOMM_HOLD_STREAMS=0
// (runs under compute-sanitizer, which serialises GPU work) the exchange does not
// hold streams and the tests wait on the host before reading. Skips, with a
// message, where no CUDA device is present.
#include <cuda_runtime_api.h>
#include <epcomm/epcomm.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "support/cuda_presence.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;

// Whether the exchange holds the caller's stream until an operation completes.
bool streams_held() {
  const char* v = std::getenv("EPCOMM_HOLD_STREAMS");
  return v == nullptr || std::string(v) != "0";
}

void cuda_ok(cudaError_t s, const char* what) {
  if (s != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(s));
}
#define CUDA_OK(call) cuda_ok((call), #call)

// GPU memory holding a copy of a host vector.
class DeviceArray {
 public:
  DeviceArray(const void* host, std::size_t bytes) : bytes_(bytes) {
    CUDA_OK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1));
    if (bytes > 0) CUDA_OK(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice));
  }
  explicit DeviceArray(std::size_t bytes) : bytes_(bytes) {
    CUDA_OK(cudaMalloc(&ptr_, bytes > 0 ? bytes : 1));
    CUDA_OK(cudaMemset(ptr_, 0, bytes > 0 ? bytes : 1));
  }
  ~DeviceArray() { cudaFree(ptr_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_;
};

// Through pinned memory, as a training loop would read results back.
// A case's inputs copied to the GPU, and the DispatchInput over them.
struct DeviceInputs {
  DeviceArray x, idx, weights;
  explicit DeviceInputs(const RankInput& in, const std::vector<std::byte>& x_dtype)
      : x(x_dtype.data(), x_dtype.size()),
        idx(in.topk_idx.data(), in.topk_idx.size() * 4),
        weights(in.topk_weights.data(), in.topk_weights.size() * 4) {}
  epcomm::DispatchInput dispatch(int num_tokens, cudaStream_t stream) const {
    epcomm::DispatchInput d;
    d.x = x.get();
    d.topk_idx = static_cast<const int32_t*>(idx.get());
    d.topk_weights = static_cast<const float*>(weights.get());
    d.num_tokens = num_tokens;
    d.memory = epcomm::MemorySpace::kDevice;
    d.stream = stream;
    return d;
  }
};

bool is_host_memory(const void* p) {
  cudaPointerAttributes a{};
  CUDA_OK(cudaPointerGetAttributes(&a, p));
  return a.type == cudaMemoryTypeHost;
}

// The exchange's outputs may be pinned host memory (GPUs without peer access).
// Those go through GPU memory: a copy from host to host memory is not a stream
// operation but the CPU's, done at once (CUDA makes it synchronous), while the
// copy engine reads them in stream order like GPU memory.
std::vector<std::byte> to_host(const void* src, std::size_t bytes, cudaStream_t stream) {
  void* pinned = nullptr;
  CUDA_OK(cudaMallocHost(&pinned, bytes > 0 ? bytes : 1));
  const bool via_gpu = bytes > 0 && is_host_memory(src);
  void* staged = nullptr;
  if (via_gpu) {
    CUDA_OK(cudaMallocAsync(&staged, bytes, stream));  // stream-ordered: waits for no other stream
    CUDA_OK(cudaMemcpyAsync(staged, src, bytes, cudaMemcpyHostToDevice, stream));
    src = staged;
  }
  if (bytes > 0) CUDA_OK(cudaMemcpyAsync(pinned, src, bytes, cudaMemcpyDeviceToHost, stream));
  CUDA_OK(cudaStreamSynchronize(stream));
  const auto* p = static_cast<const std::byte*>(pinned);
  std::vector<std::byte> out(p, p + bytes);
  if (staged != nullptr) CUDA_OK(cudaFreeAsync(staged, stream));
  cudaFreeHost(pinned);
  return out;
}

enum class Pattern { kRandom, kOneExpert, kEmptyRank, kRoutedNowhere };

struct Case {
  const char* name;
  Format dispatch_format;
  Format combine_format;
  DType dtype;
  int hidden;
  int max_tokens;
  int experts_per_rank;
  int topk;
  Pattern pattern;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

const Case kCases[] = {
    {"bf16_h7168", Format::kBF16, Format::kBF16, DType::kBF16, 7168, 96, 8, 8, Pattern::kRandom},
    {"fp8_bf16_h7168", Format::kFP8, Format::kBF16, DType::kBF16, 7168, 96, 8, 8, Pattern::kRandom},
    {"ue8m0_logfmt10", Format::kFP8UE8M0, Format::kLogFMT10, DType::kBF16, 512, 64, 4, 4, Pattern::kRandom},
    {"logfmt8_fp8", Format::kLogFMT8, Format::kFP8, DType::kBF16, 256, 64, 4, 3, Pattern::kRandom},
    {"logfmt3_logfmt16", Format::kLogFMT3, Format::kLogFMT16, DType::kBF16, 384, 40, 3, 2, Pattern::kRandom},
    {"f32_h1", Format::kF32, Format::kF32, DType::kF32, 1, 50, 4, 2, Pattern::kRandom},
    {"bf16_from_f32_h129", Format::kBF16, Format::kBF16, DType::kF32, 129, 50, 4, 3, Pattern::kRandom},
    {"fp8_h129", Format::kFP8, Format::kLogFMT8, DType::kBF16, 129, 50, 4, 3, Pattern::kRandom},
    {"one_expert", Format::kFP8, Format::kBF16, DType::kBF16, 256, 80, 4, 1, Pattern::kOneExpert},
    {"empty_rank", Format::kBF16, Format::kBF16, DType::kBF16, 256, 40, 4, 4, Pattern::kEmptyRank},
    {"routed_nowhere", Format::kFP8, Format::kBF16, DType::kBF16, 256, 40, 4, 4, Pattern::kRoutedNowhere},
    // Placement scans span many blocks of tokens; a token has more picks than a
    // warp has lanes.
    {"fp8_4096_tokens", Format::kFP8, Format::kBF16, DType::kBF16, 128, 4096, 16, 8, Pattern::kRandom},
    {"topk40_h129", Format::kBF16, Format::kLogFMT10, DType::kBF16, 129, 200, 32, 40, Pattern::kRandom},
};

struct CaseInput {
  epcomm::ExchangeConfig config;
  RankInput input;
  std::vector<std::byte> x;
};

CaseInput make_setup(const epcomm::Group& g, const Case& c, uint64_t seed) {
  Shape s{g.size(), g.ranks_per_node(), c.experts_per_rank * g.size(), c.topk, c.hidden};
  std::mt19937 rng(static_cast<unsigned>(seed) * 7919u + static_cast<unsigned>(g.rank()));
  int tokens = std::uniform_int_distribution<int>(c.max_tokens / 2, c.max_tokens)(rng);
  if (c.pattern == Pattern::kEmptyRank && g.rank() == g.size() - 1) tokens = 0;
  RankInput in = make_rank_input(s, tokens, g.num_nodes(), 0.1, seed, g.rank());
  if (c.pattern == Pattern::kOneExpert) {
    for (int32_t& e : in.topk_idx) e = s.experts - 1;
  }
  if (c.pattern == Pattern::kRoutedNowhere) {
    for (int t = 0; t < tokens; t += 2) {
      for (int k = 0; k < c.topk; ++k) in.topk_idx[static_cast<std::size_t>(t) * c.topk + k] = -1;
    }
  }
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = s.experts;
  cfg.topk = c.topk;
  cfg.hidden = c.hidden;
  cfg.max_tokens_per_rank = c.max_tokens;
  cfg.dtype = c.dtype;
  cfg.dispatch_format = c.dispatch_format;
  cfg.combine_format = c.combine_format;
  cfg.expert_alignment = 4;
  CaseInput su{cfg, std::move(in), {}};
  su.x = to_dtype(su.input.x, c.dtype);
  return su;
}

struct Result {
  std::vector<int64_t> counts, offsets;
  std::vector<std::byte> rows, weight, src_rank, src_token, out;
};

// Expert outputs for every real row of a dispatch's num_rows rows (the segments of
// r.counts / r.offsets), from the row's metadata alone (so host and device runs get
// the same bytes): BF16-exact values that depend on source rank, token, expert and
// column.
std::vector<std::byte> expert_outputs(const Result& res, int64_t num_rows, const int32_t* src_rank,
                                      const int32_t* src_token, int hidden, DType dtype) {
  std::vector<float> y(static_cast<std::size_t>(num_rows) * hidden, 0.0f);
  for (std::size_t j = 0; j < res.counts.size(); ++j) {
    for (int64_t r = res.offsets[j]; r < res.offsets[j] + res.counts[j]; ++r) {
      for (int c = 0; c < hidden; ++c) {
        const int v = (src_rank[r] * 131 + src_token[r] * 31 + static_cast<int>(j) * 17 + c * 7) % 61 - 30;
        y[static_cast<std::size_t>(r) * hidden + c] = static_cast<float>(v) / 16.0f;
      }
    }
  }
  return to_dtype(y, dtype);
}

// The oracle: the host exchange.
Result run_host(epcomm::Group& g, const CaseInput& su) {
  epcomm::Exchange ex(g, su.config);
  epcomm::DispatchInput d;
  d.x = su.x.data();
  d.topk_idx = su.input.topk_idx.data();
  d.topk_weights = su.input.topk_weights.data();
  d.num_tokens = su.input.num_tokens;
  epcomm::DispatchHandle h = ex.dispatch(d);
  Result r;
  const int64_t n = h.num_rows();
  for (int j = 0; j < h.num_local_experts(); ++j) {
    r.counts.push_back(h.expert_count(j));
    r.offsets.push_back(h.expert_offset(j));
  }
  const auto bytes = [](const void* p, std::size_t b) {
    return std::vector<std::byte>(static_cast<const std::byte*>(p), static_cast<const std::byte*>(p) + b);
  };
  r.rows = bytes(h.rows(), static_cast<std::size_t>(n) * h.row_bytes());
  r.weight = bytes(h.row_weights(), n * 4);
  r.src_rank = bytes(h.row_src_rank(), n * 4);
  r.src_token = bytes(h.row_src_token(), n * 4);
  const std::vector<std::byte> y =
      expert_outputs(r, n, h.row_src_rank(), h.row_src_token(), su.config.hidden, su.config.dtype);
  r.out.assign(static_cast<std::size_t>(su.input.num_tokens) * su.config.hidden * epcomm::dtype_size(su.config.dtype),
               std::byte{0});
  ex.combine(h, y.data(), n, r.out.data(), su.input.num_tokens);
  return r;
}

epcomm::ExchangeConfig on_device(epcomm::ExchangeConfig c) {
  c.memory = epcomm::MemorySpace::kDevice;
  c.device = host_local_gpu();
  return c;
}

// One dispatch + combine on the GPU through `stream`, results read on that stream
// before any host wait. expert_out_in_place: the outputs are written into
// expert_out_buffer() (combine skips its staging copy).
// layout: dispatch on that earlier dispatch's layout (DispatchHandle::layout()).
Result run_device(epcomm::Exchange& ex, const CaseInput& su, cudaStream_t stream, const Result& ref,
                  bool expert_out_in_place, const epcomm::DispatchLayout* layout = nullptr) {
  const DeviceInputs inputs(su.input, su.x);
  const epcomm::DispatchInput input = inputs.dispatch(su.input.num_tokens, stream);
  epcomm::DispatchHandle h = layout != nullptr ? ex.dispatch_begin(input, *layout) : ex.dispatch_begin(input);
  Result r;
  const int64_t n_ref = static_cast<int64_t>(ref.weight.size() / 4);
  const std::size_t row_bytes = epcomm::row_layout(su.config.dispatch_format, su.config.hidden).row_bytes;
  // Queued on the caller's stream right after begin: must see finished rows.
  if (!streams_held()) h.wait();
  r.rows = to_host(h.rows(), static_cast<std::size_t>(n_ref) * row_bytes, stream);
  h.wait();
  EXPECT_EQ(h.num_rows(), n_ref);
  for (int j = 0; j < h.num_local_experts(); ++j) {
    r.counts.push_back(h.expert_count(j));
    r.offsets.push_back(h.expert_offset(j));
  }
  const int64_t n = h.num_rows();
  r.weight = to_host(h.row_weights(), n * 4, stream);
  r.src_rank = to_host(h.row_src_rank(), n * 4, stream);
  r.src_token = to_host(h.row_src_token(), n * 4, stream);
  std::vector<int32_t> ranks(n), tokens(n);
  std::memcpy(ranks.data(), r.src_rank.data(), n * 4);
  std::memcpy(tokens.data(), r.src_token.data(), n * 4);
  const std::vector<std::byte> y = expert_outputs(r, n, ranks.data(), tokens.data(), su.config.hidden, su.config.dtype);
  DeviceArray y_dev(y.data(), y.size());
  const void* expert_out = y_dev.get();
  if (expert_out_in_place) {
    CUDA_OK(cudaMemcpyAsync(h.expert_out_buffer(), y.data(), y.size(), cudaMemcpyHostToDevice, stream));
    expert_out = h.expert_out_buffer();
  }
  const std::size_t out_bytes = static_cast<std::size_t>(su.input.num_tokens) * su.config.hidden *
                                epcomm::dtype_size(su.config.dtype);
  DeviceArray out(out_bytes);
  epcomm::CombineOptions on_stream;
  on_stream.stream = stream;
  epcomm::CombineHandle ch = ex.combine_begin(h, expert_out, n, out.get(), su.input.num_tokens, on_stream);
  if (!streams_held()) ch.wait();
  r.out = to_host(out.get(), out_bytes, stream);  // the stream waits for the combine
  ch.wait();
  return r;
}

void expect_identical(const Result& dev, const Result& ref) {
  EXPECT_EQ(dev.counts, ref.counts);
  EXPECT_EQ(dev.offsets, ref.offsets);
  EXPECT_TRUE(dev.rows == ref.rows) << "received rows differ from the host exchange's";
  EXPECT_TRUE(dev.weight == ref.weight) << "row weights differ";
  EXPECT_TRUE(dev.src_rank == ref.src_rank) << "row source ranks differ";
  EXPECT_TRUE(dev.src_token == ref.src_token) << "row source tokens differ";
  ASSERT_EQ(dev.out.size(), ref.out.size());
  std::size_t first = dev.out.size();
  for (std::size_t i = 0; i < dev.out.size() && first == dev.out.size(); ++i) {
    if (dev.out[i] != ref.out[i]) first = i;
  }
  EXPECT_EQ(first, dev.out.size()) << "combine output differs from the host exchange's first at byte " << first;
}

// Three rounds of case c on one device exchange (slots are reused, inputs
// change), each against the host exchange without checksums.
void expect_bit_identical_rounds(const Case& c, bool checksum) {
  epcomm::Group g(MPI_COMM_WORLD);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  epcomm::ExchangeConfig config = on_device(make_setup(g, c, 1).config);
  config.checksum = checksum;
  epcomm::Exchange ex(g, config);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (uint64_t round = 1; round <= 3; ++round) {
    const CaseInput su = make_setup(g, c, round);
    const Result ref = run_host(g, su);
    const Result dev = run_device(ex, su, stream, ref, round == 2);
    expect_identical(dev, ref);
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

class GpuExchange : public MpiTest, public testing::WithParamInterface<Case> {};

TEST_P(GpuExchange, BitIdenticalToTheHostExchange) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  expect_bit_identical_rounds(GetParam(), false);
}

// Within an SM budget (ExchangeConfig::gpu_sm_budget) every kernel gets at most
// that many blocks and loops over the rest of its rows: one block, and DeepSeek's
// 20, give the host exchange's bits.
TEST_P(GpuExchange, BitIdenticalWithinAnSmBudget) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case& c = GetParam();
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (int budget : {1, 20}) {
    const CaseInput su = make_setup(g, c, 40 + static_cast<uint64_t>(budget));
    epcomm::ExchangeConfig cfg = on_device(su.config);
    cfg.gpu_sm_budget = budget;
    epcomm::Exchange ex(g, cfg);
    ASSERT_EQ(ex.config().gpu_sm_budget, budget);
    const Result ref = run_host(g, su);
    SCOPED_TRACE("gpu_sm_budget " + std::to_string(budget));
    expect_identical(run_device(ex, su, stream, ref, budget == 20), ref);
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuExchange, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// ExchangeConfig::checksum on: the rows and the owner partials node peers write
// into each other's GPU memory are signed and checked by kernels, and the
// results must not change. Cases with aligned and odd row sizes, quantised
// and LogFMT partials, an empty rank and many tokens.
const Case kChecksumCases[] = {kCases[0], kCases[2], kCases[7], kCases[9], kCases[11], kCases[12]};

class GpuExchangeChecksums : public MpiTest, public testing::WithParamInterface<Case> {};

TEST_P(GpuExchangeChecksums, BitIdenticalToTheHostExchange) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  expect_bit_identical_rounds(GetParam(), true);
}

INSTANTIATE_TEST_SUITE_P(Cases, GpuExchangeChecksums, testing::ValuesIn(kChecksumCases),
                         [](const testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

// ExchangeConfig::checksum with rows in GPU memory, as tests/test_failures.cpp
// checks it for shared memory: rank 1 flips one bit of a row it shows its node
// peer rank 0, after its checksum was taken (EPCOMM_FAULT_FLIP_NODE_BIT=n: the
// n-th operation that signs rows; the dispatch is the first, the combine, whose
// owner partials rank 1 pushes into rank 0's GPU and signs, the second). Rank 0
// checks the row before it completes the operation and fails naming the row,
// rank 1 and the operation; rank 1 fails at once naming rank 0; and nothing
// after the failure (the held streams, the failed exchange's teardown) waits for
// the group's timeout. Needs two ranks on one node.
class GpuNodePeerBitFlip : public MpiTest {
 protected:
  // A group whose timeout (30 s) cannot end a case within its bounds.
  static constexpr double kBoundS = 2.0;
  static constexpr double kTeardownBoundS = 5.0;
  struct Outcome {
    bool failed = false;
    epcomm::ErrorCode code{};
    std::string what;
    double seconds = 0;
    double with_teardown_seconds = 0;  // until the stream drained and the exchange was gone
  };

  // A dispatch and, when in_combine, a combine on an exchange made while rank 1
  // has EPCOMM_FAULT_FLIP_NODE_BIT=flip_at; a rank whose operation completed
  // before the failure reached it fails in its next dispatch.
  Outcome run(epcomm::Group& g, int flip_at, bool in_combine) {
    const Case c{"flip", Format::kBF16, Format::kBF16, DType::kBF16, 256, 64, 4, 4, Pattern::kRandom};
    const CaseInput su = make_setup(g, c, 21);
    CUDA_OK(cudaSetDevice(host_local_gpu()));
    epcomm::ExchangeConfig config = on_device(su.config);
    config.checksum = true;
    if (g.rank() == 1) setenv("EPCOMM_FAULT_FLIP_NODE_BIT", std::to_string(flip_at).c_str(), 1);
    std::optional<epcomm::Exchange> exchange(std::in_place, g, config);
    epcomm::Exchange& ex = *exchange;
    unsetenv("EPCOMM_FAULT_FLIP_NODE_BIT");
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreate(&stream));
    const DeviceInputs inputs(su.input, su.x);
    const auto dispatch = [&] {
      epcomm::DispatchHandle h = ex.dispatch_begin(inputs.dispatch(su.input.num_tokens, stream));
      h.wait();
      return h;
    };
    Outcome o;
    const auto attempt = [&](const std::function<void()>& body, std::chrono::steady_clock::time_point start) {
      try {
        body();
      } catch (const epcomm::Error& e) {
        o.failed = true;
        o.code = e.code();
        o.what = e.what();
      }
      o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    std::optional<epcomm::DispatchHandle> h;
    if (in_combine) h = dispatch();
    DeviceArray y(h ? static_cast<std::size_t>(h->num_rows()) * c.hidden * 2 : 0);
    DeviceArray out(static_cast<std::size_t>(su.input.num_tokens) * c.hidden * 2);
    MPI_Barrier(MPI_COMM_WORLD);
    const auto start = std::chrono::steady_clock::now();
    if (in_combine) {
      attempt(
          [&] {
            epcomm::CombineOptions on_stream;
            on_stream.stream = stream;
            ex.combine_begin(*h, y.get(), h->num_rows(), out.get(), su.input.num_tokens, on_stream).wait();
          },
          start);
    } else {
      attempt([&] { dispatch(); }, start);
    }
    if (!o.failed) attempt([&] { dispatch(); }, start);
    h.reset();
    CUDA_OK(cudaStreamSynchronize(stream));
    exchange.reset();
    o.with_teardown_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CUDA_OK(cudaStreamDestroy(stream));
    return o;
  }

  void expect(const epcomm::Group& g, const std::string& name, const Outcome& o, epcomm::ErrorCode code,
              const std::vector<std::string>& needles) {
    EXPECT_TRUE(o.failed) << name << ": rank " << g.rank() << " did not fail";
    if (o.failed) {
      EXPECT_EQ(o.code, code) << name << ": " << o.what;
      for (const std::string& n : needles) EXPECT_NE(o.what.find(n), std::string::npos) << name << ": " << o.what;
    }
    EXPECT_LT(o.seconds, kBoundS) << name << ": rank " << g.rank() << " took " << o.seconds << " s";
    EXPECT_LT(o.with_teardown_seconds, kTeardownBoundS)
        << name << ": rank " << g.rank() << " took " << o.with_teardown_seconds << " s to drain its stream and drop "
        << "the failed exchange";
    std::printf("[gpu checksum] %s: rank %d %s in %.1f ms, %.1f ms with the teardown\n", name.c_str(), g.rank(),
                o.failed ? epcomm::to_string(o.code) : "ok", o.seconds * 1e3, o.with_teardown_seconds * 1e3);
  }

  // Why the case cannot run here, or empty.
  static std::string unable(const epcomm::Group& g) {
    if (!cuda_device_present()) return "no CUDA device on this host: GPU exchange tests skipped";
#ifndef EPCOMM_FAULT_INJECTION
    return "built without EPCOMM_FAULT_INJECTION";
#endif
    if (g.size() != 2 || g.ranks_per_node() != 2) return "needs 2 ranks on one node";
    const char* peer_access = std::getenv("EPCOMM_GPU_PEER_ACCESS");
    if (peer_access != nullptr && std::string(peer_access) == "0") {
      return "node peers exchange through shared memory (EPCOMM_GPU_PEER_ACCESS=0), where rows are not checksummed";
    }
    return "";
  }
  static epcomm::GroupOptions slow() {
    epcomm::GroupOptions o;
    o.timeout_s = 30;
    return o;
  }
};

TEST_F(GpuNodePeerBitFlip, InADispatchRowIsCaughtByItsOwner) {
  epcomm::Group g(MPI_COMM_WORLD, slow());
  const std::string why = unable(g);
  if (!why.empty()) GTEST_SKIP() << why;
  const Outcome o = run(g, 1, false);
  const std::string name = "one bit flipped in a dispatch row rank 1 wrote into rank 0's GPU memory";
  if (g.rank() == 0) {
    expect(g, name, o, epcomm::ErrorCode::kDataCorrupted,
           {"dispatch row", "of operation 1 in rank 0's GPU memory", "written by rank 1, is corrupted"});
  } else {
    expect(g, name, o, epcomm::ErrorCode::kGroupFailed, {"because of rank 0", "written by rank 1"});
  }
}

TEST_F(GpuNodePeerBitFlip, InAnOwnerPartialIsCaughtByItsReader) {
  epcomm::Group g(MPI_COMM_WORLD, slow());
  const std::string why = unable(g);
  if (!why.empty()) GTEST_SKIP() << why;
  const Outcome o = run(g, 2, true);
  const std::string name = "one bit flipped in an owner partial rank 1 pushed into rank 0's GPU memory";
  if (g.rank() == 0) {
    expect(g, name, o, epcomm::ErrorCode::kDataCorrupted,
           {"owner partial row", "of operation 2 in rank 0's GPU memory", "written by rank 1, is corrupted"});
  } else {
    expect(g, name, o, epcomm::ErrorCode::kGroupFailed, {"because of rank 0", "written by rank 1"});
  }
}

// Two micro-batches in flight on two streams at once.
TEST_F(MpiTest, TwoMicroBatchesOnTwoStreams) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"two", Format::kFP8, Format::kBF16, DType::kBF16, 1024, 64, 4, 4, Pattern::kRandom};
  const CaseInput a = make_setup(g, c, 11), b = make_setup(g, c, 12);
  const Result ref_a = run_host(g, a), ref_b = run_host(g, b);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  epcomm::Exchange ex(g, on_device(a.config));
  cudaStream_t sa, sb;
  CUDA_OK(cudaStreamCreate(&sa));
  CUDA_OK(cudaStreamCreate(&sb));
  const DeviceInputs da(a.input, a.x), db(b.input, b.x);
  epcomm::DispatchHandle ha = ex.dispatch_begin(da.dispatch(a.input.num_tokens, sa));
  epcomm::DispatchHandle hb = ex.dispatch_begin(db.dispatch(b.input.num_tokens, sb));
  if (!streams_held()) {
    hb.wait();
    ha.wait();
  }
  const std::vector<std::byte> rows_b = to_host(hb.rows(), ref_b.rows.size(), sb);
  const std::vector<std::byte> rows_a = to_host(ha.rows(), ref_a.rows.size(), sa);
  EXPECT_TRUE(rows_a == ref_a.rows);
  EXPECT_TRUE(rows_b == ref_b.rows);
  hb.wait();
  ha.wait();
  CUDA_OK(cudaStreamDestroy(sa));
  CUDA_OK(cudaStreamDestroy(sb));
}

// run_prefill_two_batch and run_decode_two_batch (epcomm/overlap.hpp) on a device
// exchange within an SM budget, each micro-batch on a non-blocking stream of its
// own: every layer's combine output of each micro-batch is bit-identical to the
// host exchange's on the same inputs. The stages only enqueue work on their
// micro-batch's stream (the experts copy prepared outputs into
// expert_out_buffer()), so the streams order them: a combine on any other stream
// could read expert outputs not yet written.
TEST_F(MpiTest, TwoMicroBatchSchedulesOnTwoStreamsWithinAnSmBudget) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"schedules", Format::kFP8, Format::kBF16, DType::kBF16, 512, 64, 4, 4, Pattern::kRandom};
  constexpr int kLayers = 2;
  // One micro-batch's layer: its inputs, the oracle, and the GPU copies.
  struct Layer {
    CaseInput su;
    Result ref;
    std::unique_ptr<DeviceInputs> in;
    std::unique_ptr<DeviceArray> y, out;
    std::size_t out_bytes = 0;
  };
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  std::vector<Layer> layers[2];
  for (int mb = 0; mb < 2; ++mb) {
    for (int layer = 0; layer < kLayers; ++layer) {
      Layer l{make_setup(g, c, 100 + 10 * static_cast<uint64_t>(mb) + static_cast<uint64_t>(layer)), {}, {}, {}, {}};
      l.ref = run_host(g, l.su);
      const int64_t n = static_cast<int64_t>(l.ref.weight.size() / 4);
      const std::vector<std::byte> y =
          expert_outputs(l.ref, n, reinterpret_cast<const int32_t*>(l.ref.src_rank.data()),
                         reinterpret_cast<const int32_t*>(l.ref.src_token.data()), c.hidden, c.dtype);
      l.in = std::make_unique<DeviceInputs>(l.su.input, l.su.x);
      l.y = std::make_unique<DeviceArray>(y.data(), y.size());
      l.out_bytes = l.ref.out.size();
      l.out = std::make_unique<DeviceArray>(l.out_bytes);
      layers[mb].push_back(std::move(l));
    }
  }
  cudaStream_t streams[2];
  for (cudaStream_t& s : streams) CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  epcomm::MicroBatchStages stages[2];
  for (int mb = 0; mb < 2; ++mb) {
    std::vector<Layer>& ls = layers[mb];
    const cudaStream_t s = streams[mb];
    stages[mb].attention = [&ls, s](int layer) {
      const Layer& l = ls[static_cast<std::size_t>(layer)];
      return l.in->dispatch(l.su.input.num_tokens, s);
    };
    stages[mb].experts = [&ls, s](int layer, const epcomm::DispatchHandle& h) {
      const Layer& l = ls[static_cast<std::size_t>(layer)];
      const std::size_t bytes = static_cast<std::size_t>(h.num_rows()) * l.su.config.hidden *
                                epcomm::dtype_size(l.su.config.dtype);
      CUDA_OK(cudaMemcpyAsync(h.expert_out_buffer(), l.y->get(), bytes, cudaMemcpyDeviceToDevice, s));
    };
    stages[mb].combine_output = [&ls](int layer) { return ls[static_cast<std::size_t>(layer)].out->get(); };
  }
  using Schedule = void (*)(epcomm::Exchange&, const epcomm::MicroBatchStages&, const epcomm::MicroBatchStages&, int);
  const std::pair<const char*, Schedule> schedules[] = {{"prefill", &epcomm::run_prefill_two_batch},
                                                        {"decode", &epcomm::run_decode_two_batch}};
  for (const auto& [name, schedule] : schedules) {
    SCOPED_TRACE(name);
    epcomm::ExchangeConfig cfg = on_device(layers[0][0].su.config);
    cfg.gpu_sm_budget = 20;
    epcomm::Exchange ex(g, cfg);
    schedule(ex, stages[0], stages[1], kLayers);
    for (int mb = 0; mb < 2; ++mb) {
      for (int layer = 0; layer < kLayers; ++layer) {
        const Layer& l = layers[mb][static_cast<std::size_t>(layer)];
        const std::vector<std::byte> out = to_host(l.out->get(), l.out_bytes, streams[mb]);
        EXPECT_TRUE(out == l.ref.out) << "micro-batch " << mb << " layer " << layer
                                      << ": combine output differs from the host exchange's";
        CUDA_OK(cudaMemsetAsync(l.out->get(), 0, l.out_bytes > 0 ? l.out_bytes : 1, streams[mb]));
      }
    }
    for (cudaStream_t st : streams) CUDA_OK(cudaStreamSynchronize(st));
  }
  for (cudaStream_t st : streams) CUDA_OK(cudaStreamDestroy(st));
}

// An SM budget beyond the device is an error on every rank naming the value, the
// device's SM count and the rank; the whole device (the SM count itself) is fine.
TEST_F(MpiTest, SmBudgetAboveTheDeviceIsRefused) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"budget", Format::kBF16, Format::kBF16, DType::kBF16, 256, 32, 4, 2, Pattern::kRandom};
  const CaseInput su = make_setup(g, c, 9);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, host_local_gpu()));
  epcomm::ExchangeConfig cfg = on_device(su.config);
  cfg.gpu_sm_budget = sms + 1;
  try {
    epcomm::Exchange ex(g, cfg);
    ADD_FAILURE() << "gpu_sm_budget=" << sms + 1 << " on a GPU of " << sms << " SMs was accepted";
  } catch (const epcomm::Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument) << what;
    for (const std::string& part : {"gpu_sm_budget=" + std::to_string(sms + 1), std::to_string(sms) + " SMs",
                                    "rank " + std::to_string(g.rank())}) {
      EXPECT_NE(what.find(part), std::string::npos) << what;
    }
  }
  cfg.gpu_sm_budget = sms;
  epcomm::Exchange ex(g, cfg);
  const Result ref = run_host(g, su);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  expect_identical(run_device(ex, su, stream, ref, false), ref);
  CUDA_OK(cudaStreamDestroy(stream));
}

// EPCOMM_GPU_PEER_ACCESS=0 with node peers: received rows and their metadata are
// in the node's shared memory (pinned host memory), expert outputs on the GPU;
// without node peers, or without the variable where ranks share a GPU, all of it
// is GPU memory. (The bit-identical cases above then test that path.)
TEST_F(MpiTest, RowsLiveWherePeerAccessAllows) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const char* setting = std::getenv("EPCOMM_GPU_PEER_ACCESS");
  const bool forced = setting != nullptr && std::string(setting) == "0";
  const Case c{"where", Format::kFP8, Format::kBF16, DType::kBF16, 256, 32, 4, 2, Pattern::kRandom};
  const CaseInput su = make_setup(g, c, 7);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  int count = 0;
  CUDA_OK(cudaGetDeviceCount(&count));
  if (!forced && g.ranks_per_node() > 1 && count > 1) {
    GTEST_SKIP() << "node peers on several GPUs: where rows live depends on their peer access";
  }
  epcomm::Exchange ex(g, on_device(su.config));
  const DeviceInputs inputs(su.input, su.x);
  epcomm::DispatchHandle h = ex.dispatch(inputs.dispatch(su.input.num_tokens, nullptr));
  const bool staged = forced && g.ranks_per_node() > 1;
  EXPECT_EQ(is_host_memory(h.rows()), staged);
  EXPECT_EQ(is_host_memory(h.row_weights()), staged);
  EXPECT_EQ(is_host_memory(h.row_src_token()), staged);
  EXPECT_FALSE(is_host_memory(h.expert_out_buffer()));
}

// Bad input: a clear error on every rank, nothing taken, the exchange usable after.
TEST_F(MpiTest, HostPointersAndForeignStreamsAreRefused) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"bad", Format::kBF16, Format::kBF16, DType::kBF16, 256, 32, 4, 2, Pattern::kRandom};
  const CaseInput su = make_setup(g, c, 5);
  const Result ref = run_host(g, su);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  epcomm::Exchange ex(g, on_device(su.config));
  epcomm::DispatchInput d;
  d.x = su.x.data();  // host memory
  d.topk_idx = su.input.topk_idx.data();
  d.topk_weights = su.input.topk_weights.data();
  d.num_tokens = su.input.num_tokens;
  d.memory = epcomm::MemorySpace::kDevice;
  if (d.num_tokens > 0) {
    try {
      ex.dispatch_begin(d);
      ADD_FAILURE() << "host memory passed as device memory was accepted";
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("DispatchInput::x"), std::string::npos) << e.what();
    }
  }
  int count = 0;
  CUDA_OK(cudaGetDeviceCount(&count));
  if (count > 1 && d.num_tokens > 0) {
    cudaStream_t other;
    CUDA_OK(cudaSetDevice((host_local_gpu() + 1) % count));
    CUDA_OK(cudaStreamCreate(&other));
    CUDA_OK(cudaSetDevice(host_local_gpu()));
    const DeviceInputs on_gpu(su.input, su.x);
    const epcomm::DispatchInput bad = on_gpu.dispatch(su.input.num_tokens, other);
    try {
      ex.dispatch_begin(bad);
      ADD_FAILURE() << "a stream of another device was accepted";
    } catch (const epcomm::Error& e) {
      EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("stream"), std::string::npos) << e.what();
    }
    CUDA_OK(cudaStreamDestroy(other));
  }
  // Nothing was taken: a correct dispatch + combine still matches the oracle.
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  expect_identical(run_device(ex, su, stream, ref, false), ref);
  CUDA_OK(cudaStreamDestroy(stream));
}

// The message of the error `f` throws, and checks its code.
std::string error_of(const std::function<void()>& f, epcomm::ErrorCode code) {
  try {
    f();
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// Bad routing, the same on every rank, checked by the GPU on one node (by the host
// across nodes): each rank rejects the begin with the very message the host
// exchange's check gives for the same input, naming the first bad pick in token
// order (here past the first 1024 tokens, with another bad one after it); then a
// correct dispatch + combine on the same Exchange matches the oracle.
TEST_F(MpiTest, BadRoutingIsRejectedOnEveryRankAsTheHostRejectsIt) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"bad_routing", Format::kFP8, Format::kBF16, DType::kBF16, 128, 4096, 16, 8, Pattern::kRandom};
  const CaseInput su = make_setup(g, c, 11);
  const int K = c.topk, E = su.config.num_experts;
  const Result ref = run_host(g, su);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  epcomm::Exchange ex(g, on_device(su.config));
  epcomm::Exchange host(g, su.config);
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  const int t1 = 1100 + g.rank(), t2 = su.input.num_tokens - 1;  // 2048 tokens or more
  // Token t's picks: distinct valid experts, so that only the change made is bad.
  const auto valid_row = [&](RankInput& in, int t) {
    for (int k = 0; k < K; ++k) in.topk_idx[static_cast<std::size_t>(t) * K + k] = (t + k) % E;
  };
  struct Bad {
    const char* name;
    std::function<void(RankInput&)> apply;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const Bad bads[] = {
      {"expert id past the experts", [&](RankInput& in) { in.topk_idx[static_cast<std::size_t>(t1) * K + 2] = E + 3; }},
      {"expert id below -1", [&](RankInput& in) { in.topk_idx[static_cast<std::size_t>(t1) * K + 5] = -2; }},
      {"expert chosen twice",
       [&](RankInput& in) {
         valid_row(in, t1);
         in.topk_idx[static_cast<std::size_t>(t1) * K + 6] = in.topk_idx[static_cast<std::size_t>(t1) * K + 1];
       }},
      {"NaN weight",
       [&](RankInput& in) {
         valid_row(in, t1);
         in.topk_weights[static_cast<std::size_t>(t1) * K + 4] = nan;
       }},
      {"infinite weight after a pick of no expert with one",
       [&](RankInput& in) {
         // A pick of no expert is not checked: its weight may be anything.
         in.topk_idx[static_cast<std::size_t>(t1 - 7) * K + 3] = -1;
         in.topk_weights[static_cast<std::size_t>(t1 - 7) * K + 3] = inf;
         valid_row(in, t1);
         in.topk_weights[static_cast<std::size_t>(t1) * K + 7] = -inf;
       }},
  };
  for (const Bad& bad : bads) {
    SCOPED_TRACE(bad.name);
    RankInput in = su.input;
    bad.apply(in);
    in.topk_idx[static_cast<std::size_t>(t2) * K] = E;  // a later bad pick, not the one named
    epcomm::DispatchInput host_input;
    host_input.x = su.x.data();
    host_input.topk_idx = in.topk_idx.data();
    host_input.topk_weights = in.topk_weights.data();
    host_input.num_tokens = in.num_tokens;
    const std::string expected =
        error_of([&] { host.dispatch_begin(host_input); }, epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(expected.find(std::to_string(t1)), std::string::npos) << expected;
    const DeviceInputs on_gpu(in, su.x);
    const std::string got = error_of([&] { ex.dispatch_begin(on_gpu.dispatch(in.num_tokens, stream)); },
                                     epcomm::ErrorCode::kInvalidArgument);
    EXPECT_EQ(got, expected);
  }
  ASSERT_FALSE(HasFailure());
  expect_identical(run_device(ex, su, stream, ref, false), ref);
  CUDA_OK(cudaStreamDestroy(stream));
}

// The case's routing with its tokens in reverse order: the same counts per expert,
// rank and node (so the same layout), other rows in other places.
CaseInput reversed_tokens(const CaseInput& su) {
  CaseInput r = su;
  const int T = su.input.num_tokens, K = su.config.topk;
  for (int t = 0; t < T; ++t) {
    for (int k = 0; k < K; ++k) {
      const std::size_t to = static_cast<std::size_t>(t) * K + k, from = static_cast<std::size_t>(T - 1 - t) * K + k;
      r.input.topk_idx[to] = su.input.topk_idx[from];
      r.input.topk_weights[to] = su.input.topk_weights[from];
    }
  }
  return r;
}

// A dispatch on an earlier dispatch's layout (no layout exchange; on one node no
// copy of the counts either: the GPU compares them) is bit-identical to a host
// dispatch of the same input that exchanged its own, for routings with those
// counts, in a format encoded before routing and in one encoded after.
TEST_F(MpiTest, DispatchOnAReusedLayoutIsBitIdentical) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  for (const Case& c : {Case{"reuse_fp8", Format::kFP8, Format::kBF16, DType::kBF16, 256, 1500, 4, 8, Pattern::kRandom},
                        Case{"reuse_logfmt8", Format::kLogFMT8, Format::kBF16, DType::kBF16, 256, 300, 4, 4,
                             Pattern::kRandom}}) {
    SCOPED_TRACE(c.name);
    const CaseInput su = make_setup(g, c, 21);
    epcomm::Exchange ex(g, on_device(su.config));
    const Result ref = run_host(g, su);
    expect_identical(run_device(ex, su, stream, ref, false), ref);
    epcomm::DispatchLayout layout;
    {
      const DeviceInputs inputs(su.input, su.x);
      layout = ex.dispatch(inputs.dispatch(su.input.num_tokens, stream)).layout();
    }
    for (const CaseInput& again : {su, reversed_tokens(su)}) {
      const Result ref2 = run_host(g, again);
      expect_identical(run_device(ex, again, stream, ref2, false, &layout), ref2);
    }
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

// A dispatch on a reused layout whose routing has other counts, or a bad pick,
// fails on every rank with the message the host's check gives: at its begin where
// the host checks (across nodes, or a format encoded after routing), at wait()
// where the GPU does, failing the group. Each on a fresh Exchange.
TEST_F(MpiTest, DispatchOnAReusedLayoutWithOtherCountsOrABadPickFails) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: GPU exchange tests skipped";
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"reuse_bad", Format::kFP8, Format::kBF16, DType::kBF16, 256, 300, 4, 4, Pattern::kRandom};
  const CaseInput su = make_setup(g, c, 31);
  const int K = c.topk, E = su.config.num_experts;
  CUDA_OK(cudaSetDevice(host_local_gpu()));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreate(&stream));
  // Token 5's first pick moves to an expert the token does not have: other counts.
  CaseInput other = su;
  {
    int32_t* row = other.input.topk_idx.data() + 5 * K;
    row[0] = 0;
    for (int e = 0; e < E; ++e) {
      if (std::find(row + 1, row + K, e) == row + K) {
        row[0] = e;
        break;
      }
    }
    if (row[0] == su.input.topk_idx[5 * K]) row[0] = -1;  // it had no free expert: drop the pick
  }
  CaseInput nan_weight = su;
  {
    // The same counts, a NaN weight on a real pick.
    int k = 0;
    while (su.input.topk_idx[7 * K + k] == -1 && k + 1 < K) ++k;
    if (su.input.topk_idx[7 * K + k] == -1) nan_weight.input.topk_idx[7 * K + k] = 0;
    nan_weight.input.topk_weights[7 * K + k] = std::numeric_limits<float>::quiet_NaN();
  }
  const std::pair<const CaseInput*, const char*> bads[] = {
      {&other, "(a reused layout needs the counts it was made from)"},
      {&nan_weight, "is not finite"},
  };
  for (const auto& [bad, needle] : bads) {
    SCOPED_TRACE(needle);
    epcomm::Exchange ex(g, on_device(su.config));
    epcomm::DispatchLayout layout;
    {
      const DeviceInputs inputs(su.input, su.x);
      layout = ex.dispatch(inputs.dispatch(su.input.num_tokens, stream)).layout();
    }
    const DeviceInputs inputs(bad->input, bad->x);
    try {
      epcomm::DispatchHandle h = ex.dispatch_begin(inputs.dispatch(bad->input.num_tokens, stream), layout);
      h.wait();
      ADD_FAILURE() << "a dispatch on a layout its routing does not fit completed";
    } catch (const epcomm::Error& e) {
      // Its own error, or a peer's that reached it first (kGroupFailed, naming it).
      EXPECT_TRUE(e.code() == epcomm::ErrorCode::kInvalidArgument || e.code() == epcomm::ErrorCode::kGroupFailed)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    CUDA_OK(cudaStreamSynchronize(stream));
  }
  CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace
}  // namespace epcomm_test
