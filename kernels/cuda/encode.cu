// SPDX-License-Identifier: MIT
// encode_rows, pack_rows and encode_token_rows: one kernel per (format, source
// dtype), 16 lanes a tile, blocks walking rows (lane_io.cuh); pack_rows reads its
// rows through an index list, and encode_token_rows writes them through the same
// list too.
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

#include <cstdlib>
#include <type_traits>

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// A/B (temporary, for one measurement run): EPCOMM_LOGFMT_ENCODE_VARIANT picks, for
// LogFMT-8/10 and FP8, 0 = one tile at a time, 1 = tile groups, 2, 3, 4 = tile
// groups with at least 3, 4, 5 blocks an SM (FP8 has no tile groups).
template <class F, class Src, int kVariant = 1>
__global__ void __launch_bounds__(kBlockThreads, kVariant >= 2 ? kVariant + 1 : 1)
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
      // Tiles past the row's last have no valid elements: they load nothing.
      Lane l[kAhead];
      Raw<Src> raw[kAhead];
#pragma unroll
      for (int u = 0; u < kAhead; ++u) {
        l[u] = lane_in(i, t0 + u * w.tile_stride, hidden);
        load_raw(in + l[u].col0, l[u].valid, raw[u]);
      }
      if constexpr (kEncodesTileGroups<F> && kVariant != 0) {
        F::template encode_tiles<kAhead>(l, [&](int u, Elems& v) { widen(raw[u], v); }, layout, out, i, hidden, bad);
      } else {
#pragma unroll
        for (int u = 0; u < kAhead; ++u) {
          if (l[u].tile >= tiles) break;
          Elems v;
          widen(raw[u], v);
          F::encode(v, l[u], layout, out, i, hidden, bad);
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
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  auto* out = static_cast<uint8_t*>(dst);
  static const int variant = [] {
    const char* e = std::getenv("EPCOMM_LOGFMT_ENCODE_VARIANT");
    return e != nullptr ? std::atoi(e) : 1;
  }();
  visit_format(format, [&](auto f) {
    using F = decltype(f);
    auto run = [&](auto kernel_f32, auto kernel_bf16) {
      if (src_type == DType::kF32) {
        kernel_f32<<<walk.blocks, kBlockThreads, 0, stream>>>(static_cast<const float*>(src), src_rows, scatter, rows,
                                                             hidden, walk.rows_per_block, layout, out, bad);
      } else {
        kernel_bf16<<<walk.blocks, kBlockThreads, 0, stream>>>(static_cast<const uint16_t*>(src), src_rows, scatter,
                                                              rows, hidden, walk.rows_per_block, layout, out, bad);
      }
    };
    if constexpr (std::is_same_v<F, LogFmt<8>> || std::is_same_v<F, LogFmt<10>> || std::is_same_v<F, Fp8<false>> ||
                  std::is_same_v<F, Fp8<true>>) {
      switch (variant) {
        case 0: run(encode_kernel<F, float, 0>, encode_kernel<F, uint16_t, 0>); break;
        case 2: run(encode_kernel<F, float, 2>, encode_kernel<F, uint16_t, 2>); break;
        case 3: run(encode_kernel<F, float, 3>, encode_kernel<F, uint16_t, 3>); break;
        case 4: run(encode_kernel<F, float, 4>, encode_kernel<F, uint16_t, 4>); break;
        default: run(encode_kernel<F, float, 1>, encode_kernel<F, uint16_t, 1>); break;
      }
    } else {
      run(encode_kernel<F, float>, encode_kernel<F, uint16_t>);
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
    if constexpr (std::is_same_v<F, LogFmt<8>> || std::is_same_v<F, LogFmt<10>> || std::is_same_v<F, Fp8<false>> ||
                  std::is_same_v<F, Fp8<true>>) {
      preload(reinterpret_cast<const void*>(&encode_kernel<F, float, 0>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t, 0>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, float, 2>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t, 2>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, float, 3>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t, 3>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, float, 4>));
      preload(reinterpret_cast<const void*>(&encode_kernel<F, uint16_t, 4>));
    }
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
