// SPDX-License-Identifier: MIT
// index_node_partials: the source lists of a combine's final sums, built on the
// GPU from the routes' token lists, in the host combine's order (nodes in node
// order), for accumulate_strided_list. (The node pre-reductions walk the
// forwarding record themselves: owner_partials.cu.)
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

unsigned thread_blocks(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20);
}

__global__ void __launch_bounds__(kThreads)
    index_node_partials_kernel(const int32_t* tokens, int32_t count, const uint8_t* base, int64_t row_bytes,
                               const void** rows, float* weights, int32_t* counts) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int32_t t = tokens[i];
    rows[t] = base + i * row_bytes;
    weights[t] = 1.0f;
    counts[t] = 1;
  }
}

}  // namespace

void preload_route_source_kernels() {
  preload(reinterpret_cast<const void*>(&index_node_partials_kernel));
}

}  // namespace detail

void index_node_partials(const int32_t* tokens, int32_t count, const void* base, int64_t row_bytes, int num_tokens,
                         const void** rows, float* weights, int32_t* counts, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  if (num_tokens <= 0) return;
  check(cudaMemsetAsync(counts, 0, static_cast<std::size_t>(num_tokens) * sizeof(int32_t), s), "cudaMemsetAsync");
  if (count <= 0) return;
  index_node_partials_kernel<<<thread_blocks(count), kThreads, 0, s>>>(tokens, count, static_cast<const uint8_t*>(base),
                                                                      row_bytes, rows, weights, counts);
  check(cudaGetLastError(), "index_node_partials kernel launch");
}

}  // namespace epcomm::kernels::cuda
