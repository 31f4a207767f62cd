// SPDX-License-Identifier: MIT
// FP32 multiply, divide and add whose NaN results carry the bits x86 SSE gives,
// which is what the CPU reference computes. Non-NaN results are the GPU's own
// (IEEE round to nearest, subnormals kept), already identical; only NaN bits
// differ: the GPU always returns 0x7fffffff, SSE returns a NaN operand quietened
// (the first one if both are NaN) and, for an invalid operation (inf * 0,
// inf - inf), the "default NaN" 0xffc00000. FP8 keeps a NaN's sign, and decoded
// and accumulated floats are compared bit for bit, so the difference would show.
#pragma once

#include "common/host_device.hpp"

namespace epcomm::kernels::cuda::detail::x86 {

__device__ inline float nan_result(float r, float a, float b) {
  if (!elem::is_nan(r)) return r;
  if (elem::is_nan(a)) return elem::from_bits(elem::to_bits(a) | 0x00400000u);
  if (elem::is_nan(b)) return elem::from_bits(elem::to_bits(b) | 0x00400000u);
  return elem::from_bits(0xffc00000u);
}

__device__ inline float mul(float a, float b) { return nan_result(a * b, a, b); }
__device__ inline float div(float a, float b) { return nan_result(a / b, a, b); }
__device__ inline float add(float a, float b) { return nan_result(a + b, a, b); }

}  // namespace epcomm::kernels::cuda::detail::x86
