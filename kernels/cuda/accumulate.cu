// SPDX-License-Identifier: MIT
// accumulate_rows and accumulate_row_list (combine): 16 lanes own one tile of one
// destination row and walk its sources in the order given, so every element's sum
// is formed in a fixed order, the CPU's, with no atomics. They differ only in how a
// source row is found: an index into one matrix, or a pointer of its own (a row in
// a node peer's memory, or in pinned host memory).
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// Source j of a destination: row sources[j] of one matrix, weighted by the weight
// of that row.
struct IndexedSources {
  const uint8_t* src;
  int64_t row_bytes;
  const int32_t* sources;
  const float* weights;
  const int32_t* offsets;
  void bind(const Layout& layout) { row_bytes = layout.row_bytes; }
  __device__ int64_t begin(int64_t d) const { return offsets[d]; }
  __device__ int64_t end(int64_t d) const { return offsets[d + 1]; }
  __device__ const uint8_t* row(int64_t j) const { return src + sources[j] * row_bytes; }
  __device__ float weight(int64_t j) const { return weights[sources[j]]; }
};

// Source j of a destination: its own row pointer and weight.
struct PointerSources {
  const void* const* rows;
  const float* weights;
  const int32_t* offsets;
  void bind(const Layout&) {}
  __device__ int64_t begin(int64_t d) const { return offsets[d]; }
  __device__ int64_t end(int64_t d) const { return offsets[d + 1]; }
  __device__ const uint8_t* row(int64_t j) const { return static_cast<const uint8_t*>(rows[j]); }
  __device__ float weight(int64_t j) const { return weights[j]; }
};

// Block b takes the G tiles from b * G on (G = blockDim.x / 16), then those from
// (b + gridDim.x) * G on, ..., a tile per 16 lanes (tiles row-major over
// [dst_rows, tiles per row]), so any grid and block cover every tile.
template <class F, class Sources>
__global__ void accumulate_kernel(Sources sources, int hidden, Layout layout, int64_t dst_rows, bool from_zero,
                                  float* acc) {
  const int64_t tiles = dst_rows * ((hidden + kTileElems - 1) / kTileElems);
  const int64_t per_block = blockDim.x / kLanesPerTile;
  for (int64_t base = blockIdx.x * per_block; base < tiles; base += gridDim.x * per_block) {
    const Lane l = lane_at(base, dst_rows, hidden);
    if (l.valid == 0) continue;
    const int64_t j0 = sources.begin(l.row), j1 = sources.end(l.row);
    float* out = acc + l.row * hidden + l.col0;
    Elems a;
    if (from_zero) {
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) a[k] = 0.0f;
    } else {
      if (j0 >= j1) continue;
      load8(out, l.valid, a);
    }
    for (int64_t j = j0; j < j1; ++j) {
      const float w = sources.weight(j);
      Elems v;
      F::decode(sources.row(j), l, layout, v);
      // The CPU's axpy: acc + w * x, multiply and add rounded separately.
#pragma unroll
      for (int k = 0; k < kElemsPerLane; ++k) a[k] = x86::add(a[k], x86::mul(w, v[k]));
    }
    store8(out, l.valid, a);
  }
}

template <class Sources>
void accumulate(const char* op, Format format, Sources sources, int hidden, int64_t dst_rows, bool from_zero,
                float* acc, cudaStream_t stream) {
  check_shape(op, format, dst_rows, hidden);
  if (dst_rows == 0) return;
  const Layout layout = layout_of(format, hidden);
  sources.bind(layout);
  visit_format(format, [&](auto f) {
    const auto kernel = &accumulate_kernel<decltype(f), Sources>;
    const Launch launch = launch_on(stream, kernel, kBlockThreads);
    const int tiles_per_block = static_cast<int>(launch.threads) / kLanesPerTile;
    kernel<<<launch.blocks(tile_blocks(op, dst_rows, hidden, tiles_per_block)), launch.threads, 0, stream>>>(
        sources, hidden, layout, dst_rows, from_zero, acc);
  });
  check(cudaGetLastError(), "accumulate kernel launch");
}

}  // namespace

void preload_accumulate_kernels() {
  visit_every_format([](auto f) {
    using F = decltype(f);
    preload(reinterpret_cast<const void*>(&accumulate_kernel<F, IndexedSources>));
    preload(reinterpret_cast<const void*>(&accumulate_kernel<F, PointerSources>));
  });
}

}  // namespace detail

void accumulate_rows(Format format, const void* src, int hidden, const int32_t* source_offsets,
                     const int32_t* sources, const float* weights, int64_t dst_rows, float* acc, void* stream) {
  const detail::IndexedSources s{static_cast<const uint8_t*>(src), 0, sources, weights, source_offsets};
  detail::accumulate("accumulate_rows", format, s, hidden, dst_rows, false, acc, static_cast<cudaStream_t>(stream));
}

void accumulate_row_list(Format format, const void* const* src_rows, const float* weights, int hidden,
                         const int32_t* source_offsets, int64_t dst_rows, bool from_zero, float* acc, void* stream) {
  detail::accumulate("accumulate_row_list", format, detail::PointerSources{src_rows, weights, source_offsets}, hidden,
                     dst_rows, from_zero, acc, static_cast<cudaStream_t>(stream));
}

}  // namespace epcomm::kernels::cuda
