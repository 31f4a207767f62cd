// SPDX-License-Identifier: MIT
// The combine's node peer checksums of the device exchange (cuda_plan.hpp): the
// owner's signature of its partials and the forwarder's check of the partials it
// reads. (The dispatch's rows are signed by the kernel that writes them,
// place_rows.cu, and checked by the owner's fan-out, finish_rows.cu.) A warp per row
// (warp_crc32c.cuh); a mismatch is recorded for the host (ChecksumReport), the
// first one found winning.
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

// A warp per (token, route): the routes of a token are ranks_per_node apart.
__global__ void __launch_bounds__(kThreads)
    check_routed_partials_kernel(const SlotArrays* owners, int R, int me, const int32_t* route_count,
                                 const int32_t* route_local, const int32_t* route_entry, int64_t first, int64_t count,
                                 int64_t row_bytes, ChecksumReport report) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t items = count * R;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; w < items;
       w += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const int64_t h = first + w / R;
    const int c = static_cast<int>(w % R);
    if (c >= route_count[h]) continue;
    const int ld = route_local[h * R + c];
    if (ld == me) continue;  // this rank's own rows: summed from its memory, never encoded
    const int64_t entry = route_entry[h * R + c];
    const SlotArrays& o = owners[ld];
    const uint32_t crc = warp_crc32c(tables, o.partials + entry * row_bytes, row_bytes, lane);
    if (lane == 0 && crc != o.partial_sum[entry]) record_mismatch(report, ld, entry, crc, o.partial_sum[entry]);
  }
}

}  // namespace

void preload_node_peer_checksum_kernels() {
  preload(reinterpret_cast<const void*>(&sign_owner_partials_kernel));
  preload(reinterpret_cast<const void*>(&check_routed_partials_kernel));
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

void check_routed_partials(const SlotArrays* owners, int ranks_per_node, int local_rank, const int32_t* route_count,
                           const int32_t* route_local, const int32_t* route_entry, int64_t first, int64_t count,
                           int64_t row_bytes, ChecksumReport report, void* stream) {
  using namespace detail;
  if (count <= 0) return;
  check_routed_partials_kernel<<<warp_blocks(count * ranks_per_node), kThreads, 0,
                                 static_cast<cudaStream_t>(stream)>>>(
      owners, ranks_per_node, local_rank, route_count, route_local, route_entry, first, count, row_bytes, report);
  check(cudaGetLastError(), "check_routed_partials kernel launch");
}

}  // namespace epcomm::kernels::cuda
