// SPDX-License-Identifier: MIT
// gather_routed_sources: the source lists of the forwarder's sums in a combine,
// built on the GPU from the dispatch's forwarding record and the owners' token
// lists, in the host combine's order (owners in route order, a token's rows in
// expert order), for accumulate_strided_list.
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

}  // namespace

void preload_route_source_kernels() {
  preload(reinterpret_cast<const void*>(&gather_routed_sources_kernel));
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

}  // namespace epcomm::kernels::cuda
