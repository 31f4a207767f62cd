// SPDX-License-Identifier: MIT
// Element-level code shared verbatim by the CPU reference kernels and the CUDA
// kernels, so both compute the same IEEE operations in the same order and agree bit
// for bit. Only +, -, *, /, floor, rint, comparisons and bit moves are used: no
// library transcendental (their last-ulp results differ between glibc and CUDA), and
// every build of this code must keep floating-point contraction off (no FMA), which
// the CMake targets that compile it enforce.
#pragma once

#include <cstdint>
#include <cstring>
#include <math.h>  // floorf, ceilf, rintf on the host (CUDA provides them on the device)

#if defined(__CUDACC__)
#define EPCOMM_HD __host__ __device__ __forceinline__
#else
#define EPCOMM_HD inline
#endif

namespace epcomm::kernels::elem {

EPCOMM_HD uint32_t to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

EPCOMM_HD float from_bits(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

EPCOMM_HD float abs_f(float f) { return from_bits(to_bits(f) & 0x7fffffffu); }
EPCOMM_HD bool is_nan(float f) { return (to_bits(f) & 0x7fffffffu) > 0x7f800000u; }
EPCOMM_HD bool is_finite(float f) { return (to_bits(f) & 0x7f800000u) != 0x7f800000u; }

// 2^e for an integer e in [-127, 128]: the exponent field built directly (2^-127 is
// the subnormal 0x00400000, 2^128 is +inf).
EPCOMM_HD float pow2i(int e) {
  return e <= -127 ? from_bits(0x00400000u) : from_bits(static_cast<uint32_t>(e + 127) << 23);
}

}  // namespace epcomm::kernels::elem
