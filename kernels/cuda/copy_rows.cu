// SPDX-License-Identifier: MIT
// Gather/scatter of whole rows as bytes, 16 bytes a thread where alignment allows.
#include "cuda_check.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda::detail {
namespace {

template <class Word>
__global__ void __launch_bounds__(256) copy_rows_kernel(const Word* src, const int32_t* src_rows, Word* dst,
                                                        const int32_t* dst_rows, int64_t rows, int64_t row_words) {
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
  const unsigned blocks = grid_blocks(rows < (int64_t{1} << 20) ? rows : int64_t{1} << 20, stream);
  const bool vec = row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  if (vec) {
    copy_rows_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4*>(src), src_rows, static_cast<uint4*>(dst),
                                                 dst_rows, rows, row_bytes / 16);
  } else {
    copy_rows_kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint8_t*>(src), src_rows,
                                                 static_cast<uint8_t*>(dst), dst_rows, rows, row_bytes);
  }
  check(cudaGetLastError(), "copy_rows kernel launch");
}

}  // namespace epcomm::kernels::cuda::detail
