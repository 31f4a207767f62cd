// SPDX-License-Identifier: MIT
// The per-tile kernels every quantised format is built from. Two implementations
// fill this table: the scalar reference (kernels/cpu/reference.cpp, the spec in
// code) and the vectorised one (Highway, runtime dispatch to the best SIMD target);
// they agree bit for bit, which tests/test_codec_simd.cpp checks. A tile is at most
// kTileElems elements.
#pragma once

#include <cstdint>

namespace epcomm::kernels {

struct TileKernels {
  const char* name;  // "scalar" or the SIMD target, e.g. "AVX3"
  // max |x| over the finite elements (0 if none).
  float (*amax_finite)(const float* x, int n);
  // codes[i] = E4M3(x[i] / scale).
  void (*fp8_encode)(const float* x, int n, float scale, uint8_t* codes);
  // out[i] = value(codes[i]) * scale.
  void (*fp8_decode)(const uint8_t* codes, int n, float scale, float* out);
  // Encodes one LogFMT tile: the (min_q, max_q) pair and n codes packed at `bits`
  // bits each. Returns the index of the first non-finite element (nothing useful
  // written then) or -1.
  int (*logfmt_encode)(const float* x, int n, int bits, uint8_t* codes, int16_t* min_q, int16_t* max_q);
  // Decodes n packed codes; any bytes decode without faults.
  void (*logfmt_decode)(const uint8_t* codes, int n, int bits, int16_t min_q, int16_t max_q, float* out);
  // acc[i] += w * x[i] (multiply, then add: no fused multiply-add).
  void (*axpy)(const float* x, int n, float w, float* acc);
  // BF16 <-> FP32 (round to nearest even; NaN stays NaN).
  void (*f32_to_bf16)(const float* x, int n, uint16_t* out);
  void (*bf16_to_f32)(const uint16_t* x, int n, float* out);
};

const TileKernels& reference_kernels();
// The fastest kernels this CPU runs, unless EPCOMM_KERNELS=scalar asks for the
// reference (to rule the SIMD code out when hunting a bug).
const TileKernels& active_kernels();

}  // namespace epcomm::kernels
