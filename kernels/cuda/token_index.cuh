// SPDX-License-Identifier: MIT
// Where a token sits in a node's token list (the routes' ascending lists), for the
// kernels that sum per output token what was computed per listed token.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace epcomm::kernels::cuda::detail {

// The index of token t in the ascending list tokens[0, count), or -1. A list of
// every token (a single node's, all routed) is the identity: no search.
__device__ inline int64_t token_index(const int32_t* tokens, int32_t count, int64_t rows, int64_t t) {
  if (count == rows) return t;
  int32_t lo = 0, hi = count;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (tokens[mid] < t) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < count && tokens[lo] == t ? lo : -1;
}

}  // namespace epcomm::kernels::cuda::detail
