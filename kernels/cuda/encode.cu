// SPDX-License-Identifier: MIT
// encode_rows, pack_rows and encode_token_rows: one kernel per (format, source
// dtype), 16 lanes a tile, blocks walking rows (lane_io.cuh); pack_rows reads its
// rows through an index list, and encode_token_rows writes them through the same
// list too. LogFMT groups encode their kAhead tiles together (encode_tiles).
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

#include <type_traits>

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// LogFMT's grouped encoder of BF16 rows needs about 96 registers a thread; capped
// at 80 (3 blocks an SM instead of 2) it spills a few bytes and runs 10 % faster
// (measured on an H200: docs/results/codec_gpu.md); at 64 it spills much more and
// is slower. FP32 rows take about 128 and would spill some 600 bytes at 80 (not
// measured), so they, like the other formats, state no minimum (0), which leaves
// ptxas its own choice: an explicit 1 made it take 72 registers for FP8-UE8M0
// instead of 64, and a block an SM fewer cost 8 points of pack bandwidth.
template <class F, class Src>
inline constexpr int kEncodeMinBlocks = kEncodesTileGroups<F> && std::is_same_v<Src, uint16_t> ? 3 : 0;

template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads, kEncodeMinBlocks<F, Src>)
    encode_kernel(const Src* src, const int32_t* src_rows, bool scatter, int64_t rows, int hidden, int rows_per_block,
                  Layout layout, uint8_t* dst, unsigned long long* bad) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const GroupWalk w = group_walk(tiles, rows_per_block);
  if (!w.active) return;
  // Everything below is uniform over the 16 lanes of a tile, as F::encode's
  // shuffles need.
  for (int64_t i = w.first_row; i < rows; i += w.row_stride) {
    const int64_t s = src_rows != nullptr ? src_rows[i] : i;
    const Src* in = src + s * hidden;
    uint8_t* out = dst + (scatter ? s : i) * layout.row_bytes;
    for (int t0 = w.first_tile; t0 < tiles; t0 += kAhead * w.tile_stride) {
      Raw<Src> raw[kAhead];
      if constexpr (kEncodesTileGroups<F>) {
        // Tiles past the row's last have no valid elements: they load nothing.
        Lane l[kAhead];
#pragma unroll
        for (int u = 0; u < kAhead; ++u) {
          l[u] = lane_in(i, t0 + u * w.tile_stride, hidden);
          load_raw(in + l[u].col0, l[u].valid, raw[u]);
        }
        F::template encode_tiles<kAhead>(l, [&](int u, Elems& v) { widen(raw[u], v); }, layout, out, i, hidden, bad);
      } else {
#pragma unroll
        for (int u = 0; u < kAhead; ++u) {
          const int t = t0 + u * w.tile_stride;
          if (t >= tiles) break;
          const Lane l = lane_in(i, t, hidden);
          load_raw(in + l.col0, l.valid, raw[u]);
        }
#pragma unroll
        for (int u = 0; u < kAhead; ++u) {
          const int t = t0 + u * w.tile_stride;
          if (t >= tiles) break;
          Elems v;
          widen(raw[u], v);
          F::encode(v, lane_in(i, t, hidden), layout, out, i, hidden, bad);
        }
      }
    }
  }
}

// scatter: dst row src_rows[i] (instead of i) receives source row src_rows[i].
void encode(const char* op, Format format, const void* src, DType src_type, const int32_t* src_rows, bool scatter,
            int64_t rows, int hidden, void* dst, int64_t* bad_index, cudaStream_t stream) {
  check_shape(op, format, rows, hidden);
  check_dtype(op, src_type);
  if (logfmt_bits(format) != 0 && bad_index == nullptr) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + ": " + to_string(format) +
                                                 " cannot encode NaN or infinity and needs a bad_index to report them");
  }
  // All ones is -1 as int64 and the largest value for the kernels' unsigned atomicMin.
  if (bad_index != nullptr) check(cudaMemsetAsync(bad_index, 0xff, sizeof *bad_index, stream), "cudaMemsetAsync");
  if (rows == 0) return;
  const Layout layout = layout_of(format, hidden);
  if (plain_format(src_type) == format) {
    copy_rows(src, src_rows, dst, scatter ? src_rows : nullptr, rows, layout.row_bytes, stream);
    return;
  }
  const RowWalk walk = row_walk(rows, hidden);
  const unsigned blocks = grid_blocks(walk.blocks, stream);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  auto* out = static_cast<uint8_t*>(dst);
  visit_format(format, [&](auto f) {
    using F = decltype(f);
    if (src_type == DType::kF32) {
      encode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(static_cast<const float*>(src), src_rows, scatter,
                                                                  rows, hidden, walk.rows_per_block, layout, out, bad);
    } else {
      encode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(static_cast<const uint16_t*>(src), src_rows, scatter,
                                                                  rows, hidden, walk.rows_per_block, layout, out, bad);
    }
  });
  check(cudaGetLastError(), "encode kernel launch");
}

}  // namespace

void preload_encode_kernels() {
  visit_every_format([](auto f) {
    using F = decltype(f);
    preload(reinterpret_cast<const void*>(&encode_kernel<F, float>));
    preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t>));
  });
}

}  // namespace detail

void encode_rows(Format format, const void* src, DType src_type, int64_t rows, int hidden, void* dst,
                 int64_t* bad_index, void* stream) {
  detail::encode("encode_rows", format, src, src_type, nullptr, false, rows, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

void pack_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* src_rows, int64_t count,
               void* dst, int64_t* bad_index, void* stream) {
  detail::encode("pack_rows", format, src, src_type, src_rows, false, count, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

void encode_token_rows(Format format, const void* src, DType src_type, int hidden, const int32_t* tokens,
                       int64_t count, void* dst, int64_t* bad_index, void* stream) {
  detail::encode("encode_token_rows", format, src, src_type, tokens, true, count, hidden, dst, bad_index,
                 static_cast<cudaStream_t>(stream));
}

}  // namespace epcomm::kernels::cuda
