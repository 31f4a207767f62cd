// SPDX-License-Identifier: MIT
// Whether CUDA work can run here at all: tests and benches skip, rather than fail,
// on machines without a GPU or without a driver.
#include <cuda_runtime_api.h>

#include "epcomm_kernels/cuda_codec.hpp"

namespace epcomm::kernels::cuda {

bool cuda_device_available() noexcept {
  int count = 0;
  // Without a driver this returns cudaErrorInsufficientDriver or
  // cudaErrorNoDevice; it does not throw or abort.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the error so later calls do not see it
    return false;
  }
  return count > 0;
}

}  // namespace epcomm::kernels::cuda
