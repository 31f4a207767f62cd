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
  const Lane l = lane_of(rows, hidden);
  if (l.valid == 0) return;  // decoding needs no shuffles, so idle lanes may leave
  Elems v;
  F::decode(src + l.row * layout.row_bytes, l, layout, v);
  const int64_t d = dst_rows != nullptr ? dst_rows[l.row] : l.row;
  store8(dst + d * hidden + l.col0, l.valid, v);
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
  const unsigned blocks = tile_blocks(op, rows, hidden, kTilesPerBlock);
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
