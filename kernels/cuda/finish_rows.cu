// SPDX-License-Identifier: MIT
// finish_rows: the owner's side of a dispatch once every writer is done. A token
// with several experts on this rank that a node peer wrote arrived once, at its
// first row; its other rows take a copy. (This GPU's own writes filled every row:
// each is its own first row.) Padding rows are marked empty with a zero payload, so a grouped GEMM
// over whole segments reads finite values. With node peer checksums, the warp
// of a row a node peer wrote checks it against the CRC32C its writer took. A warp
// per row.
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_plan.hpp"
#include "launch.hpp"
#include "row_copy.cuh"
#include "warp_crc32c.cuh"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

constexpr int kThreads = 256;

// A warp per row, any number of warps a block. kCheck: checksums on
// (checksums.record set); a kernel of its own, so that the hash's registers
// (warp_crc32c.cuh) do not cut the occupancy of the plain copy.
template <bool kCheck>
__global__ void finish_rows_kernel(SlotArrays mine, const int64_t* expert_offset, const int64_t* expert_count,
                                   int J, int64_t rows, int64_t row_bytes, bool aligned16, int R, int me,
                                   ChecksumReport checksums) {
  const int lane = threadIdx.x % 32;
  __shared__ Crc32cTables crc_tables;
  constexpr bool check = kCheck;
  if constexpr (check) {
    load_crc32c_tables(crc_tables, row_bytes);
    __syncthreads();
  }
  const int64_t warps = blockDim.x / 32;
  for (int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < rows; r += gridDim.x * warps) {
    // The segment holding r: the last j with expert_offset[j] <= r.
    int lo = 0, hi = J;  // expert_offset[lo] <= r < expert_offset[hi]
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (expert_offset[mid] <= r) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    uint8_t* row = mine.rows + r * row_bytes;
    if (r >= expert_offset[lo] + expert_count[lo]) {
      if (lane == 0) {
        mine.src_rank[r] = -1;
        mine.src_token[r] = -1;
        mine.weight[r] = 0.0f;
        mine.first_row[r] = -1;
      }
      warp_zero_row(row, row_bytes, aligned16, lane);
      continue;
    }
    const int32_t f = mine.first_row[r];
    // Row f is a first row (first_row[f] == f): no warp writes it here.
    if (f >= 0 && f != r) warp_copy_row(row, mine.rows + static_cast<int64_t>(f) * row_bytes, row_bytes, aligned16, lane);
    // A first row its source's forwarder (local rank src_rank % R) wrote from
    // another GPU. (Only real rows: a padding row's metadata is the last
    // dispatch's until this kernel marks it.)
    const int32_t source = mine.src_rank[r];
    if (check && f == r && source >= 0 && source % R != me) {
      const uint32_t crc = warp_crc32c(crc_tables, row, row_bytes, lane);
      if (lane == 0 && crc != mine.row_sum[r]) record_mismatch(checksums, me, r, crc, mine.row_sum[r]);
    }
  }
}

}  // namespace

void preload_finish_kernels() {
  preload(reinterpret_cast<const void*>(&finish_rows_kernel<false>));
  preload(reinterpret_cast<const void*>(&finish_rows_kernel<true>));
}

}  // namespace detail

void finish_rows(const SlotArrays& mine, const int64_t* expert_offset, const int64_t* expert_count,
                 int num_local_experts, int64_t rows, int64_t row_bytes, int ranks_per_node, int local_rank,
                 ChecksumReport checksums, void* stream) {
  using namespace detail;
  if (rows <= 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto kernel = checksums.record != nullptr ? finish_rows_kernel<true> : finish_rows_kernel<false>;
  const Launch launch = launch_on(s, kernel, kThreads);
  const int64_t warps = launch.threads / 32;
  const int64_t blocks64 = (rows + warps - 1) / warps;
  const int64_t wanted = blocks64 < (int64_t{1} << 20) ? blocks64 : int64_t{1} << 20;
  // The slot's rows start 256-byte aligned.
  const bool aligned16 = row_bytes % 16 == 0;
  kernel<<<launch.blocks(wanted), launch.threads, 0, s>>>(
      mine, expert_offset, expert_count, num_local_experts, rows, row_bytes, aligned16, ranks_per_node, local_rank,
      checksums);
  check(cudaGetLastError(), "finish_rows kernel launch");
}

}  // namespace epcomm::kernels::cuda
