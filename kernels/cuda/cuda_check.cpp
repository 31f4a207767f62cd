// SPDX-License-Identifier: MIT
#include "cuda_check.hpp"

#include <epcomm/error.hpp>

#include <string>

namespace epcomm::kernels::cuda::detail {

void check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  throw Error(ErrorCode::kSystem,
              std::string("epcomm: CUDA ") + call + " failed: " + cudaGetErrorString(status));
}

}  // namespace epcomm::kernels::cuda::detail
