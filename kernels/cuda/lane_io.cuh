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
#include "fp8_convert.cuh"

namespace epcomm::kernels::cuda::detail {

inline constexpr int kLanesPerTile = 16;
inline constexpr int kElemsPerLane = 8;
static_assert(kLanesPerTile * kElemsPerLane == kTileElems);
// The kernels' usual block; under an SM budget their blocks are as large as each
// kernel allows (epcomm_kernels/sm_budget.hpp), so the kernels take their block's
// size from blockDim, never from these.
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

// Tile `tile` of row `row` (row < rows), as the 16 lanes of this thread's group share it.
__device__ inline Lane lane_in(int64_t row, int tile, int hidden) {
  Lane l;
  l.row = row;
  l.tile = tile;
  l.sub = static_cast<int>(threadIdx.x % kLanesPerTile);
  l.col0 = l.tile * kTileElems + l.sub * kElemsPerLane;
  l.in_range = true;
  const int left = hidden - l.col0;
  l.valid = left <= 0 ? 0 : (left < kElemsPerLane ? left : kElemsPerLane);
  l.mask = 0xffffu << (threadIdx.x & 16u);
  return l;
}

// Tiles are numbered row-major over [rows, tiles per row]; lane_at gives this
// thread's share of tile `base + threadIdx.x / 16`.
__device__ inline Lane lane_at(int64_t base, int64_t rows, int hidden) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const int64_t unit = base + threadIdx.x / kLanesPerTile;
  Lane l = lane_in(unit / tiles, static_cast<int>(unit % tiles), hidden);
  l.in_range = l.row < rows;
  if (!l.in_range) l.valid = 0;
  return l;
}

// The encode and decode kernels walk rows instead (RowWalk): a block takes one row
// at a time, its G 16-lane groups (G = blockDim.x / 16: 16 in a block of 256
// threads) the row's tiles in turn (group g: tiles g, g + G, ...), or, for rows of
// fewer than G tiles, as many whole rows as fit. A group
// loads kAhead tiles before it encodes or decodes any, so each thread keeps up to
// 64 bytes of loads in flight; the row index is read once per row, and no thread
// divides by the tile count.
inline constexpr int kAhead = 4;
struct RowWalk {
  int rows_per_block;  // 1, or G / tiles for rows of fewer tiles
  unsigned blocks;
};
// For blocks of `threads` threads (a multiple of 16).
inline RowWalk row_walk(int64_t rows, int hidden, unsigned threads = kBlockThreads) {
  const int tiles = (hidden + kTileElems - 1) / kTileElems;
  const int groups = static_cast<int>(threads) / kLanesPerTile;
  const int per_block = tiles >= groups ? 1 : groups / tiles;
  // Past 2^20 blocks the blocks loop over rows, which costs nothing measurable.
  const int64_t blocks = (rows + per_block - 1) / per_block;
  return RowWalk{per_block, static_cast<unsigned>(blocks < (int64_t{1} << 20) ? blocks : int64_t{1} << 20)};
}

// This thread's group's part of the walk: rows first_row, first_row + row_stride,
// ... (below rows), and in each the tiles first_tile, first_tile + tile_stride, ...
// (below the row's tiles). Groups left over when whole rows fill a block get none.
struct GroupWalk {
  int64_t first_row;
  int64_t row_stride;
  int first_tile;
  int tile_stride;
  bool active;
};
__device__ inline GroupWalk group_walk(int tiles, int rows_per_block) {
  const int g = static_cast<int>(threadIdx.x / kLanesPerTile);
  GroupWalk w;
  w.row_stride = static_cast<int64_t>(gridDim.x) * rows_per_block;
  if (rows_per_block == 1) {
    w.first_row = blockIdx.x;
    w.first_tile = g;
    w.tile_stride = static_cast<int>(blockDim.x / kLanesPerTile);
    w.active = true;
  } else {
    w.first_row = static_cast<int64_t>(blockIdx.x) * rows_per_block + g / tiles;
    w.first_tile = g % tiles;
    w.tile_stride = tiles;  // one tile a row
    w.active = g < rows_per_block * tiles;
  }
  return w;
}

template <int kAlign>
__device__ inline bool aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kAlign == 0;
}

// A lane's 8 source elements as loaded, widened to FP32 only when encoded, so a
// group's kAhead tiles in flight cost 4 registers each for BF16 (8 for FP32).
template <class Src>
struct Raw;
template <>
struct Raw<uint16_t> {
  uint4 w;
};
template <>
struct Raw<float> {
  float4 a, b;
};

// Up to 8 elements (the rest 0).
__device__ inline void load_raw(const uint16_t* p, int valid, Raw<uint16_t>& r) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    r.w = *reinterpret_cast<const uint4*>(p);
    return;
  }
  uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) w[k / 2] |= static_cast<uint32_t>(p[k]) << (16 * (k % 2));
  }
  r.w = make_uint4(w[0], w[1], w[2], w[3]);
}
__device__ inline void load_raw(const float* p, int valid, Raw<float>& r) {
  if (valid == kElemsPerLane && aligned<16>(p)) {
    r.a = reinterpret_cast<const float4*>(p)[0];
    r.b = reinterpret_cast<const float4*>(p)[1];
    return;
  }
  float v[kElemsPerLane];
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) v[k] = k < valid ? p[k] : 0.0f;
  r.a = make_float4(v[0], v[1], v[2], v[3]);
  r.b = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ inline void widen(const Raw<uint16_t>& r, float (&v)[kElemsPerLane]) {
  const uint32_t w[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) v[k] = elem::bf16_to_f32(static_cast<uint16_t>(w[k / 2] >> (16 * (k % 2))));
}
__device__ inline void widen(const Raw<float>& r, float (&v)[kElemsPerLane]) {
  v[0] = r.a.x, v[1] = r.a.y, v[2] = r.a.z, v[3] = r.a.w, v[4] = r.b.x, v[5] = r.b.y, v[6] = r.b.z, v[7] = r.b.w;
}

// Up to 8 elements into v (the rest 0).
template <class Src>
__device__ inline void load8(const Src* p, int valid, float (&v)[kElemsPerLane]) {
  Raw<Src> r;
  load_raw(p, valid, r);
  widen(r, v);
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

// Rounded to BF16 as elem::f32_to_bf16 does (by the conversion instruction).
__device__ inline void store8(uint16_t* p, int valid, const float (&v)[kElemsPerLane]) {
  uint32_t w[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) w[i] = bf16x2_of(v[2 * i], v[2 * i + 1]);
  if (valid == kElemsPerLane && aligned<16>(p)) {
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
    return;
  }
#pragma unroll
  for (int k = 0; k < kElemsPerLane; ++k) {
    if (k < valid) p[k] = static_cast<uint16_t>(w[k / 2] >> (16 * (k % 2)));
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
    if constexpr (kFull % 4 == 2) {
      // LogFMT-n for n = 6, 10, 14: 4-byte words and one 2-byte half at the end
      // or, two bytes off, at the start (LogFMT-10: 3 stores instead of 5).
      if (aligned<4>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) reinterpret_cast<uint32_t*>(p)[i] = chunk_word(c, i);
        reinterpret_cast<uint16_t*>(p + kFull - 2)[0] = static_cast<uint16_t>(c >> (8 * (kFull - 2)));
        return;
      }
      if (aligned<2>(p)) {
        reinterpret_cast<uint16_t*>(p)[0] = static_cast<uint16_t>(c);
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) {
          reinterpret_cast<uint32_t*>(p + 2)[i] = static_cast<uint32_t>(c >> (16 + 32 * i));
        }
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
    if constexpr (kFull % 4 == 2) {
      // As in store_bytes.
      if (aligned<4>(p)) {
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) c |= static_cast<Chunk>(reinterpret_cast<const uint32_t*>(p)[i]) << (32 * i);
        return c | static_cast<Chunk>(reinterpret_cast<const uint16_t*>(p + kFull - 2)[0]) << (8 * (kFull - 2));
      }
      if (aligned<2>(p)) {
        c = reinterpret_cast<const uint16_t*>(p)[0];
#pragma unroll
        for (int i = 0; i < kFull / 4; ++i) {
          c |= static_cast<Chunk>(reinterpret_cast<const uint32_t*>(p + 2)[i]) << (16 + 32 * i);
        }
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
