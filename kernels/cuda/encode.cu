// SPDX-License-Identifier: MIT
// encode_rows, pack_rows and encode_token_rows: one kernel per (format, source
// dtype), 16 lanes a tile; pack_rows reads its rows through an index list, and
// encode_token_rows writes them through the same list too.
#include "cuda_check.hpp"
#include "epcomm_kernels/codec.hpp"
#include "epcomm_kernels/cuda_codec.hpp"
#include "format_dispatch.cuh"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

template <class F, class Src>
__global__ void __launch_bounds__(kBlockThreads)
    encode_kernel(const Src* src, const int32_t* src_rows, bool scatter, int64_t rows, int hidden, Layout layout,
                  uint8_t* dst, unsigned long long* bad) {
  Lane l[kUnroll];
  Elems v[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    l[u] = lane_of_unrolled(u, rows, hidden);
    const int64_t s = !l[u].in_range ? 0 : src_rows != nullptr ? src_rows[l[u].row] : l[u].row;
    load8(src + s * hidden + l[u].col0, l[u].valid, v[u]);
  }
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t d = scatter && l[u].in_range ? src_rows[l[u].row] : l[u].row;
    F::encode(v[u], l[u], layout, dst + d * layout.row_bytes, l[u].row, hidden, bad);
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
  const unsigned blocks = tile_blocks(op, rows, hidden, kTilesPerBlock * kUnroll);
  auto* bad = reinterpret_cast<unsigned long long*>(bad_index);
  auto* out = static_cast<uint8_t*>(dst);
  visit_format(format, [&](auto f) {
    using F = decltype(f);
    if (src_type == DType::kF32) {
      encode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(static_cast<const float*>(src), src_rows, scatter, rows,
                                                             hidden, layout, out, bad);
    } else {
      encode_kernel<F><<<blocks, kBlockThreads, 0, stream>>>(static_cast<const uint16_t*>(src), src_rows, scatter,
                                                             rows, hidden, layout, out, bad);
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
