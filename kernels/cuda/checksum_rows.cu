// SPDX-License-Identifier: MIT
// CRC32C of rows on the GPU (cuda_rows.hpp: crc32c_row_list), equal to the host's
// (runtime/src/util/crc32c.hpp, ISA-L) so that a row hashed on one side can be
// checked on the other. A warp hashes a row: each lane a contiguous piece, byte by
// byte from a table in shared memory, then the 32 CRCs are joined in a tree of
// shuffles (crc32c_math.hpp: CRC(A || B) from CRC(A), CRC(B) and len(B)).
#include "common/crc32c_math.hpp"
#include "cuda_check.hpp"
#include "launch.hpp"

#include <epcomm_kernels/cuda_rows.hpp>

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kWarps = 8;
constexpr int kLanes = 32;
constexpr int kLevels = 5;  // log2(kLanes)

// The pieces: lane l hashes bytes [n - (32 - l) c, n - (31 - l) c) clipped at 0,
// c = ceil(n / 32); the short or empty pieces are the leftmost, so every right
// half of the tree covers 2^level whole pieces and is moved past with
// shift[level] = x^(8 c 2^level). An empty left half has CRC 0, which the join
// keeps as the right half's CRC whatever the shift.
__global__ void __launch_bounds__(kWarps * kLanes)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t* out) {
  __shared__ uint32_t table[256];
  __shared__ uint32_t shift[kLevels];
  const int64_t piece = (row_bytes + kLanes - 1) / kLanes;
  for (int i = threadIdx.x; i < 256; i += blockDim.x) table[i] = crc32c::table_entry(static_cast<uint32_t>(i));
  if (threadIdx.x < kLevels) shift[threadIdx.x] = crc32c::shift_operator(static_cast<uint64_t>(piece) << threadIdx.x);
  __syncthreads();
  const int lane = threadIdx.x % kLanes;
  const int64_t end = row_bytes - (kLanes - 1 - lane) * piece;
  const int64_t begin = end - piece < 0 ? 0 : end - piece;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kLanes; r < count;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const uint8_t* p = rows[r];
    uint32_t reg = 0xFFFFFFFFu;
    for (int64_t i = begin; i < end; ++i) reg = crc32c::update_byte(table, reg, p[i]);
    uint32_t crc = ~reg;  // 0 for an empty piece
    for (int level = 0; level < kLevels; ++level) {
      const uint32_t right = __shfl_down_sync(0xffffffffu, crc, 1 << level);
      if (lane % (2 << level) == 0) crc = crc32c::combine(crc, right, shift[level]);
    }
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
                               detail::kWarps * detail::kLanes, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes, out);
  detail::check(cudaGetLastError(), "crc32c_row_list kernel launch");
}

}  // namespace epcomm::kernels::cuda
