// SPDX-License-Identifier: MIT
// CRC32C of rows on the GPU (cuda_rows.hpp: crc32c_row_list), equal to the host's
// (runtime/src/util/crc32c.hpp, ISA-L) so that a row hashed on one side can be
// checked on the other. A warp hashes a row (warp_crc32c.cuh).
#include "cuda_check.hpp"
#include "launch.hpp"
#include "warp_crc32c.cuh"

#include <epcomm_kernels/cuda_rows.hpp>

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kWarps = 8;

__global__ void __launch_bounds__(kWarps * kCrcLanes)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t* out) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % kCrcLanes;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kCrcLanes; r < count;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const uint32_t crc = warp_crc32c(tables, rows[r], row_bytes, lane);
    if (lane == 0) out[r] = crc;
  }
}

}  // namespace

void preload_checksum_kernels() { preload(reinterpret_cast<const void*>(&crc32c_rows_kernel)); }

}  // namespace detail

void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, void* stream) {
  if (count <= 0) return;
  if (row_bytes < 0) {
    throw Error(ErrorCode::kInvalidArgument,
                "epcomm: crc32c_row_list needs row_bytes >= 0, got " + std::to_string(row_bytes));
  }
  const int64_t blocks = (count + detail::kWarps - 1) / detail::kWarps;
  detail::crc32c_rows_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)),
                               detail::kWarps * detail::kCrcLanes, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes, out);
  detail::check(cudaGetLastError(), "crc32c_row_list kernel launch");
}

}  // namespace epcomm::kernels::cuda
