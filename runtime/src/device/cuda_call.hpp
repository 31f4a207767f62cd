// SPDX-License-Identifier: MIT
// CUDA runtime failures of the exchange's device path as epcomm::Error(kSystem),
// naming the call, the CUDA error and the rank.
#pragma once

#include <cuda_runtime_api.h>

#include "util/check.hpp"

#define EPCOMM_CUDA(call)                                                                             \
  do {                                                                                                \
    const cudaError_t epcomm_cuda_status_ = (call);                                                   \
    EPCOMM_REQUIRE(epcomm_cuda_status_ == cudaSuccess, kSystem,                                       \
                   #call << " failed: " << cudaGetErrorString(epcomm_cuda_status_));                  \
  } while (0)
