// SPDX-License-Identifier: MIT
// The per-tile kernels every quantised format is built from. Two implementations
// fill this table: the scalar reference (kernels/cpu/reference.cpp, the spec in
// code) and the vectorised one (Highway, runtime dispatch to the best SIMD target);
// they agree bit for bit, which tests/test_codec_simd.cpp checks. A tile is at most
// kTileElems elements; the *_axpy kernels run over any number of tiles at once.
#pragma once

#include <cstdint>

#include <epcomm/formats.hpp>  // kTileElems

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

  // Decode, weight and accumulate in one pass over a run of whole tiles (n any
  // length, element i in tile i / kTileElems), with no decoded FP32 copy in between.
  // Per element the same operations in the same order as decoding into a buffer
  // and calling axpy on it: acc[i] = acc[i] + w * decoded[i].
  // decoded[i] = bf16_to_f32(x[i]).
  void (*bf16_axpy)(const uint16_t* x, int n, float w, float* acc);
  // decoded[i] = value(codes[i]) * tile_scales[i / kTileElems], as fp8_decode.
  void (*fp8_axpy)(const uint8_t* codes, int n, const float* tile_scales, float w, float* acc);
  // decoded[i] as logfmt_decode of tile i / kTileElems, whose codes start at byte
  // (i / kTileElems) * kTileElems * bits / 8 of `codes` and whose stored pair is
  // (tile_min_max[2 * tile], tile_min_max[2 * tile + 1]).
  void (*logfmt_axpy)(const uint8_t* codes, int n, int bits, const int16_t* tile_min_max, float w, float* acc);
};

const TileKernels& reference_kernels();
// The fastest kernels this CPU runs, unless EPCOMM_KERNELS=scalar asks for the
// reference (to rule the SIMD code out when hunting a bug).
const TileKernels& active_kernels();

}  // namespace epcomm::kernels
