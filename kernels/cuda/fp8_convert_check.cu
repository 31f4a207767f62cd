// SPDX-License-Identifier: MIT
#include "fp8_convert_check.hpp"

#include "cuda_check.hpp"
#include "fp8_convert.cuh"

namespace epcomm::kernels::cuda::detail {
namespace {

// Thread i checks the float pairs (u, u + 1) for u = 2i + 2 * stride * k, and code
// pairs below 2^16.
__global__ void e4m3_mismatch_kernel(unsigned long long* count) {
  const uint64_t stride = 2ull * gridDim.x * blockDim.x;
  unsigned long long bad = 0;
  for (uint64_t u = 2ull * (blockIdx.x * blockDim.x + threadIdx.x); u < (1ull << 32); u += stride) {
    const float a = elem::from_bits(static_cast<uint32_t>(u)), b = elem::from_bits(static_cast<uint32_t>(u + 1));
    const uint32_t want = elem::f32_to_e4m3(a) | static_cast<uint32_t>(elem::f32_to_e4m3(b)) << 8;
    bad += e4m3x2_of(a, b) != want;
    if (u < (1ull << 16)) {
      const uint32_t c = static_cast<uint32_t>(u >> 1);  // every code pair (c & 0xff, c >> 8)
      float x, y;
      e4m3x2_to_f32(c, x, y);
      bad += elem::to_bits(x) != elem::to_bits(elem::e4m3_to_f32(static_cast<uint8_t>(c)));
      bad += elem::to_bits(y) != elem::to_bits(elem::e4m3_to_f32(static_cast<uint8_t>(c >> 8)));
    }
  }
  if (bad != 0) atomicAdd(count, bad);
}

// Thread i checks the float pairs (u, u + 1) for u = 2i + 2 * stride * k.
__global__ void bf16_mismatch_kernel(unsigned long long* count) {
  const uint64_t stride = 2ull * gridDim.x * blockDim.x;
  unsigned long long bad = 0;
  for (uint64_t u = 2ull * (blockIdx.x * blockDim.x + threadIdx.x); u < (1ull << 32); u += stride) {
    const float a = elem::from_bits(static_cast<uint32_t>(u)), b = elem::from_bits(static_cast<uint32_t>(u + 1));
    const uint32_t want = elem::f32_to_bf16(a) | static_cast<uint32_t>(elem::f32_to_bf16(b)) << 16;
    bad += bf16x2_of(a, b) != want;
  }
  if (bad != 0) atomicAdd(count, bad);
}

// Runs a counting kernel over 1024 x 256 threads and returns its count.
int64_t count_with(void (*kernel)(unsigned long long*), const char* what) {
  unsigned long long* count = nullptr;
  check(cudaMalloc(&count, sizeof *count), "cudaMalloc");
  unsigned long long host = 0;
  cudaError_t e = cudaMemset(count, 0, sizeof *count);
  if (e == cudaSuccess) {
    kernel<<<1024, 256>>>(count);
    e = cudaGetLastError();
  }
  if (e == cudaSuccess) e = cudaMemcpy(&host, count, sizeof host, cudaMemcpyDeviceToHost);
  cudaFree(count);
  check(e, what);
  return static_cast<int64_t>(host);
}

}  // namespace

int64_t count_e4m3_mismatches() { return count_with(e4m3_mismatch_kernel, "count_e4m3_mismatches"); }
int64_t count_bf16_mismatches() { return count_with(bf16_mismatch_kernel, "count_bf16_mismatches"); }

}  // namespace epcomm::kernels::cuda::detail
