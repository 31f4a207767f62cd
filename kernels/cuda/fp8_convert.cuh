// SPDX-License-Identifier: MIT
// FP32 -> BF16 and E4M3 conversions through the conversion instructions of
// sm_89+ GPUs.
//
// BF16: cvt.rn.bf16x2.f32 rounds to nearest even with overflow to infinity and
// keeps subnormals, as elem::f32_to_bf16 does; NaN takes the reference path (the
// instruction returns the canonical NaN, the reference keeps the payload).
//
// E4M3: through the FP8 conversion instructions: the
// values of elem::f32_to_e4m3 and elem::e4m3_to_f32 in one instruction per two
// elements instead of ~30 integer operations per element, which made FP8 pack
// compute-bound. Both sides round to nearest even and saturate to +-448 (infinity
// included) and convert exactly the other way; only NaN differs (the instructions
// drop its sign and payload), so NaN takes the reference path.
// count_e4m3_mismatches() (fp8_convert_check.hpp) compares them over every float
// and every code on the device.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/bf16.hpp"
#include "common/fp8_e4m3.hpp"

namespace epcomm::kernels::cuda::detail {

// BF16 bits of a (low half) and b (high half).
__device__ inline uint32_t bf16x2_of(float a, float b) {
  const __nv_bfloat162_raw h = __floats2bfloat162_rn(a, b);
  uint32_t c = h.x | static_cast<uint32_t>(h.y) << 16;
  if (elem::is_nan(a)) c = (c & 0xffff0000u) | elem::f32_to_bf16(a);
  if (elem::is_nan(b)) c = (c & 0x0000ffffu) | static_cast<uint32_t>(elem::f32_to_bf16(b)) << 16;
  return c;
}

// Codes of a (low byte) and b (high byte).
__device__ inline uint32_t e4m3x2_of(float a, float b) {
  uint32_t c = __nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
  if (elem::is_nan(a)) c = (c & 0xff00u) | elem::f32_to_e4m3(a);
  if (elem::is_nan(b)) c = (c & 0x00ffu) | static_cast<uint32_t>(elem::f32_to_e4m3(b)) << 8;
  return c;
}

// Values of the codes in the low (a) and high (b) byte of c.
__device__ inline void e4m3x2_to_f32(uint32_t c, float& a, float& b) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(c), __NV_E4M3);
  a = (c & 0x7fu) == 0x7fu ? elem::e4m3_to_f32(static_cast<uint8_t>(c)) : __half2float(__half(__half_raw{h.x}));
  b = (c & 0x7f00u) == 0x7f00u ? elem::e4m3_to_f32(static_cast<uint8_t>(c >> 8))
                               : __half2float(__half(__half_raw{h.y}));
}

}  // namespace epcomm::kernels::cuda::detail
