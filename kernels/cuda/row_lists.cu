// SPDX-License-Identifier: MIT
// copy_row_list: the exchange's row moves by pointer.
#include "cuda_check.hpp"
#include "epcomm_kernels/cuda_rows.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace detail {
namespace {

// A warp per row: rows are a few KB, so a warp keeps enough 16-byte accesses in
// flight per row while the grid covers many rows at once (remote NVLink stores
// need many outstanding to reach the link's rate). Any number of warps a block.
constexpr int kCopyThreads = 256;

template <class Word>
__global__ void copy_row_list_kernel(const void* const* src, void* const* dst, int64_t count, int64_t row_words) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = blockDim.x / 32;
  for (int64_t r = blockIdx.x * warps + threadIdx.x / 32; r < count; r += gridDim.x * warps) {
    const Word* s = static_cast<const Word*>(src[r]);
    Word* d = static_cast<Word*>(dst[r]);
    for (int64_t i = lane; i < row_words; i += 32) d[i] = s[i];
  }
}

}  // namespace
}  // namespace detail

void preload_kernels() {
  using namespace detail;
  preload_encode_kernels();
  preload_decode_kernels();
  preload_accumulate_kernels();
  preload_copy_kernels();
  preload_checksum_kernels();
  preload_place_kernels();
  preload_route_count_kernels();
  preload_finish_kernels();
  preload_node_partial_sum_kernels();
  preload_owner_partial_kernels();
  preload(reinterpret_cast<const void*>(&copy_row_list_kernel<uint4>));
  preload(reinterpret_cast<const void*>(&copy_row_list_kernel<uint8_t>));
}

void copy_row_list(const void* const* src, void* const* dst, int64_t count, int64_t row_bytes, bool aligned16,
                   void* stream) {
  using namespace detail;
  if (count <= 0) return;
  const auto s = static_cast<cudaStream_t>(stream);
  const auto run = [&](auto kernel, int64_t row_words) {
    const Launch launch = launch_on(s, kernel, kCopyThreads);
    const int64_t warps = launch.threads / 32;
    const int64_t blocks64 = (count + warps - 1) / warps;
    kernel<<<launch.blocks(blocks64 < (int64_t{1} << 20) ? blocks64 : int64_t{1} << 20), launch.threads, 0, s>>>(
        src, dst, count, row_words);
  };
  if (aligned16 && row_bytes % 16 == 0) {
    run(&copy_row_list_kernel<uint4>, row_bytes / 16);
  } else {
    run(&copy_row_list_kernel<uint8_t>, row_bytes);
  }
  check(cudaGetLastError(), "copy_row_list kernel launch");
}

}  // namespace epcomm::kernels::cuda
