// SPDX-License-Identifier: MIT
// One row copied (or zeroed) by the 32 lanes of a warp: 16-byte accesses when the
// caller vouched for alignment (row size and both addresses multiples of 16), else
// bytes, so rows of any size (hidden 1, 129) are legal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace epcomm::kernels::cuda::detail {

// Four loads in flight per lane before their stores: the compiler cannot reorder
// a load past a store that may alias it, so a plain loop would wait for every load.
__device__ inline void warp_copy_row(uint8_t* dst, const uint8_t* src, int64_t bytes, bool aligned16, int lane) {
  if (aligned16) {
    const auto* s = reinterpret_cast<const uint4*>(src);
    auto* d = reinterpret_cast<uint4*>(dst);
    const int64_t n = bytes / 16;
    int64_t i = lane;
    for (; i + 96 < n; i += 128) {
      const uint4 a = s[i], b = s[i + 32], c = s[i + 64], e = s[i + 96];
      d[i] = a;
      d[i + 32] = b;
      d[i + 64] = c;
      d[i + 96] = e;
    }
    for (; i < n; i += 32) d[i] = s[i];
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
