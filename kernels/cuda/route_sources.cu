// SPDX-License-Identifier: MIT
// gather_routed_sources and index_node_partials: the source lists of a combine's
// sums, built on the GPU from the dispatch's forwarding record and the owners'
// token lists, in the host combine's order (owners in route order, a token's rows
// in expert order; nodes in node order), for accumulate_strided_list.
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
    gather_routed_sources_kernel(const SlotArrays* owners, int R, int L, int64_t out_row_bytes,
                                 const int32_t* route_count, const int32_t* route_local, const int32_t* route_entry,
                                 int64_t first, int64_t count, bool weighted, int stride, const void** rows,
                                 float* weights, int32_t* counts) {
  for (int64_t d = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; d < count;
       d += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t h = first + d;
    int n = 0;
    for (int c = 0; c < route_count[h]; ++c) {
      const SlotArrays& o = owners[route_local[h * R + c]];
      const int32_t* token_rows = o.token_rows + static_cast<int64_t>(route_entry[h * R + c]) * L;
      for (int x = 0; x < L && token_rows[x] >= 0 && n < stride; ++x) {
        const int32_t p = token_rows[x];
        rows[d * stride + n] = o.expert_out + static_cast<int64_t>(p) * out_row_bytes;
        weights[d * stride + n] = weighted ? o.weight[p] : 1.0f;
        ++n;
      }
    }
    counts[d] = n;
  }
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
  preload(reinterpret_cast<const void*>(&gather_routed_sources_kernel));
  preload(reinterpret_cast<const void*>(&index_node_partials_kernel));
}

}  // namespace detail

void gather_routed_sources(const SlotArrays* owners, int ranks_per_node, int max_rows_per_token,
                           int64_t out_row_bytes, const int32_t* route_count, const int32_t* route_local,
                           const int32_t* route_entry, int64_t first, int64_t count, bool weighted, int stride,
                           const void** rows, float* weights, int32_t* counts, void* stream) {
  using namespace detail;
  if (count <= 0) return;
  gather_routed_sources_kernel<<<thread_blocks(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      owners, ranks_per_node, max_rows_per_token, out_row_bytes, route_count, route_local, route_entry, first, count,
      weighted, stride, rows, weights, counts);
  check(cudaGetLastError(), "gather_routed_sources kernel launch");
}

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
