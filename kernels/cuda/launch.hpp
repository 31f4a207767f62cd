// SPDX-License-Identifier: MIT
// Argument checks and grid sizes shared by the host entry points of the CUDA codecs.
#pragma once

#include <cuda_runtime_api.h>

#include <epcomm/error.hpp>
#include <epcomm/formats.hpp>
#include <epcomm/types.hpp>

#include "epcomm_kernels/sm_budget.hpp"

#include <climits>
#include <cstdint>
#include <string>

namespace epcomm::kernels::cuda::detail {

inline void check_shape(const char* op, Format format, int64_t rows, int hidden) {
  if (rows < 0 || hidden < 1) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + " needs rows >= 0 and hidden >= 1, got rows " +
                                                 std::to_string(rows) + ", hidden " + std::to_string(hidden));
  }
  if (!is_known_format(format)) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + ": unknown wire format value " +
                                                 std::to_string(static_cast<int>(format)));
  }
}

inline void check_dtype(const char* op, DType type) {
  if (type != DType::kF32 && type != DType::kBF16) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + ": unknown dtype value " +
                                                 std::to_string(static_cast<int>(type)));
  }
}

// Blocks for one tile per 16 lanes over all rows (tiles_per_block tiles a block:
// a block's threads / 16).
inline unsigned tile_blocks(const char* op, int64_t rows, int hidden, int tiles_per_block) {
  const int64_t tiles = rows * ((hidden + kTileElems - 1) / kTileElems);
  const int64_t blocks = (tiles + tiles_per_block - 1) / tiles_per_block;
  if (blocks > INT_MAX) {
    throw Error(ErrorCode::kInvalidArgument, std::string("epcomm: ") + op + ": " + std::to_string(tiles) +
                                                 " tiles exceed one launch; split the rows");
  }
  return static_cast<unsigned>(blocks);
}

// The grid of a launch that would take `wanted` blocks on `stream`: every launch
// of the exchange's kernels takes its block count from here or from Launch, so a
// stream's SM budget (sm_budget.hpp) bounds them all. The kernels loop over their
// work with the grid's stride, so fewer blocks compute the same.
inline unsigned grid_blocks(int64_t wanted, cudaStream_t stream) {
  return budget_blocks(wanted, stream_sm_budget(stream));
}

// The most threads a block of `kernel` can have (cudaFuncAttributes::
// maxThreadsPerBlock), as preload found it; asked of CUDA once per kernel.
int kernel_max_threads(const void* kernel);

// The shape of one launch of a kernel under an SM budget (sm_budget.hpp): without
// one, the kernel's usual block and grid; under one, blocks as large as the kernel
// allows (budget_block_threads), at most `budget` of them. The caller sizes its
// work split from `threads` (warps or 16-lane tile groups a block), then asks
// blocks() for the grid; every kernel so launched works with any block of whole
// warps.
struct Launch {
  int budget = 0;        // the stream's SM budget, 0: none
  unsigned threads = 0;  // a block's threads
  unsigned blocks(int64_t wanted) const { return budget_blocks(wanted, budget); }
};
template <class Kernel>
Launch launch_on(cudaStream_t stream, Kernel* kernel, unsigned usual_threads) {
  const int budget = stream_sm_budget(stream);
  if (budget <= 0) return Launch{0, usual_threads};
  const int most = kernel_max_threads(reinterpret_cast<const void*>(kernel));
  return Launch{budget, budget_block_threads(most, usual_threads, budget)};
}

// Loads a kernel now, and notes the largest block it can take (kernel_max_threads).
// With lazy module loading (CUDA's default) a kernel is loaded at its first
// launch, and loading can wait for every kernel running on the device to finish:
// for the exchange, whose caller's stream may hold a kernel that waits for the
// exchange's own work, that would be a deadlock until the wait times out.
void preload(const void* kernel);
// Each translation unit's kernel instances, all formats and types.
void preload_encode_kernels();
void preload_decode_kernels();
void preload_accumulate_kernels();
void preload_copy_kernels();
void preload_checksum_kernels();
void preload_place_kernels();
void preload_route_count_kernels();
void preload_finish_kernels();
void preload_node_partial_sum_kernels();
void preload_owner_partial_kernels();

// dst row (dst_rows ? dst_rows[i] : i) = src row (src_rows ? src_rows[i] : i), as
// raw bytes: encoding to or decoding from the plain format of the same dtype is a
// copy (and must keep NaN payloads as they are, which a BF16 round trip would not).
void copy_rows(const void* src, const int32_t* src_rows, void* dst, const int32_t* dst_rows, int64_t rows,
               int64_t row_bytes, cudaStream_t stream);

}  // namespace epcomm::kernels::cuda::detail
