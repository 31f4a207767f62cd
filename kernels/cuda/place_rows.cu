// SPDX-License-Identifier: MIT
// place_rows and write_placed_rows: a dispatch source's rows on the owners of a
// node, positioned as the host plan (place_source_rows) positions them.
//
// A row's position is its expert's base for the source plus the number of the
// source's earlier tokens that chose the expert: an exclusive scan over the
// source's tokens per expert column. place_rows gives every column of the node (each
// local expert of each owner, then each owner's token entries) to one block (block
// b: columns b, b + gridDim.x, ...), which walks the tokens in order, blockDim at a
// time, carrying the running count from one chunk to the next: one scan per
// column, any token count, no atomics.
#include <climits>

#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "launch.hpp"
#include "row_copy.cuh"
#include "warp_crc32c.cuh"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// A whole block per column: 4096 tokens take 4 chunks, each a ballot and two
// barriers.
constexpr int kScanThreads = 1024;
constexpr int kWriteThreads = 256;  // a warp per token, any number of warps a block

struct TokenView {
  int32_t token;
  const int32_t* idx;
  const float* weights;
};

__device__ inline TokenView token_at(const PlacedSource& s, int topk, int64_t i) {
  if (s.records != nullptr) {
    const auto* record = reinterpret_cast<const int32_t*>(s.records + i * s.record_bytes);
    return {record[0], record + 1, reinterpret_cast<const float*>(record + 1 + topk)};
  }
  const int32_t t = s.tokens[i];
  return {t, s.topk_idx + static_cast<int64_t>(t) * topk, s.topk_weights + static_cast<int64_t>(t) * topk};
}

// One column's scan, by the whole block (its barriers are the block's).
__device__ inline void place_column(const PlacedSource& s, const NodeLayouts& n, int col, int32_t* row_pos,
                                    int32_t* entry, volatile int32_t* error) {
  __shared__ int32_t warp_hits[kScanThreads / 32];
  const int R = n.ranks_per_node, J = n.experts_per_rank, K = n.topk;
  const bool expert_col = col < R * J;
  const int ld = expert_col ? col / J : col - R * J;
  // Experts [lo, hi) make a token count in this column.
  const int lo = expert_col ? n.first_expert + col : n.first_expert + ld * J;
  const int hi = expert_col ? lo + 1 : lo + J;
  const int64_t end = expert_col ? n.row_end[col] : n.token_end[ld];
  int64_t next = expert_col ? n.row_base[col] : n.token_begin[ld];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  // The loop bound is the same for every thread, so every lane takes part in
  // every ballot and barrier.
  for (int64_t i0 = 0; i0 < s.count; i0 += kScanThreads) {
    const int64_t i = i0 + threadIdx.x;
    int hit_k = -1;
    if (i < s.count) {
      const TokenView tv = token_at(s, K, i);
      for (int k = 0; k < K; ++k) {
        if (tv.idx[k] < lo || tv.idx[k] >= hi) continue;
        if (hit_k < 0) {
          hit_k = k;
        } else if (expert_col) {
          row_pos[i * K + k] = -1;  // an expert chosen twice (no checked source sends one) stays unplaced
        }
      }
      if (hit_k < 0 && !expert_col) entry[i * R + ld] = -1;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, hit_k >= 0);
    if (lane == 0) warp_hits[warp] = __popc(ballot);
    __syncthreads();
    int64_t before = 0, total = 0;
    for (int w = 0; w < kScanThreads / 32; ++w) {
      if (w < warp) before += warp_hits[w];
      total += warp_hits[w];
    }
    __syncthreads();  // warp_hits is rewritten by the next chunk
    if (hit_k >= 0) {
      const int64_t at = next + before + __popc(ballot & ((1u << lane) - 1u));
      if (at < end) {
        if (expert_col) {
          row_pos[i * K + hit_k] = static_cast<int32_t>(at);
        } else {
          entry[i * R + ld] = static_cast<int32_t>(at);
        }
      } else {
        if (expert_col) {
          row_pos[i * K + hit_k] = -1;
        } else {
          entry[i * R + ld] = -1;
        }
        // Any offending column will do: the host names one, as its own check would.
        error[1] = s.rank;
        error[0] = 1 + col;
      }
    }
    next += total;
  }
}

__global__ void __launch_bounds__(kScanThreads)
    place_rows_kernel(PlacedSource s, NodeLayouts n, int32_t* row_pos, int32_t* entry, volatile int32_t* error) {
  if (s.rejected != nullptr && *s.rejected != 0) return;  // the same for the whole grid
  const int R = n.ranks_per_node, J = n.experts_per_rank;
  for (int col = blockIdx.x; col < R * J + R; col += gridDim.x) place_column(s, n, col, row_pos, entry, error);
}

// kSign: checksums on (checksums.record set). A kernel of its own, so that the
// hash's registers (warp_crc32c.cuh) do not cut the occupancy of the plain copy.
template <bool kSign>
__global__ void write_placed_rows_kernel(PlacedSource s, NodeLayouts n, const SlotArrays* owners, int L,
                                         int64_t row_bytes, bool aligned16, const int32_t* row_pos,
                                         const int32_t* entry, int64_t first_handled, int32_t* route_count,
                                         int32_t* route_local, int32_t* route_entry, ChecksumReport checksums) {
  if (s.rejected != nullptr && *s.rejected != 0) return;  // the same for the whole grid
  const int R = n.ranks_per_node, J = n.experts_per_rank, K = n.topk;
  const int lane = threadIdx.x % 32;
  __shared__ Crc32cTables crc_tables;
  constexpr bool sign = kSign;
  if constexpr (sign) {
    load_crc32c_tables(crc_tables, row_bytes);
    __syncthreads();
  }
  const int64_t warps = blockDim.x / 32;
  for (int64_t i = blockIdx.x * warps + threadIdx.x / 32; i < s.count; i += gridDim.x * warps) {
    const TokenView tv = token_at(s, K, i);
    const uint8_t* payload = s.payload + (s.records != nullptr ? i : static_cast<int64_t>(tv.token)) * row_bytes;
    const int64_t h = first_handled + i;
    int routes = 0;
    for (int ld = 0; ld < R; ++ld) {
      const int32_t q = entry[i * R + ld];
      if (q < 0) continue;
      const int lo = n.first_expert + ld * J;
      // The token's rows on this owner: how many, the first (lowest expert), and
      // whether all were placed. Every lane computes the same.
      int rows = 0, first_e = INT_MAX;
      int32_t first = -1;
      bool placed = true;
      for (int k = 0; k < K; ++k) {
        const int e = tv.idx[k];
        if (e < lo || e >= lo + J) continue;
        ++rows;
        const int32_t p = row_pos[i * K + k];
        if (p < 0) placed = false;
        if (e < first_e) {
          first_e = e;
          first = p;
        }
      }
      if (!placed) continue;  // place_rows flagged the overflow
      const SlotArrays o = owners[ld];
      int32_t* token_rows = o.token_rows + static_cast<int64_t>(q) * L;
      // The writer's own slot gets the payload in every row (local memory, no
      // fan-out afterwards); a peer's once, at its first row.
      const bool own = ld == n.writer;
      // Lane k writes pick k's row; its place in token_rows is its rank by expert.
      for (int k = lane; k < K; k += 32) {
        const int e = tv.idx[k];
        if (e < lo || e >= lo + J) continue;
        int c = 0;
        for (int k2 = 0; k2 < K; ++k2) c += tv.idx[k2] >= lo && tv.idx[k2] < e;
        const int32_t p = row_pos[i * K + k];
        o.src_rank[p] = s.rank;
        o.src_token[p] = tv.token;
        o.weight[p] = tv.weights[k];
        o.first_row[p] = own ? p : first;
        token_rows[c] = p;
      }
      for (int c = rows + lane; c < L; c += 32) token_rows[c] = -1;
      uint8_t* first_payload = o.rows + static_cast<int64_t>(first) * row_bytes;
      if (sign && !own) {
        // Signed from the bytes this warp copies, as the host's signed copy does:
        // aligned rows are copied by the hash, from its registers; others just
        // before it (then hashed from L1). The owner checks what landed.
        if (!aligned16) warp_copy_row(first_payload, payload, row_bytes, aligned16, lane);
        const uint32_t crc = warp_crc32c_blocks(crc_tables, payload, row_bytes, lane, [&](int64_t at, const uint4& v) {
          if (aligned16) *reinterpret_cast<uint4*>(first_payload + at) = v;
        });
        if (lane == 0) {
          o.row_sum[first] = crc;
          note_signed_row(checksums, first_payload);
        }
      } else {
        warp_copy_row(first_payload, payload, row_bytes, aligned16, lane);
      }
      if (own) {
        // The other rows copy the first (just written, in L2): a payload in pinned
        // host memory (a received block) crosses PCIe once.
        __syncwarp();
        for (int k = 0; k < K; ++k) {
          const int e = tv.idx[k];
          if (e < lo || e >= lo + J || e == first_e) continue;
          warp_copy_row(o.rows + static_cast<int64_t>(row_pos[i * K + k]) * row_bytes, first_payload, row_bytes,
                        aligned16, lane);
        }
      }
      if (lane == 0) {
        route_local[h * R + routes] = ld;
        route_entry[h * R + routes] = q;
      }
      ++routes;
    }
    if (lane == 0) route_count[h] = routes;
  }
}

// Blocks of `threads` threads for a warp per item.
int64_t warp_blocks(int64_t items, unsigned threads) {
  const int64_t warps = threads / 32;
  const int64_t blocks = (items + warps - 1) / warps;
  return blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20;
}

}  // namespace

void preload_place_kernels() {
  preload(reinterpret_cast<const void*>(&place_rows_kernel));
  preload(reinterpret_cast<const void*>(&write_placed_rows_kernel<false>));
  preload(reinterpret_cast<const void*>(&write_placed_rows_kernel<true>));
}

}  // namespace detail

void place_rows(const PlacedSource& source, const NodeLayouts& layouts, int32_t* row_pos, int32_t* entry,
                volatile int32_t* error, void* stream) {
  using namespace detail;
  if (source.count <= 0) return;
  // Every entry the writes read is written here (no memset before: two fewer
  // operations on the dispatch's critical path).
  const int R = layouts.ranks_per_node;
  const unsigned columns = static_cast<unsigned>(R * layouts.experts_per_rank + R);
  const auto s = static_cast<cudaStream_t>(stream);
  place_rows_kernel<<<grid_blocks(columns, s), kScanThreads, 0, s>>>(source, layouts, row_pos, entry, error);
  check(cudaGetLastError(), "place_rows kernel launch");
}

void write_placed_rows(const PlacedSource& source, const NodeLayouts& layouts, const SlotArrays* owners,
                       int max_rows_per_token, int64_t row_bytes, const int32_t* row_pos, const int32_t* entry,
                       int64_t first_handled, int32_t* route_count, int32_t* route_local, int32_t* route_entry,
                       ChecksumReport checksums, void* stream) {
  using namespace detail;
  if (source.count <= 0) return;
  // Owners' rows start 256-byte aligned (the slots are carved so).
  const bool aligned16 = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(source.payload) % 16 == 0;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto kernel = checksums.record != nullptr ? write_placed_rows_kernel<true> : write_placed_rows_kernel<false>;
  const Launch launch = launch_on(s, kernel, kWriteThreads);
  kernel<<<launch.blocks(warp_blocks(source.count, launch.threads)), launch.threads, 0, s>>>(
      source, layouts, owners, max_rows_per_token, row_bytes, aligned16, row_pos, entry, first_handled, route_count,
      route_local, route_entry, checksums);
  check(cudaGetLastError(), "write_placed_rows kernel launch");
}

}  // namespace epcomm::kernels::cuda
