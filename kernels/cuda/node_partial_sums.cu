// SPDX-License-Identifier: MIT
// sum_node_partials: combine's final sum at the source in one pass. 16 lanes own
// one tile of one token's output row (blocks walking rows, lane_io.cuh), find the
// token's partial on each node by a binary search in that node's ascending token
// list, add the partials in node order in registers, and store the row once in the
// output dtype: no zeroed accumulator in memory, no separate encode pass.
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"
#include "token_index.cuh"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// a[u] += the lane's elements of tile l[u] of `row`, in format P (kAhead tiles'
// loads in flight together). Decoding needs no shuffles: lanes past the row's end
// skip their part.
template <class P>
__device__ inline void add_tiles(const uint8_t* row, const Lane (&l)[kAhead], int tiles, const Layout& layout,
                                 Elems (&a)[kAhead]) {
  typename P::Fetched f[kAhead];
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    if (l[u].tile < tiles && l[u].valid > 0) f[u] = P::fetch(row, l[u], layout);
  }
#pragma unroll
  for (int u = 0; u < kAhead; ++u) {
    if (l[u].tile >= tiles || l[u].valid == 0) continue;
    Elems v;
    P::unpack(f[u], l[u], v);
    // The host adds each node's partial with weight 1 (acc + 1 * x): 1 * x is x,
    // and a NaN comes out of the add quietened either way.
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) a[u][k] = x86::add(a[u][k], v[k]);
  }
}

// F: the combine format of remote nodes' partials; Out: the output's plain format.
template <class F, class Out>
__global__ void sum_node_partials_kernel(const NodePartials* nodes, int num_nodes, const int32_t* node_offset,
                             const int32_t* node_tokens, int64_t rows, int hidden, int rows_per_block, Layout layout,
                             Layout f32_layout, Layout out_layout, uint8_t* out) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  if (!w.active) return;
  for (int64_t t = w.first_row; t < rows; t += w.row_stride) {
    uint8_t* out_row = out + t * out_layout.row_bytes;
    for (int t0 = w.first_tile; t0 < tiles; t0 += kAhead * w.tile_stride) {
      Lane l[kAhead];
      // From zero, as the host's accumulator: 0 + x is x except for x = -0.
      Elems a[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        l[u] = lane_in(t, t0 + u * w.tile_stride, hidden);
#pragma unroll
        for (int k = 0; k < kElemsPerLane; ++k) a[u][k] = 0.0f;
      }
      for (int n = 0; n < num_nodes; ++n) {
        const int32_t first = node_offset[n];
        const int64_t i = token_index(node_tokens + first, node_offset[n + 1] - first, rows, t);
        if (i < 0) continue;
        const NodePartials p = nodes[n];
        const uint8_t* row = p.rows + i * p.row_bytes;
        if (p.f32 != 0) {
          add_tiles<Plain<DType::kF32>>(row, l, tiles, f32_layout, a);
        } else {
          add_tiles<F>(row, l, tiles, layout, a);
        }
      }
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        if (l[u].tile < tiles) Out::encode(a[u], l[u], out_layout, out_row, t, hidden, nullptr);
      }
    }
  }
}

template <class F>
void launch(F, DType out_type, const NodePartials* nodes, int num_nodes, const int32_t* node_offset,
            const int32_t* node_tokens, int64_t rows, int hidden, void* out, cudaStream_t stream) {
  const Layout layout = layout_of(F::kFormat, hidden), f32_layout = layout_of(Format::kF32, hidden);
  const Layout out_layout = layout_of(plain_format(out_type), hidden);
  auto* o = static_cast<uint8_t*>(out);
  const auto run = [&](auto kernel) {
    const Launch launch = launch_on(stream, kernel, kBlockThreads);
    const RowWalk walk = row_walk(rows, hidden, launch.threads);
    kernel<<<launch.blocks(walk.blocks), launch.threads, 0, stream>>>(
        nodes, num_nodes, node_offset, node_tokens, rows, hidden, walk.rows_per_block, layout, f32_layout, out_layout, o);
  };
  if (out_type == DType::kF32) {
    run(&sum_node_partials_kernel<F, Plain<DType::kF32>>);
  } else {
    run(&sum_node_partials_kernel<F, Plain<DType::kBF16>>);
  }
}

}  // namespace

void preload_node_partial_sum_kernels() {
  visit_every_format([](auto f) {
    using F = decltype(f);
    preload(reinterpret_cast<const void*>(&sum_node_partials_kernel<F, Plain<DType::kF32>>));
    preload(reinterpret_cast<const void*>(&sum_node_partials_kernel<F, Plain<DType::kBF16>>));
  });
}

}  // namespace detail

void sum_node_partials(Format format, const NodePartials* nodes, int num_nodes, const int32_t* node_offset,
                       const int32_t* node_tokens, int64_t num_tokens, int hidden, DType out_type, void* out,
                       void* stream) {
  using namespace detail;
  check_shape("sum_node_partials", format, num_tokens, hidden);
  check_dtype("sum_node_partials", out_type);
  if (num_tokens == 0) return;
  visit_format(format, [&](auto f) {
    launch(f, out_type, nodes, num_nodes, node_offset, node_tokens, num_tokens, hidden, out,
           static_cast<cudaStream_t>(stream));
  });
  check(cudaGetLastError(), "sum_node_partials kernel launch");
}

}  // namespace epcomm::kernels::cuda
