// SPDX-License-Identifier: MIT
// decode_rows and unpack_rows: one kernel per (format, destination dtype), 16 lanes
// a tile; unpack_rows is decode_rows writing its rows through an index list.
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

template <class F, class Dst>
__global__ void __launch_bounds__(kBlockThreads)
    decode_kernel(const uint8_t* src, int64_t rows, int hidden, Layout layout, const int32_t* dst_rows, Dst* dst) {
  // Decoding needs no shuffles, so idle lanes may skip their tile. All tiles are
  // read and decoded before any store, so the loads of both are in flight together.
  Lane l[kUnroll];
  Elems v[kUnroll];
  int64_t d[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    l[u] = lane_of_unrolled(u, rows, hidden);
    d[u] = 0;
    if (l[u].valid == 0) continue;
    d[u] = dst_rows != nullptr ? dst_rows[l[u].row] : l[u].row;
    F::decode(src + l[u].row * layout.row_bytes, l[u], layout, v[u]);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    if (l[u].valid != 0) store8(dst + d[u] * hidden + l[u].col0, l[u].valid, v[u]);
  }
}

void decode(const char* op, Format format, const void* src, int64_t rows, int hidden, const int32_t* dst_rows,
            void* dst, DType dst_type, cudaStream_t stream) {
  check_shape(op, format, rows, hidden);
  check_dtype(op, dst_type);
  if (rows == 0) return;
  const Layout layout = layout_of(format, hidden);
  if (plain_format(dst_type) == format) {
    copy_rows(src, nullptr, dst, dst_rows, rows, layout.row_bytes, stream);
    return;
  }
  const unsigned blocks = tile_blocks(op, rows, hidden, kTilesPerBlock * kUnroll);
  const auto* in = static_cast<const uint8_t*>(src);
  visit_format(format, [&](auto f) {
    using F = decltype(f);
    if (dst_type == DType::kF32) {
      decode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(in, rows, hidden, layout, dst_rows,
                                                             static_cast<float*>(dst));
    } else {
      decode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(in, rows, hidden, layout, dst_rows,
                                                             static_cast<uint16_t*>(dst));
    }
  });
  check(cudaGetLastError(), "decode kernel launch");
}

}  // namespace

void preload_decode_kernels() {
  visit_every_format([](auto f) {
    using F = decltype(f);
    preload(reinterpret_cast<const void*>(&decode_kernel<F, float>));
    preload(reinterpret_cast<const void*>(&decode_kernel<F, uint16_t>));
  });
}

}  // namespace detail

void decode_rows(Format format, const void* src, int64_t rows, int hidden, void* dst, DType dst_type,
                 void* stream) {
  detail::decode("decode_rows", format, src, rows, hidden, nullptr, dst, dst_type, static_cast<cudaStream_t>(stream));
}

void unpack_rows(Format format, const void* src, int64_t count, int hidden, const int32_t* dst_rows, void* dst,
                 DType dst_type, void* stream) {
  detail::decode("unpack_rows", format, src, count, hidden, dst_rows, dst, dst_type,
                 static_cast<cudaStream_t>(stream));
}

}  // namespace epcomm::kernels::cuda
