// SPDX-License-Identifier: MIT
// Gather/scatter of whole rows as bytes, 16 bytes a thread where alignment allows.
#include "cuda_check.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda::detail {
namespace {

// A block per row, any number of threads a block.
template <class Word>
__global__ void copy_rows_kernel(const Word* src, const int32_t* src_rows, Word* dst, const int32_t* dst_rows,
                                 int64_t rows, int64_t row_words) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const Word* s = src + (src_rows ? src_rows[r] : r) * row_words;
    Word* d = dst + (dst_rows ? dst_rows[r] : r) * row_words;
    for (int64_t i = threadIdx.x; i < row_words; i += blockDim.x) d[i] = s[i];
  }
}

}  // namespace

void preload_copy_kernels() {
  preload(reinterpret_cast<const void*>(&copy_rows_kernel<uint4>));
  preload(reinterpret_cast<const void*>(&copy_rows_kernel<uint8_t>));
}

void copy_rows(const void* src, const int32_t* src_rows, void* dst, const int32_t* dst_rows, int64_t rows,
               int64_t row_bytes, cudaStream_t stream) {
  if (rows == 0) return;
  // A block per row; past 2^20 rows blocks loop, which costs nothing measurable.
  const int64_t wanted = rows < (int64_t{1} << 20) ? rows : int64_t{1} << 20;
  const bool vec = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const auto run = [&](auto kernel, const auto* in, auto* out, int64_t row_words) {
    const Launch launch = launch_on(stream, kernel, 256);
    kernel<<<launch.blocks(wanted), launch.threads, 0, stream>>>(in, src_rows, out, dst_rows, rows, row_words);
  };
  if (vec) {
    run(&copy_rows_kernel<uint4>, static_cast<const uint4*>(src), static_cast<uint4*>(dst), row_bytes / 16);
  } else {
    run(&copy_rows_kernel<uint8_t>, static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), row_bytes);
  }
  check(cudaGetLastError(), "copy_rows kernel launch");
}

}  // namespace epcomm::kernels::cuda::detail
