// SPDX-License-Identifier: MIT
// decode_rows and unpack_rows: one kernel per (format, destination dtype), 16 lanes
// a tile, blocks walking rows (lane_io.cuh); unpack_rows is decode_rows writing its
// rows through an index list.
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// At most 64 registers, for 4 blocks of 256 threads (1024 threads) an SM:
// LogFMT-10's 4 tiles of codes in flight would otherwise take 72 registers and
// leave room for 3 (the cap spills one word in some LogFMT widths). A cap of
// registers rather than launch bounds, so that under an SM budget one block may
// have the 1024 threads.
template <class F, class Dst>
__global__ void __maxnreg__(64)
    decode_kernel(const uint8_t* src, int64_t rows, int hidden, int rows_per_block, Layout layout,
                  const int32_t* dst_rows, Dst* dst) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  if (!w.active) return;
  for (int64_t i = w.first_row; i < rows; i += w.row_stride) {
    const uint8_t* in = src + i * layout.row_bytes;
    Dst* out = dst + (dst_rows != nullptr ? dst_rows[i] : i) * hidden;
    for (int t0 = w.first_tile; t0 < tiles; t0 += kAhead * w.tile_stride) {
      // All kAhead tiles' loads first, so they are in flight together. Decoding
      // needs no shuffles, so lanes past the row's end skip their part.
      Lane l[kAhead];
      typename F::Fetched f[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        l[u] = lane_in(i, t0 + u * w.tile_stride, hidden);
        if (l[u].tile < tiles && l[u].valid > 0) f[u] = F::fetch(in, l[u], layout);
      }
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        if (l[u].tile >= tiles || l[u].valid == 0) continue;
        Elems v;
        F::unpack(f[u], l[u], v);
        store8(out + l[u].col0, l[u].valid, v);
      }
    }
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
  const auto* in = static_cast<const uint8_t*>(src);
  const auto run = [&](auto kernel, auto* out) {
    const Launch launch = launch_on(stream, kernel, kBlockThreads);
    const RowWalk walk = row_walk(rows, hidden, launch.threads);
    kernel<<<launch.blocks(walk.blocks), launch.threads, 0, stream>>>(in, rows, hidden, walk.rows_per_block, layout,
                                                                       dst_rows, out);
  };
  visit_format(format, [&](auto f) {
    using F = decltype(f);
    if (dst_type == DType::kF32) {
      run(&decode_kernel<F, float>, static_cast<float*>(dst));
    } else {
      run(&decode_kernel<F, uint16_t>, static_cast<uint16_t*>(dst));
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
