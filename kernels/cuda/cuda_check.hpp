// SPDX-License-Identifier: MIT
// CUDA runtime failures as epcomm::Error, so callers of the CUDA codecs handle one
// exception type whatever backend ran.
#pragma once

#include <cuda_runtime_api.h>

namespace epcomm::kernels::cuda::detail {

// Throws Error(kSystem) "epcomm: CUDA <call> failed: <cudaGetErrorString>" unless
// status is cudaSuccess.
void check(cudaError_t status, const char* call);

}  // namespace epcomm::kernels::cuda::detail
