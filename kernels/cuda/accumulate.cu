// SPDX-License-Identifier: MIT
// accumulate_rows (combine): 16 lanes own one tile of one destination row and walk
// its sources in the order given, so every element's sum is formed in a fixed
// order, the CPU's, with no atomics.
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

template <class F>
__global__ void __launch_bounds__(kBlockThreads)
    accumulate_kernel(const uint8_t* src, int hidden, Layout layout, const int32_t* offsets, const int32_t* sources,
                      const float* weights, int64_t dst_rows, float* acc) {
  const Lane l = lane_of(dst_rows, hidden);
  if (l.valid == 0) return;
  const int32_t j0 = offsets[l.row], j1 = offsets[l.row + 1];
  if (j0 >= j1) return;
  float* out = acc + l.row * hidden + l.col0;
  Elems a;
  load8(out, l.valid, a);
  for (int32_t j = j0; j < j1; ++j) {
    const int32_t s = sources[j];
    const float w = weights[s];
    Elems v;
    F::decode(src + s * layout.row_bytes, l, layout, v);
    // The CPU's axpy: acc + w * x, multiply and add rounded separately.
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) a[k] = x86::add(a[k], x86::mul(w, v[k]));
  }
  store8(out, l.valid, a);
}

}  // namespace
}  // namespace detail

void accumulate_rows(Format format, const void* src, int hidden, const int32_t* source_offsets,
                     const int32_t* sources, const float* weights, int64_t dst_rows, float* acc, void* stream) {
  using namespace detail;
  constexpr const char* kOp = "accumulate_rows";
  check_shape(kOp, format, dst_rows, hidden);
  if (dst_rows == 0) return;
  const Layout layout = layout_of(format, hidden);
  const unsigned blocks = tile_blocks(kOp, dst_rows, hidden, kTilesPerBlock);
  const auto s = static_cast<cudaStream_t>(stream);
  visit_format(format, [&](auto f) {
    accumulate_kernel<decltype(f)><<<blocks, kBlockThreads, 0, s>>>(static_cast<const uint8_t*>(src), hidden, layout,
                                                                    source_offsets, sources, weights, dst_rows, acc);
  });
  check(cudaGetLastError(), "accumulate kernel launch");
}

}  // namespace epcomm::kernels::cuda
