// SPDX-License-Identifier: MIT
// The low-latency exchange's CUDA kernels (epcomm_kernels/cuda_low_latency.hpp) in
// one process on one GPU: every rank of one node is emulated by its own buffers in
// that GPU's memory, laid out by the host engine's buffer_layout, and the kernels
// of each rank run in turn. Rows must be the scalar reference codec's bytes and
// combine the k-ordered sum, as for the host exchange (test_low_latency.cpp).
// Skips without a GPU. NOT YET RUN ON A GPU.
#include <cuda_runtime_api.h>

#include <epcomm/low_latency.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "epcomm_kernels/cuda_low_latency.hpp"
#include "low_latency/buffer_layout.hpp"
#include "support/cuda_presence.hpp"
#include "support/low_latency_reference.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;
namespace kc = epcomm::kernels::cuda;

#define CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// Device memory freed with the test.
struct DeviceMemory {
  std::vector<void*> blocks;
  ~DeviceMemory() {
    for (void* p : blocks) cudaFree(p);
  }
  template <class T>
  T* zeroed(std::size_t count) {
    void* p = nullptr;
    if (cudaMalloc(&p, count * sizeof(T) + 16) != cudaSuccess) return nullptr;
    blocks.push_back(p);
    cudaMemset(p, 0, count * sizeof(T) + 16);
    return static_cast<T*>(p);
  }
  template <class T>
  T* copy_of(const std::vector<T>& v) {
    T* p = zeroed<T>(v.size());
    if (p != nullptr && !v.empty()) cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
    return p;
  }
};

template <class T>
std::vector<T> to_host(const T* p, std::size_t count) {
  std::vector<T> v(count);
  if (count > 0) cudaMemcpy(v.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

struct GpuCase {
  std::string name;
  int ranks;
  int experts_per_rank;
  int topk;
  int hidden;
  int max_tokens;
  DType dtype;
  Format dispatch_format;
  Format combine_format;
};

class LowLatencyGpuTest : public testing::TestWithParam<GpuCase> {};

TEST_P(LowLatencyGpuTest, KernelsMatchReferenceOnOneGpu) {
  if (!cuda_device_present()) GTEST_SKIP() << "no CUDA device on this host: low-latency GPU kernel tests skipped";
  const GpuCase& c = GetParam();
  const int P = c.ranks;
  epcomm::LowLatencyConfig config;
  config.num_experts = c.experts_per_rank * P;
  config.topk = c.topk;
  config.hidden = c.hidden;
  config.max_tokens_per_rank = c.max_tokens;
  config.dtype = c.dtype;
  config.dispatch_format = c.dispatch_format;
  config.combine_format = c.combine_format;
  const auto shape = epcomm::detail::LowLatencyShape::of(config, P, P);  // one node
  const epcomm::detail::SharedLayout layout(shape);
  const int J = shape.local_experts;
  const int64_t per_expert = shape.rows_per_expert();
  const Shape s{P, P, config.num_experts, c.topk, c.hidden};

  DeviceMemory mem;
  std::vector<uint8_t*> regions(P);
  for (int r = 0; r < P; ++r) regions[r] = mem.zeroed<uint8_t>(layout.bytes);
  uint8_t** shared = mem.copy_of(regions);
  void* pinned = nullptr;
  CUDA_OK(cudaMallocHost(&pinned, sizeof(kc::LowLatencyDiagnosis) * P));
  auto* diagnosis = static_cast<kc::LowLatencyDiagnosis*>(pinned);
  std::memset(diagnosis, 0, sizeof(kc::LowLatencyDiagnosis) * P);
  std::unique_ptr<kc::LowLatencyDiagnosis, decltype(&cudaFreeHost)> diagnosis_owner(diagnosis, &cudaFreeHost);

  std::vector<RankInput> all(P);
  std::vector<kc::LowLatencyGeometry> geometry(P);
  std::vector<kc::LowLatencyBuffers> buffers(P);
  std::vector<std::vector<std::byte>> x(P);
  std::vector<std::byte*> x_dev(P);
  std::vector<int32_t*> idx_dev(P);
  std::vector<float*> w_dev(P);
  for (int r = 0; r < P; ++r) {
    all[r] = make_rank_input(s, r == 1 ? 0 : c.max_tokens - r, 99, 0.1, 900 + r, r);
    x[r] = to_dtype(all[r].x, c.dtype);
    x_dev[r] = mem.copy_of(x[r]);
    idx_dev[r] = mem.copy_of(all[r].topk_idx);
    w_dev[r] = mem.copy_of(all[r].topk_weights);
    kc::LowLatencyGeometry& g = geometry[r];
    g.ranks = P;
    g.ranks_per_node = P;
    g.rank = r;
    g.local_experts = J;
    g.max_tokens = c.max_tokens;
    g.topk = c.topk;
    g.hidden = c.hidden;
    g.dtype = c.dtype;
    g.dispatch_format = c.dispatch_format;
    g.combine_format = c.combine_format;
    for (int p = 0; p < 2; ++p) {
      g.counts[p] = static_cast<int64_t>(layout.counts[p]);
      g.meta[p] = static_cast<int64_t>(layout.meta[p]);
      g.rows[p] = static_cast<int64_t>(layout.rows[p]);
    }
    g.combine_flags = static_cast<int64_t>(layout.combine_flags);
    g.combine_rows = static_cast<int64_t>(layout.combine_rows);
    g.max_rows_to_rank = shape.max_rows_to_rank();
    kc::LowLatencyBuffers& b = buffers[r];
    b.shared = shared;
    b.own_shared = regions[r];
    b.diagnosis = diagnosis + r;
    b.slot = mem.zeroed<int32_t>(static_cast<std::size_t>(c.max_tokens) * c.topk);
    b.counts = mem.zeroed<int32_t>(static_cast<std::size_t>(P) * J);
    b.first_row = mem.zeroed<int32_t>(static_cast<std::size_t>(P) * J);
    b.rows_to = mem.zeroed<int32_t>(static_cast<std::size_t>(P));
    b.flags = mem.zeroed<int32_t>(4);
    b.bad_output = mem.zeroed<unsigned long long>(1);
    b.out_rows = mem.zeroed<uint8_t>(static_cast<std::size_t>(J * per_expert) * shape.dispatch_row);
    b.out_counts = mem.zeroed<int32_t>(static_cast<std::size_t>(J));
    b.out_src_rank = mem.zeroed<int32_t>(static_cast<std::size_t>(J * per_expert));
    b.out_src_token = mem.zeroed<int32_t>(static_cast<std::size_t>(J * per_expert));
    b.out_k = mem.zeroed<int32_t>(static_cast<std::size_t>(J * per_expert));
    b.combine_pos = mem.zeroed<int32_t>(static_cast<std::size_t>(J * per_expert));
  }
  kc::low_latency_preload_kernels();
  const uint64_t timeout_cycles = 20'000'000'000ull;  // ~10 s at 2 GHz
  for (uint64_t round = 1; round <= 3; ++round) {
    for (int r = 0; r < P; ++r) {
      kc::low_latency_dispatch_send(geometry[r], buffers[r], x_dev[r], idx_dev[r], w_dev[r], all[r].num_tokens, round,
                                    nullptr);
    }
    for (int r = 0; r < P; ++r) kc::low_latency_dispatch_recv(geometry[r], buffers[r], round, timeout_cycles, nullptr);
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<std::vector<std::byte>> y(P);
    for (int r = 0; r < P; ++r) {
      ASSERT_EQ(diagnosis[r].code, 0) << "rank " << r << " diagnosis rank " << diagnosis[r].rank;
      const auto expected = expected_dispatch(all, s, r);
      const auto counts = to_host(buffers[r].out_counts, J);
      const auto src_rank = to_host(buffers[r].out_src_rank, J * per_expert);
      const auto src_token = to_host(buffers[r].out_src_token, J * per_expert);
      const auto rows = to_host(reinterpret_cast<const std::byte*>(buffers[r].out_rows),
                                static_cast<std::size_t>(J * per_expert) * shape.dispatch_row);
      for (int j = 0; j < J; ++j) {
        ASSERT_EQ(counts[j], static_cast<int32_t>(expected[j].size())) << "rank " << r << " expert " << j;
        for (std::size_t i = 0; i < expected[j].size(); ++i) {
          const int64_t at = j * per_expert + static_cast<int64_t>(i);
          ASSERT_EQ(src_rank[at], expected[j][i].src_rank);
          ASSERT_EQ(src_token[at], expected[j][i].src_token);
          const auto want = encoded_source_row(all[expected[j][i].src_rank], expected[j][i].src_token, config);
          ASSERT_EQ(0, std::memcmp(rows.data() + at * shape.dispatch_row, want.data(), want.size()))
              << "rank " << r << " expert " << j << " row " << i;
        }
      }
      y[r] = expert_outputs(config, r * J, J, per_expert, rows.data(), shape.dispatch_row, counts.data());
    }
    std::vector<std::byte*> y_dev(P), out_dev(P);
    for (int r = 0; r < P; ++r) {
      y_dev[r] = mem.copy_of(y[r]);
      out_dev[r] = mem.zeroed<std::byte>(static_cast<std::size_t>(all[r].num_tokens) * shape.out_row);
      kc::low_latency_combine_send(geometry[r], buffers[r], y_dev[r], round, nullptr);
    }
    for (int r = 0; r < P; ++r) {
      kc::low_latency_combine_recv(geometry[r], buffers[r], w_dev[r], all[r].num_tokens, out_dev[r], round,
                                   timeout_cycles, nullptr);
    }
    CUDA_OK(cudaDeviceSynchronize());
    for (int r = 0; r < P; ++r) {
      ASSERT_EQ(diagnosis[r].code, 0) << "rank " << r;
      const auto want = expected_low_latency_combine(all[r], config, nullptr);
      const auto got = to_host(out_dev[r], want.size());
      ASSERT_EQ(got, want) << "rank " << r << " round " << round << ": combine differs from the k-ordered sum";
    }
  }
}

const GpuCase kGpuCases[] = {
    {"bf16_h7168_top8_p2", 2, 4, 8, 7168, 16, DType::kBF16, Format::kBF16, Format::kBF16},
    {"fp8_bf16_h7168_top8_p4", 4, 4, 8, 7168, 8, DType::kBF16, Format::kFP8, Format::kBF16},
    {"ue8m0_logfmt10_h2048_top9_p2", 2, 5, 9, 2048, 12, DType::kBF16, Format::kFP8UE8M0, Format::kLogFMT10},
    {"fp8_bf16_h300_top3_p2", 2, 3, 3, 300, 20, DType::kBF16, Format::kFP8, Format::kBF16},
    {"f32_bf16_wire_h130_top1_p4", 4, 2, 1, 130, 24, DType::kF32, Format::kBF16, Format::kF32},
};

INSTANTIATE_TEST_SUITE_P(Cases, LowLatencyGpuTest, testing::ValuesIn(kGpuCases),
                         [](const testing::TestParamInfo<GpuCase>& p) { return p.param.name; });

}  // namespace
}  // namespace epcomm_test
