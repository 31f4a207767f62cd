// SPDX-License-Identifier: MIT
// One row copied (or zeroed) by the 32 lanes of a warp: 16-byte accesses when the
// caller vouched for alignment (row size and both addresses multiples of 16), else
// bytes, so rows of any size (hidden 1, 129) are legal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace epcomm::kernels::cuda::detail {

__device__ inline void warp_copy_row(uint8_t* dst, const uint8_t* src, int64_t bytes, bool aligned16, int lane) {
  if (aligned16) {
    const auto* s = reinterpret_cast<const uint4*>(src);
    auto* d = reinterpret_cast<uint4*>(dst);
    for (int64_t i = lane; i < bytes / 16; i += 32) d[i] = s[i];
  } else {
    for (int64_t i = lane; i < bytes; i += 32) dst[i] = src[i];
  }
}

__device__ inline void warp_zero_row(uint8_t* dst, int64_t bytes, bool aligned16, int lane) {
  if (aligned16) {
    auto* d = reinterpret_cast<uint4*>(dst);
    for (int64_t i = lane; i < bytes / 16; i += 32) d[i] = make_uint4(0, 0, 0, 0);
  } else {
    for (int64_t i = lane; i < bytes; i += 32) dst[i] = 0;
  }
}

}  // namespace epcomm::kernels::cuda::detail
