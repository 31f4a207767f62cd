// SPDX-License-Identifier: MIT
// Scalar reference kernels: the element math of kernels/common applied one element
// at a time. The vectorised and CUDA kernels must reproduce these bits.
#include <algorithm>
#include <cstddef>

#include "common/fp8_e4m3.hpp"
#include "common/logfmt_math.hpp"
#include "common/bf16.hpp"
#include "epcomm_kernels/tile_kernels.hpp"

namespace epcomm::kernels {
namespace {

float amax_finite(const float* x, int n) {
  float m = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float a = elem::abs_f(x[i]);
    if (elem::is_finite(a) && a > m) m = a;
  }
  return m;
}

void fp8_encode(const float* x, int n, float scale, uint8_t* codes) {
  for (int i = 0; i < n; ++i) codes[i] = elem::f32_to_e4m3(x[i] / scale);
}

void fp8_decode(const uint8_t* codes, int n, float scale, float* out) {
  for (int i = 0; i < n; ++i) out[i] = elem::e4m3_to_f32(codes[i]) * scale;
}

// Codes are a little-endian bit stream: code i occupies bits [i*bits, (i+1)*bits).
int logfmt_encode(const float* x, int n, int bits, uint8_t* codes, int16_t* min_q, int16_t* max_q) {
  float amin = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (!elem::is_finite(x[i])) return i;
    const float a = elem::abs_f(x[i]);
    if (a < elem::kLogZeroBelow) continue;
    amin = amax == 0.0f || a < amin ? a : amin;
    amax = a > amax ? a : amax;
  }
  const int levels = (1 << (bits - 1)) - 1;
  elem::LogTile tile{0.0f, 0.0f};
  if (amax == 0.0f) {
    *min_q = *max_q = 0;
  } else {
    tile = elem::log_tile_params(amin, amax, bits, min_q, max_q);
  }
  uint64_t acc = 0;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    const uint32_t mag = amax == 0.0f ? 0u : static_cast<uint32_t>(elem::log_encode_magnitude(elem::abs_f(x[i]), tile, levels));
    const uint32_t sign = mag != 0u && (elem::to_bits(x[i]) >> 31) ? 1u : 0u;
    acc |= static_cast<uint64_t>(mag | (sign << (bits - 1))) << filled;
    filled += bits;
    while (filled >= 8) {
      *codes++ = static_cast<uint8_t>(acc);
      acc >>= 8;
      filled -= 8;
    }
  }
  if (filled > 0) *codes = static_cast<uint8_t>(acc);
  return -1;
}

void logfmt_decode(const uint8_t* codes, int n, int bits, int16_t min_q, int16_t max_q, float* out) {
  const elem::LogTile tile = elem::log_tile_from_stored(min_q, max_q, bits);
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  uint64_t acc = 0;
  int filled = 0;
  for (int i = 0; i < n; ++i) {
    while (filled < bits) {
      acc |= static_cast<uint64_t>(*codes++) << filled;
      filled += 8;
    }
    out[i] = elem::log_decode(static_cast<uint32_t>(acc & mask), tile, bits);
    acc >>= bits;
    filled -= bits;
  }
}

void axpy(const float* x, int n, float w, float* acc) {
  for (int i = 0; i < n; ++i) acc[i] = acc[i] + w * x[i];
}

void f32_to_bf16_tile(const float* x, int n, uint16_t* out) {
  for (int i = 0; i < n; ++i) out[i] = elem::f32_to_bf16(x[i]);
}

void bf16_to_f32_tile(const uint16_t* x, int n, float* out) {
  for (int i = 0; i < n; ++i) out[i] = elem::bf16_to_f32(x[i]);
}

// The fused kernels' spec is the staged computation itself: each tile decoded into
// a buffer by the kernels above, then axpy.
template <class DecodeTile>
void staged_axpy(int n, float w, float* acc, DecodeTile decode_tile) {
  float v[kTileElems];
  for (int t = 0, i0 = 0; i0 < n; ++t, i0 += kTileElems) {
    const int len = std::min(kTileElems, n - i0);
    decode_tile(t, i0, len, v);
    axpy(v, len, w, acc + i0);
  }
}

void bf16_axpy(const uint16_t* x, int n, float w, float* acc) {
  staged_axpy(n, w, acc, [&](int, int i0, int len, float* v) { bf16_to_f32_tile(x + i0, len, v); });
}

void fp8_axpy(const uint8_t* codes, int n, const float* tile_scales, float w, float* acc) {
  staged_axpy(n, w, acc, [&](int t, int i0, int len, float* v) { fp8_decode(codes + i0, len, tile_scales[t], v); });
}

void logfmt_axpy(const uint8_t* codes, int n, int bits, const int16_t* tile_min_max, float w, float* acc) {
  staged_axpy(n, w, acc, [&](int t, int, int len, float* v) {
    logfmt_decode(codes + static_cast<std::ptrdiff_t>(t) * kTileElems * bits / 8, len, bits, tile_min_max[2 * t],
                  tile_min_max[2 * t + 1], v);
  });
}

}  // namespace

const TileKernels& reference_kernels() {
  static constexpr TileKernels k{"scalar",         &amax_finite, &fp8_encode,       &fp8_decode,
                                 &logfmt_encode,   &logfmt_decode, &axpy,           &f32_to_bf16_tile,
                                 &bf16_to_f32_tile, &bf16_axpy,  &fp8_axpy,         &logfmt_axpy};
  return k;
}

}  // namespace epcomm::kernels
