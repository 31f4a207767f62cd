// SPDX-License-Identifier: MIT
#include "device/driver_function.hpp"

#include <cuda_runtime_api.h>

#include "device/cuda_call.hpp"

namespace epcomm::detail {
namespace {

// The query's own status; *fn null when the driver has no such function.
cudaError_t look_up(const char* name, void** fn) {
  cudaDriverEntryPointQueryResult found{};
  const cudaError_t status = cudaGetDriverEntryPointByVersion(name, fn, 12000, cudaEnableDefault, &found);
  if (found != cudaDriverEntryPointSuccess) *fn = nullptr;
  return status;
}

}  // namespace

void* find_driver_function(const char* name) {
  void* fn = nullptr;
  return look_up(name, &fn) == cudaSuccess ? fn : nullptr;
}

void* driver_function(const char* name, const char* purpose) {
  void* fn = nullptr;
  EPCOMM_CUDA(look_up(name, &fn));
  EPCOMM_REQUIRE(fn != nullptr, kUnsupported, "the CUDA driver has no " << name << ", " << purpose);
  return fn;
}

}  // namespace epcomm::detail
