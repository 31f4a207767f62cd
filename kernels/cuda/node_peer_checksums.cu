// SPDX-License-Identifier: MIT
// The owner's signature of its combine partials (cuda_plan.hpp), the one node
// peer checksum pass of the device exchange that no other kernel's pass over the
// rows carries: the dispatch's rows are signed by the kernel that writes them
// (place_rows.cu) and checked by the owner's fan-out (finish_rows.cu), the
// partials checked by the forwarder's sums (owner_partials.cu). A warp per row
// (warp_crc32c.cuh).
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "launch.hpp"
#include "warp_crc32c.cuh"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

unsigned warp_blocks(int64_t rows) {
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20);
}

__global__ void __launch_bounds__(kThreads)
    sign_owner_partials_kernel(SlotArrays mine, const int32_t* entries, int64_t count, int64_t row_bytes,
                               ChecksumReport report) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % 32;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; i < count;
       i += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const int64_t e = entries[i];
    const uint8_t* row = mine.partials + e * row_bytes;
    const uint32_t crc = warp_crc32c(tables, row, row_bytes, lane);
    if (lane == 0) {
      mine.partial_sum[e] = crc;
      note_signed_row(report, row);
    }
  }
}

}  // namespace

void preload_node_peer_checksum_kernels() {
  preload(reinterpret_cast<const void*>(&sign_owner_partials_kernel));
}

}  // namespace detail

void sign_owner_partials(const SlotArrays& mine, const int32_t* entries, int64_t count, int64_t row_bytes,
                         ChecksumReport report, void* stream) {
  using namespace detail;
  if (count <= 0) return;
  sign_owner_partials_kernel<<<warp_blocks(count), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      mine, entries, count, row_bytes, report);
  check(cudaGetLastError(), "sign_owner_partials kernel launch");
}

}  // namespace epcomm::kernels::cuda
