// SPDX-License-Identifier: MIT
// BF16 <-> FP32 conversion: round to nearest even, NaN stays NaN (quietened).
#pragma once

#include "host_device.hpp"

namespace epcomm::kernels::elem {

EPCOMM_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = to_bits(f);
  if (is_nan(f)) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  // Adding 0x7fff plus the lowest kept bit rounds half to even; overflow of the
  // mantissa carries into the exponent, which is exactly the correctly rounded value
  // (up to infinity).
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

EPCOMM_HD float bf16_to_f32(uint16_t b) { return from_bits(static_cast<uint32_t>(b) << 16); }

}  // namespace epcomm::kernels::elem
