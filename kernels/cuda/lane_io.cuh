// SPDX-License-Identifier: MIT
// How the CUDA codec kernels split rows among threads, and the memory accesses of
// one thread. A 1x128 tile is handled by 16 consecutive lanes of a warp, 8 elements
// each: a BF16 lane loads one 16-byte vector, an FP8 lane stores 8 code bytes, a
// LogFMT-n lane stores exactly n code bytes (8 codes of n bits), so lanes never
// share a byte and need no cross-lane bit packing. Tile reductions (amax, log
// range, first bad column) are 4 shuffles among the 16 lanes.
//
// Accesses take the widest vector the address allows and fall back to narrower
// ones: rows of odd sizes (hidden = 100, LogFMT-3 rows) are legal, only slower.
#pragma once

#include <cuda_runtime.h>

#include <epcomm/formats.hpp>

#include <cstdint>

#include "common/bf16.hpp"

namespace epcomm::kernels::cuda::detail {

inline constexpr int kLanesPerTile = 16;
inline constexpr int kElemsPerLane = 8;
static_assert(kLanesPerTile * kElemsPerLane == kTileElems);
inline constexpr int kBlockThreads = 256;
inline constexpr int kTilesPerBlock = kBlockThreads / kLanesPerTile;

// Byte offsets inside an encoded row (epcomm::RowLayout, as the kernels need it).
struct Layout {
  int64_t row_bytes;
  int64_t payload_offset;
  int64_t meta_offset;
};

// One lane's share of the work: tile `tile` of row `row`, columns [col0, col0 + valid).
struct Lane {
  int64_t row;
  int tile;
  int sub;        // lane within the tile's 16
  int col0;
  int valid;      // 0..8; 0 past the row's end or for a tile past the last row
  bool in_range;  // row < rows; lanes of a missing tile still take part in shuffles
  unsigned mask;  // the tile's 16 lanes, for __shfl_*_sync
};

// Tiles are numbered row-major over [rows, tiles per row]; lane_at gives this
// thread's share of tile `base + threadIdx.x / 16`.
__device__ inline Lane lane_at(int64_t base, int64_t rows, int hidden) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const int64_t unit = base + threadIdx.x / kLanesPerTile;
  Lane l;
  l.row = unit / tiles;
  l.tile = static_cast<int>(unit % tiles);
  l.sub = static_cast<int>(threadIdx.x % kLanesPerTile);
  l.col0 = l.tile * kTileElems + l.sub * kElemsPerLane;
  l.in_range = l.row < rows;
  const int left = hidden - l.col0;
  l.valid = !l.in_range || left <= 0 ? 0 : (left < kElemsPerLane ? left : kElemsPerLane);
  l.mask = 0xffffu << (threadIdx.x & 16u);
  return l;
}

// kTilesPerBlock tiles per block, one per 16 lanes.
__device__ inline Lane lane_of(int64_t rows, int hidden) {
  return lane_at(static_cast<int64_t>(blockIdx.x) * kTilesPerBlock, rows, hidden);
}

// The encode and decode kernels can give each 16 lanes kUnroll tiles, kTilesPerBlock
// apart (so a block's pass over one of them stays contiguous), loading all of them
// before the arithmetic. Measured on the H100 (docs/results/codec_gpu.md), 2 was
// slower than 1 for every quantised format (FP8 pack 57-64% of copy against
// 65-79%), so 1 is the default; -DEPCOMM_CUDA_CODEC_UNROLL=2 brings it back.
#ifndef EPCOMM_CUDA_CODEC_UNROLL
#define EPCOMM_CUDA_CODEC_UNROLL 1
#endif
inline constexpr int kUnroll = EPCOMM_CUDA_CODEC_UNROLL;
__device__ inline Lane lane_of_unrolled(int u, int64_t rows, int hidden) {
  return lane_at(static_cast<int64_t>(blockIdx.x) * (kTilesPerBlock * kUnroll) + u * kTilesPerBlock, rows, hidden);
}

template <int kAlign>
__device__ inline bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kAlign == 0;
}

// Up to 8 elements into v (the rest 0).
__device__ inline void load8(const float* p, int valid, float (&v)[kElemsPerLane]) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    return;
  }
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) v[k] = k < valid ? p[k] : 0.0f;
}

// BF16 elements (as uint16_t bits).
__device__ inline void load8(const uint16_t* p, int valid, float (&v)[kElemsPerLane]) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    const uint4 q = *reinterpret_cast<const uint4*>(p);
    const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int k = 0; k < kElemsPerLane; ++k) v[k] = elem::bf16_to_f32(static_cast<uint16_t>(w[k / 2] >> (16 * (k % 2))));
    return;
  }
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) v[k] = k < valid ? elem::bf16_to_f32(p[k]) : 0.0f;
}

__device__ inline void store8(float* p, int valid, const float (&v)[kElemsPerLane]) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
    return;
  }
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) p[k] = v[k];
  }
}

__device__ inline void store8(uint16_t* p, int valid, const float (&v)[kElemsPerLane]) {
  uint16_t b[kElemsPerLane];
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) b[k] = elem::f32_to_bf16(v[k]);
  if (valid == kElemsPerLane && aligned<16>(p)) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) w[i] = b[2 * i] | static_cast<uint32_t>(b[2 * i + 1]) << 16;
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    return;
  }
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) p[k] = b[k];
  }
}

using Chunk = unsigned __int128;  // a lane's code bytes, little-endian (at most 16)

__device__ inline uint32_t chunk_word(Chunk c, int i) { return static_cast<uint32_t>(c >> (32 * i)); }

// Writes the low n bytes of c at p; kFull is the lane's byte count when it has all
// 8 elements, the case the vector stores serve.
template <int kFull>
__device__ inline void store_bytes(uint8_t* p, Chunk c, int n) {
  if (n == kFull) {
    if constexpr (kFull == 16) {
      if (aligned<16>(p)) {
        *reinterpret_cast<uint4*>(p) = make_uint4(chunk_word(c, 0), chunk_word(c, 1), chunk_word(c, 2), chunk_word(c, 3));
        return;
      }
    }
    if constexpr (kFull == 8) {
      if (aligned<8>(p)) {
        *reinterpret_cast<uint2*>(p) = make_uint2(chunk_word(c, 0), chunk_word(c, 1));
        return;
      }
    }
    if constexpr (kFull % 4 == 0) {
      if (aligned<4>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) reinterpret_cast<uint32_t*>(p)[i] = chunk_word(c, i);
        return;
      }
    }
    if constexpr (kFull % 2 == 0) {
      if (aligned<2>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 2; ++i) reinterpret_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(c >> (16 * i));
        return;
      }
    }
  }
  for (int i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(c >> (8 * i));
}

// Reads n bytes at p into the low bytes of the result (the rest 0).
template <int kFull>
__device__ inline Chunk load_bytes(const uint8_t* p, int n) {
  Chunk c = 0;
  if (n == kFull) {
    if constexpr (kFull == 16) {
      if (aligned<16>(p)) {
        const uint4 q = *reinterpret_cast<const uint4*>(p);
        return static_cast<Chunk>(q.x) | static_cast<Chunk>(q.y) << 32 | static_cast<Chunk>(q.z) << 64 |
               static_cast<Chunk>(q.w) << 96;
      }
    }
    if constexpr (kFull == 8) {
      if (aligned<8>(p)) {
        const uint2 q = *reinterpret_cast<const uint2*>(p);
        return static_cast<Chunk>(q.x) | static_cast<Chunk>(q.y) << 32;
      }
    }
    if constexpr (kFull % 4 == 0) {
      if (aligned<4>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) c |= static_cast<Chunk>(reinterpret_cast<const uint32_t*>(p)[i]) << (32 * i);
        return c;
      }
    }
    if constexpr (kFull % 2 == 0) {
      if (aligned<2>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 2; ++i) c |= static_cast<Chunk>(reinterpret_cast<const uint16_t*>(p)[i]) << (16 * i);
        return c;
      }
    }
  }
  for (int i = 0; i < n; ++i) c |= static_cast<Chunk>(p[i]) << (8 * i);
  return c;
}

}  // namespace epcomm::kernels::cuda::detail
