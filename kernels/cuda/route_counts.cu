// SPDX-License-Identifier: MIT
// count_routes: a dispatch source's routing checked and counted on the GPU, as
// the host's build_token_routes (runtime/src/plan/token_routes.cpp) checks and
// counts it, so that only the counts travel to the host for the layout exchange.
//
// One block of 1024 threads, a thread per token, the tokens walked in order
// blockDim at a time. Pass 1 checks every pick and tallies the counts in shared
// memory (integer additions: their order cannot change the sums); a chunk with a
// bad pick ends it, and the first bad pick in (token, pick) order is the
// smallest of the chunk (a shared atomicMin: a minimum has no order either).
// Pass 2 writes each node's token list, ascending: per node, a block-wide prefix
// count over the chunk, carried from chunk to chunk, as place_rows does per
// column. 4096 tokens take 4 chunks per pass; one block suffices because the work
// is a few loads per token, far less than one launch's latency.
#include <climits>

#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kCountThreads = 1024;

// Pick k of a token is bad as the host's check rejects it: an id outside
// [-1, num_experts), a non-finite weight of a real pick, or an expert an earlier
// pick of the token chose.
__device__ inline bool bad_pick(const int32_t* idx, const float* w, int k, int num_experts) {
  const int32_t e = idx[k];
  if (e == -1) return false;
  if (e < 0 || e >= num_experts || !isfinite(w[k])) return true;
  for (int k2 = 0; k2 < k; ++k2) {
    if (idx[k2] == e) return true;
  }
  return false;
}

// Whether an earlier real pick of the token has the same value of `group` (rank
// or node) as pick k: each token counts once per rank and per node.
template <class Group>
__device__ inline bool seen_before(const int32_t* idx, int k, Group group) {
  const int g = group(idx[k]);
  for (int k2 = 0; k2 < k; ++k2) {
    if (idx[k2] != -1 && group(idx[k2]) == g) return true;
  }
  return false;
}

__global__ void __launch_bounds__(kCountThreads)
    count_routes_kernel(const int32_t* topk_idx, const float* topk_weights, RouteShape shape, const int32_t* expected,
                        int32_t* counts, int32_t* node_tokens, volatile int32_t* report) {
  extern __shared__ int32_t tally[];  // experts, ranks, nodes (pass 2: the nodes' cursors)
  __shared__ int first_bad;           // in the chunk: (token - chunk start) * K + k
  __shared__ int32_t warp_hits[kCountThreads / 32];
  __shared__ int differs;
  const int64_t T = shape.num_tokens;
  const int K = shape.topk, E = shape.num_experts, J = shape.experts_per_rank, R = shape.ranks_per_node;
  const int N = shape.num_nodes, P = R * N;
  int32_t* experts = tally;
  int32_t* ranks = tally + E;
  int32_t* nodes = ranks + P;
  for (int i = threadIdx.x; i < E + P + N; i += blockDim.x) tally[i] = 0;
  if (threadIdx.x == 0) {
    first_bad = INT_MAX;
    differs = 0;
  }
  __syncthreads();
  const auto rank_of = [J](int32_t e) { return e / J; };
  const auto node_of = [J, R](int32_t e) { return e / J / R; };

  // Pass 1: check and count.
  int64_t bad_token = -1;
  int bad_k = -1;
  for (int64_t i0 = 0; i0 < T; i0 += kCountThreads) {
    const int64_t t = i0 + threadIdx.x;
    if (t < T) {
      const int32_t* idx = topk_idx + t * K;
      const float* w = topk_weights + t * K;
      int bad = -1;
      for (int k = 0; k < K && bad < 0; ++k) {
        if (bad_pick(idx, w, k, E)) bad = k;
      }
      if (bad >= 0) {
        atomicMin(&first_bad, threadIdx.x * K + bad);
      } else {
        for (int k = 0; k < K; ++k) {
          const int32_t e = idx[k];
          if (e == -1) continue;
          atomicAdd(&experts[e], 1);
          if (!seen_before(idx, k, rank_of)) atomicAdd(&ranks[rank_of(e)], 1);
          if (!seen_before(idx, k, node_of)) atomicAdd(&nodes[node_of(e)], 1);
        }
      }
    }
    __syncthreads();
    const int found = first_bad;
    __syncthreads();  // every thread read first_bad before the next chunk may lower it
    if (found != INT_MAX) {
      bad_token = i0 + found / K;
      bad_k = found % K;
      break;
    }
  }
  if (bad_token >= 0) {
    if (threadIdx.x == 0) {
      counts[0] = static_cast<int32_t>(bad_token);
      counts[1] = bad_k;
      counts[2] = 1;
      report[0] = static_cast<int32_t>(bad_token);
      report[1] = bad_k;
      report[2] = 1;
    }
    return;  // the lists are not needed: the dispatch fails
  }

  // The counts, and with `expected` (a reused layout's) whether they differ.
  int32_t* out = counts + kRouteCountsHeader;
  for (int i = threadIdx.x; i < E + P; i += blockDim.x) {
    out[i] = tally[i];
    if (expected != nullptr && expected[i] != tally[i]) differs = 1;
  }
  if (threadIdx.x == 0) {
    int32_t* node_offset = out + E + P;
    node_offset[0] = 0;
    for (int n = 0; n < N; ++n) {
      if (expected != nullptr && expected[E + P + n] != nodes[n]) differs = 1;
      node_offset[n + 1] = node_offset[n] + nodes[n];
      nodes[n] = node_offset[n];  // node n's cursor
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    counts[0] = -1;
    counts[1] = -1;
    counts[2] = differs;
    report[0] = -1;
    report[1] = -1;
    report[2] = differs;
  }

  // Pass 2: each node's tokens in token order.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int64_t i0 = 0; i0 < T; i0 += kCountThreads) {
    const int64_t t = i0 + threadIdx.x;
    for (int n = 0; n < N; ++n) {
      bool hit = false;
      if (t < T) {
        const int32_t* idx = topk_idx + t * K;
        for (int k = 0; k < K && !hit; ++k) hit = idx[k] != -1 && node_of(idx[k]) == n;
      }
      const unsigned ballot = __ballot_sync(0xffffffffu, hit);
      if (lane == 0) warp_hits[warp] = __popc(ballot);
      __syncthreads();
      int before = 0, total = 0;
      for (int w = 0; w < kCountThreads / 32; ++w) {
        if (w < warp) before += warp_hits[w];
        total += warp_hits[w];
      }
      const int32_t base = nodes[n];
      __syncthreads();  // warp_hits and the cursor are rewritten below and by the next node
      if (hit) node_tokens[base + before + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int32_t>(t);
      if (threadIdx.x == 0) nodes[n] = base + total;
      __syncthreads();
    }
  }
}

}  // namespace

void preload_route_count_kernels() { preload(reinterpret_cast<const void*>(&count_routes_kernel)); }

}  // namespace detail

std::size_t route_count_shared_bytes(const RouteShape& shape) {
  const int64_t P = static_cast<int64_t>(shape.ranks_per_node) * shape.num_nodes;
  return static_cast<std::size_t>(shape.num_experts + P + shape.num_nodes) * sizeof(int32_t);
}

void count_routes(const int32_t* topk_idx, const float* topk_weights, const RouteShape& shape, const int32_t* expected,
                  int32_t* counts, int32_t* node_tokens, volatile int32_t* report, void* stream) {
  using namespace detail;
  const auto s = static_cast<cudaStream_t>(stream);
  // One block: within any SM budget.
  count_routes_kernel<<<1, kCountThreads, route_count_shared_bytes(shape), s>>>(topk_idx, topk_weights, shape,
                                                                               expected, counts, node_tokens, report);
  check(cudaGetLastError(), "count_routes kernel launch");
}

}  // namespace epcomm::kernels::cuda
