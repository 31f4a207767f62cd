// SPDX-License-Identifier: MIT
// For one comparison run only: the slicing-by-4 warp CRC32C that
// kernels/cuda/warp_crc32c.cuh replaces (each lane a contiguous piece, tables of
// bytes in shared memory), and two other ways to look the new layout's tables up,
// so epcomm-codec-gpu-bench can time them all in one run.
#include <cuda_runtime.h>

#include <cstdint>

#include "common/crc32c_math.hpp"

namespace epcomm::kernels::crc32c::slicing4 {
namespace {

constexpr int kCrcLanes = 32;
constexpr int kCrcLevels = 5;  // log2(kCrcLanes)

// The block's tables for rows of one size: the slicing tables (table[0] the
// byte-at-a-time one; table[k][b] the register after byte b and k zero bytes)
// and the shifts of the join tree. A kernel holds one in shared memory and fills
// it with load_crc32c_tables before a barrier.
struct Crc32cTables {
  uint32_t table[4][256];
  uint32_t shift[kCrcLevels];
};

// The pieces: lane l hashes bytes [n - (32 - l) c, n - (31 - l) c) clipped at 0,
// c = ceil(n / 32) rounded up to 16; the short or empty pieces are the leftmost,
// so every right half of the tree covers 2^level whole pieces and is moved past
// with shift[level] = x^(8 c 2^level). An empty left half has CRC 0, which the
// join keeps as the right half's CRC whatever the shift. With n a multiple of 16
// every piece starts and ends on a multiple of 16.
__device__ inline int64_t crc32c_piece(int64_t row_bytes) {
  return ((row_bytes + kCrcLanes - 1) / kCrcLanes + 15) / 16 * 16;
}

// Every thread of the block calls it; the caller syncs before hashing.
__device__ inline void load_crc32c_tables(Crc32cTables& t, int64_t row_bytes) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) {
    uint32_t c = ::epcomm::kernels::crc32c::table_entry(static_cast<uint32_t>(i));
    t.table[0][i] = c;
    for (int k = 1; k < 4; ++k) {
      c = ::epcomm::kernels::crc32c::table_entry(c & 0xffu) ^ (c >> 8);  // one more zero byte
      t.table[k][i] = c;
    }
  }
  if (threadIdx.x < kCrcLevels) {
    t.shift[threadIdx.x] = ::epcomm::kernels::crc32c::shift_operator(static_cast<uint64_t>(crc32c_piece(row_bytes)) << threadIdx.x);
  }
}

// The register after the 4 bytes of w (little endian: its low byte first).
__device__ inline uint32_t crc32c_word(const Crc32cTables& t, uint32_t reg, uint32_t w) {
  reg ^= w;
  return t.table[3][reg & 0xffu] ^ t.table[2][(reg >> 8) & 0xffu] ^ t.table[1][(reg >> 16) & 0xffu] ^
         t.table[0][reg >> 24];
}

__device__ inline uint32_t crc32c_uint4(const Crc32cTables& t, uint32_t reg, const uint4& v) {
  reg = crc32c_word(t, reg, v.x);
  reg = crc32c_word(t, reg, v.y);
  reg = crc32c_word(t, reg, v.z);
  return crc32c_word(t, reg, v.w);
}

// The CRC32C of the row_bytes bytes at p (the size the tables were loaded for),
// returned to every lane. All 32 lanes of the warp call it together.
__device__ inline uint32_t warp_crc32c(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane) {
  const int64_t piece = crc32c_piece(row_bytes);
  const int64_t end = row_bytes - (kCrcLanes - 1 - lane) * piece;
  const int64_t begin = end - piece < 0 ? 0 : end - piece;
  uint32_t reg = 0xFFFFFFFFu;
  if (row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0) {
    const auto* v = reinterpret_cast<const uint4*>(p);
    int64_t i = begin / 16;
    const int64_t n = end > begin ? end / 16 : i;
    for (; i + 4 <= n; i += 4) {
      const uint4 a = v[i], b = v[i + 1], c = v[i + 2], d = v[i + 3];
      reg = crc32c_uint4(t, reg, a);
      reg = crc32c_uint4(t, reg, b);
      reg = crc32c_uint4(t, reg, c);
      reg = crc32c_uint4(t, reg, d);
    }
    for (; i < n; ++i) reg = crc32c_uint4(t, reg, v[i]);
  } else {
    for (int64_t i = begin; i < end; ++i) reg = ::epcomm::kernels::crc32c::update_byte(t.table[0], reg, p[i]);
  }
  uint32_t crc = end > begin ? ~reg : 0u;  // 0 for an empty piece
  for (int level = 0; level < kCrcLevels; ++level) {
    const uint32_t right = __shfl_down_sync(0xffffffffu, crc, 1 << level);
    if (lane % (2 << level) == 0) crc = ::epcomm::kernels::crc32c::combine(crc, right, t.shift[level]);
  }
  return __shfl_sync(0xffffffffu, crc, 0);
}


constexpr int kWarps = 8;

__global__ void __launch_bounds__(kWarps * kCrcLanes)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t* out) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % kCrcLanes;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kCrcLanes; r < count;
       r += static_cast<int64_t>(gridDim.x) * kWarps) {
    const uint32_t crc = warp_crc32c(tables, rows[r], row_bytes, lane);
    if (lane == 0) out[r] = crc;
  }
}

}  // namespace

void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, cudaStream_t stream) {
  const int64_t blocks = (count + kWarps - 1) / kWarps;
  crc32c_rows_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), kWarps * kCrcLanes, 0,
                       stream>>>(reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes, out);
}

}  // namespace epcomm::kernels::crc32c::slicing4

// For the same comparison run: kernels/cuda/warp_crc32c.cuh as it was with all
// 33 lookups by shuffle.
#include <cstddef>
namespace epcomm::kernels::crc32c::shuffle_only {
namespace {
namespace crc32c = ::epcomm::kernels::crc32c;


constexpr int kCrcLanes = 32;
constexpr int kCrcBlockBytes = 16;
constexpr int kCrcStepBytes = kCrcLanes * kCrcBlockBytes;  // a warp's coalesced load
constexpr int kCrcChunkBits = 5;                           // a shuffle's 32 lanes
constexpr int kCrcBlockChunks = (8 * kCrcBlockBytes + kCrcChunkBits - 1) / kCrcChunkBits;  // 26
constexpr int kCrcRegisterChunks = (32 + kCrcChunkBits - 1) / kCrcChunkBits;             // 7

// The block's tables: lane v's entry of each lookup table (filled from
// kCrc32cConstants) and the one value that depends on the row size. A kernel
// holds one in shared memory and fills it with load_crc32c_tables before a barrier.
struct Crc32cTables {
  uint32_t block[kCrcBlockChunks][kCrcLanes];     // raw(v in bits [5c, 5c + 5) of a block)
  uint32_t step[kCrcRegisterChunks][kCrcLanes];   // x^(8*512) (v in bits [5c, 5c + 5) of r)
  uint32_t lane_shift[kCrcLanes];                 // x^(8 * 16 (31 - l)): past the lanes after l
  uint32_t tail_shift[kCrcBlockBytes];            // x^(8 t)
  uint32_t init;                                  // x^(8 row_bytes) * 0xFFFFFFFF
};

// What the compiler builds: the tables but init, and the powers that make init.
struct Crc32cConstants {
  Crc32cTables tables;
  uint32_t power[64];  // x^(8 * 2^i)
};

namespace crc_tables {

// The raw register of a block of `bytes` bytes whose only set bit is `bit`
// (bit k of byte k / 8: the bits of the block's little-endian words in order).
constexpr uint32_t bit_column(int bit, int bytes) {
  return crc32c::multiply(crc32c::shift_operator(static_cast<uint64_t>(bytes - 1 - bit / 8)),
                          crc32c::table_entry(1u << (bit % 8)));
}

constexpr Crc32cConstants make() {
  Crc32cConstants constants{};
  Crc32cTables& t = constants.tables;
  for (int c = 0; c < kCrcBlockChunks; ++c) {
    for (int v = 0; v < kCrcLanes; ++v) {
      uint32_t e = 0;
      for (int b = 0; b < kCrcChunkBits; ++b) {
        const int bit = c * kCrcChunkBits + b;
        if ((v >> b & 1) != 0 && bit < 8 * kCrcBlockBytes) e ^= bit_column(bit, kCrcBlockBytes);
      }
      t.block[c][v] = e;
    }
  }
  const uint32_t step = crc32c::shift_operator(kCrcStepBytes);
  for (int c = 0; c < kCrcRegisterChunks; ++c) {
    for (int v = 0; v < kCrcLanes; ++v) {
      uint32_t e = 0;
      for (int b = 0; b < kCrcChunkBits; ++b) {
        const int bit = c * kCrcChunkBits + b;
        if ((v >> b & 1) != 0 && bit < 32) e ^= crc32c::multiply(step, 1u << bit);
      }
      t.step[c][v] = e;
    }
  }
  for (int l = 0; l < kCrcLanes; ++l) {
    t.lane_shift[l] = crc32c::shift_operator(static_cast<uint64_t>(kCrcBlockBytes) * (kCrcLanes - 1 - l));
  }
  for (int i = 0; i < kCrcBlockBytes; ++i) t.tail_shift[i] = crc32c::shift_operator(static_cast<uint64_t>(i));
  uint32_t power = crc32c::shift_operator(1);
  for (int i = 0; i < 64; ++i) {
    constants.power[i] = power;
    power = crc32c::multiply(power, power);
  }
  return constants;
}

}  // namespace crc_tables

// Built by the compiler; copied into shared memory by every block that hashes.
__device__ const Crc32cConstants kCrc32cConstants = crc_tables::make();

// Every thread of the block calls it (blocks of at least 32 threads); the caller
// syncs before hashing.
__device__ inline void load_crc32c_tables(Crc32cTables& t, int64_t row_bytes) {
  constexpr int kWords = static_cast<int>(offsetof(Crc32cTables, init) / sizeof(uint32_t));
  const auto* from = reinterpret_cast<const uint32_t*>(&kCrc32cConstants.tables);
  auto* to = reinterpret_cast<uint32_t*>(&t);
  for (int i = threadIdx.x; i < kWords; i += blockDim.x) to[i] = from[i];
  if (threadIdx.x < kCrcLanes) {
    // x^(8 row_bytes): lane i multiplies the powers of bits i and i + 32 of
    // row_bytes, then the warp multiplies the lanes' products in a tree.
    const int i = static_cast<int>(threadIdx.x);
    const auto n = static_cast<uint64_t>(row_bytes);
    uint32_t x = (n >> i & 1u) != 0 ? kCrc32cConstants.power[i] : 1u << 31;  // 1u << 31: x^0
    if ((n >> (i + 32) & 1u) != 0) x = crc32c::multiply(x, kCrc32cConstants.power[i + 32]);
    for (int d = 1; d < kCrcLanes; d *= 2) x = crc32c::multiply(x, __shfl_xor_sync(0xffffffffu, x, d));
    if (i == 0) t.init = crc32c::multiply(x, 0xFFFFFFFFu);
  }
}

// raw(block): its chunks looked up in the lanes' table registers. A chunk is the
// low 5 bits of the index passed: a shuffle's source lane is taken modulo 32.
__device__ inline uint32_t crc32c_block(const uint32_t (&table)[kCrcBlockChunks], const uint4& v) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t acc = 0;
#pragma unroll
  for (int c = 0; c < kCrcBlockChunks; ++c) {
    const int bit = c * kCrcChunkBits, k = bit / 32, o = bit % 32;
    const uint32_t index = o + kCrcChunkBits <= 32 || k == 3 ? w[k] >> o : __funnelshift_r(w[k], w[k + 1], o);
    acc ^= __shfl_sync(0xffffffffu, table[c], static_cast<int>(index));
  }
  return acc;
}

// x^(8*512) r.
__device__ inline uint32_t crc32c_step(const uint32_t (&table)[kCrcRegisterChunks], uint32_t r) {
  uint32_t acc = 0;
#pragma unroll
  for (int c = 0; c < kCrcRegisterChunks; ++c) {
    acc ^= __shfl_sync(0xffffffffu, table[c], static_cast<int>(r >> (c * kCrcChunkBits)));
  }
  return acc;
}

// v with its bytes below `keep_from` (0..15) zeroed.
__device__ inline uint4 zero_bytes_below(const uint4& v, int keep_from) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t kept[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int below = keep_from - 4 * k;  // bytes of word k to zero
    kept[k] = below >= 4 ? 0u : below > 0 ? w[k] & ~0u << (8 * below) : w[k];
  }
  return make_uint4(kept[0], kept[1], kept[2], kept[3]);
}

// The CRC32C of the row_bytes bytes at p (the size the tables were loaded for),
// returned to every lane; all 32 lanes of the warp call it together. Each block
// of the row a lane hashes is also handed to sink(at, block), `at` its offset from
// the aligned address at or below p, as hashed (bytes before the row zeroed), and
// not the tail's bytes after the last whole aligned block.
template <class Sink>
__device__ inline uint32_t warp_crc32c_blocks(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane,
                                              const Sink& sink) {
  uint32_t block_table[kCrcBlockChunks], step_table[kCrcRegisterChunks];
#pragma unroll
  for (int c = 0; c < kCrcBlockChunks; ++c) block_table[c] = t.block[c][lane];
#pragma unroll
  for (int c = 0; c < kCrcRegisterChunks; ++c) step_table[c] = t.step[c][lane];

  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = begin + static_cast<uintptr_t>(row_bytes);
  const uintptr_t first = begin & ~uintptr_t{15};  // the aligned block holding the first byte
  const uintptr_t last = end & ~uintptr_t{15};     // the end of the last whole aligned block
  uint32_t raw = 0;
  if (last > begin) {
    // Steps so that the grid ends at `last`; lane l's block in step m starts `at`
    // bytes after `first` (before it if negative: a zero block, not read).
    const auto span = static_cast<int64_t>(last - first);
    const int64_t steps = (span + kCrcStepBytes - 1) / kCrcStepBytes;
    const int64_t lane_at = span - steps * kCrcStepBytes + kCrcBlockBytes * lane;
    const int head = static_cast<int>(begin - first);  // bytes of the first block before the row
    const auto load = [&](int64_t at) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (at >= 0 && at < span) {
        v = *reinterpret_cast<const uint4*>(first + static_cast<uintptr_t>(at));
        if (at == 0 && head != 0) v = zero_bytes_below(v, head);
      }
      return v;
    };
    // Four steps' loads in flight while the four before them are hashed.
    constexpr int kDepth = 4;
    uint4 v[kDepth];
#pragma unroll
    for (int k = 0; k < kDepth; ++k) v[k] = load(lane_at + k * kCrcStepBytes);
    uint32_t r = 0;
    for (int64_t m = 0; m < steps; m += kDepth) {
      uint4 next[kDepth];
#pragma unroll
      for (int k = 0; k < kDepth; ++k) next[k] = load(lane_at + (m + kDepth + k) * kCrcStepBytes);
#pragma unroll
      for (int k = 0; k < kDepth; ++k) {
        if (m + k < steps) {
          const int64_t at = lane_at + (m + k) * kCrcStepBytes;
          if (at >= 0) sink(at, v[k]);
          r = crc32c_step(step_table, r) ^ crc32c_block(block_table, v[k]);
        }
        v[k] = next[k];
      }
    }
    raw = crc32c::multiply(t.lane_shift[lane], r);
#pragma unroll
    for (int d = 1; d < kCrcLanes; d *= 2) raw ^= __shfl_xor_sync(0xffffffffu, raw, d);
  }
  // The bytes after `last` (all the row when it lies within one aligned block).
  const uintptr_t tail_begin = last > begin ? last : begin;
  const int tail = static_cast<int>(end - tail_begin);
  if (tail != 0) {
    uint32_t w[4] = {0, 0, 0, 0};
    const auto* bytes = reinterpret_cast<const uint8_t*>(tail_begin);
#pragma unroll
    for (int j = 0; j < kCrcBlockBytes; ++j) {
      const int from = j - (kCrcBlockBytes - tail);
      if (from >= 0) w[j / 4] |= static_cast<uint32_t>(bytes[from]) << (8 * (j % 4));
    }
    raw = crc32c::multiply(t.tail_shift[tail], raw) ^ crc32c_block(block_table, make_uint4(w[0], w[1], w[2], w[3]));
  }
  return ~(raw ^ t.init);
}

__device__ inline uint32_t warp_crc32c(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane) {
  return warp_crc32c_blocks(t, p, row_bytes, lane, [](int64_t, const uint4&) {});
}


__global__ void __launch_bounds__(256)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t* out) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % kCrcLanes;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / kCrcLanes; r < count;
       r += static_cast<int64_t>(gridDim.x) * 8) {
    const uint32_t crc = warp_crc32c(tables, rows[r], row_bytes, lane);
    if (lane == 0) out[r] = crc;
  }
}

}  // namespace

void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, cudaStream_t stream) {
  const int64_t blocks = (count + 7) / 8;
  crc32c_rows_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), 256, 0, stream>>>(
      reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes, out);
}

}  // namespace epcomm::kernels::crc32c::shuffle_only

// For the same comparison run: kernels/cuda/warp_crc32c.cuh's layout with a
// block's first 8 bytes and the register looked up by shuffle, its last 8 bytes
// in shared memory (to see whether the two kinds of lookup add up).
namespace epcomm::kernels::crc32c::hybrid {
namespace {
namespace crc32c = ::epcomm::kernels::crc32c;


constexpr int kCrcLanes = 32;
constexpr int kCrcBlockBytes = 16;
constexpr int kCrcStepBytes = kCrcLanes * kCrcBlockBytes;  // a warp's coalesced load
constexpr int kCrcChunkBits = 5;                           // a shuffle's 32 lanes
constexpr int kCrcShuffleBytes = 8;                        // a block's bytes looked up by shuffle
constexpr int kCrcBlockChunks = (8 * kCrcShuffleBytes + kCrcChunkBits - 1) / kCrcChunkBits;  // 13
constexpr int kCrcRegisterChunks = (32 + kCrcChunkBits - 1) / kCrcChunkBits;                // 7
constexpr int kCrcTableBytes = kCrcBlockBytes - kCrcShuffleBytes;  // looked up in shared memory
static_assert(kCrcShuffleBytes == 8 && kCrcTableBytes == 8, "crc32c_block takes words 0-1 by shuffle, 2-3 by table");

// The block's tables (filled from kCrc32cConstants) and the one value that
// depends on the row size. A kernel holds one in shared memory and fills it with
// load_crc32c_tables before a barrier.
struct Crc32cTables {
  uint32_t bytes[kCrcTableBytes][256];            // raw(v as byte 8 + j of a block)
  uint32_t block[kCrcBlockChunks][kCrcLanes];     // lane v's: raw(v in bits [5c, 5c + 5) of a block)
  uint32_t step[kCrcRegisterChunks][kCrcLanes];   // lane v's: x^(8*512) (v in bits [5c, 5c + 5) of r)
  uint32_t lane_shift[kCrcLanes];                 // x^(8 * 16 (31 - l)): past the lanes after l
  uint32_t tail_shift[kCrcBlockBytes];            // x^(8 t)
  uint32_t init;                                  // x^(8 row_bytes) * 0xFFFFFFFF
};

// What the compiler builds: the tables but init, and the powers that make init.
struct Crc32cConstants {
  Crc32cTables tables;
  uint32_t power[64];  // x^(8 * 2^i)
};

namespace crc_tables {

// The raw register of a block of `bytes` bytes whose only set bit is `bit`
// (bit k of byte k / 8: the bits of the block's little-endian words in order).
constexpr uint32_t bit_column(int bit, int bytes) {
  return crc32c::multiply(crc32c::shift_operator(static_cast<uint64_t>(bytes - 1 - bit / 8)),
                          crc32c::table_entry(1u << (bit % 8)));
}

constexpr Crc32cConstants make() {
  Crc32cConstants constants{};
  Crc32cTables& t = constants.tables;
  for (int j = 0; j < kCrcTableBytes; ++j) {
    const int byte = kCrcShuffleBytes + j;
    const uint32_t after = crc32c::shift_operator(static_cast<uint64_t>(kCrcBlockBytes - 1 - byte));
    for (uint32_t v = 0; v < 256; ++v) t.bytes[j][v] = crc32c::multiply(after, crc32c::table_entry(v));
  }
  for (int c = 0; c < kCrcBlockChunks; ++c) {
    for (int v = 0; v < kCrcLanes; ++v) {
      uint32_t e = 0;
      for (int b = 0; b < kCrcChunkBits; ++b) {
        const int bit = c * kCrcChunkBits + b;
        if ((v >> b & 1) != 0 && bit < 8 * kCrcShuffleBytes) e ^= bit_column(bit, kCrcBlockBytes);
      }
      t.block[c][v] = e;
    }
  }
  const uint32_t step = crc32c::shift_operator(kCrcStepBytes);
  for (int c = 0; c < kCrcRegisterChunks; ++c) {
    for (int v = 0; v < kCrcLanes; ++v) {
      uint32_t e = 0;
      for (int b = 0; b < kCrcChunkBits; ++b) {
        const int bit = c * kCrcChunkBits + b;
        if ((v >> b & 1) != 0 && bit < 32) e ^= crc32c::multiply(step, 1u << bit);
      }
      t.step[c][v] = e;
    }
  }
  for (int l = 0; l < kCrcLanes; ++l) {
    t.lane_shift[l] = crc32c::shift_operator(static_cast<uint64_t>(kCrcBlockBytes) * (kCrcLanes - 1 - l));
  }
  for (int i = 0; i < kCrcBlockBytes; ++i) t.tail_shift[i] = crc32c::shift_operator(static_cast<uint64_t>(i));
  uint32_t power = crc32c::shift_operator(1);
  for (int i = 0; i < 64; ++i) {
    constants.power[i] = power;
    power = crc32c::multiply(power, power);
  }
  return constants;
}

}  // namespace crc_tables

// Built by the compiler; copied into shared memory by every block that hashes.
__device__ const Crc32cConstants kCrc32cConstants = crc_tables::make();

// Every thread of the block calls it (blocks of at least 32 threads); the caller
// syncs before hashing.
__device__ inline void load_crc32c_tables(Crc32cTables& t, int64_t row_bytes) {
  constexpr int kWords = static_cast<int>(offsetof(Crc32cTables, init) / sizeof(uint32_t));
  const auto* from = reinterpret_cast<const uint32_t*>(&kCrc32cConstants.tables);
  auto* to = reinterpret_cast<uint32_t*>(&t);
  for (int i = threadIdx.x; i < kWords; i += blockDim.x) to[i] = from[i];
  if (threadIdx.x < kCrcLanes) {
    // x^(8 row_bytes): lane i multiplies the powers of bits i and i + 32 of
    // row_bytes, then the warp multiplies the lanes' products in a tree.
    const int i = static_cast<int>(threadIdx.x);
    const auto n = static_cast<uint64_t>(row_bytes);
    uint32_t x = (n >> i & 1u) != 0 ? kCrc32cConstants.power[i] : 1u << 31;  // 1u << 31: x^0
    if ((n >> (i + 32) & 1u) != 0) x = crc32c::multiply(x, kCrc32cConstants.power[i + 32]);
    for (int d = 1; d < kCrcLanes; d *= 2) x = crc32c::multiply(x, __shfl_xor_sync(0xffffffffu, x, d));
    if (i == 0) t.init = crc32c::multiply(x, 0xFFFFFFFFu);
  }
}

// raw(block): the chunks of its first 8 bytes looked up in the lanes' table
// registers (a chunk is the low 5 bits of the index passed: a shuffle's source
// lane is taken modulo 32), its last 8 bytes in the tables of bytes.
__device__ inline uint32_t crc32c_block(const Crc32cTables& t, const uint32_t (&table)[kCrcBlockChunks],
                                        const uint4& v) {
  const uint32_t w[2] = {v.x, v.y};
  uint32_t acc = 0;
#pragma unroll
  for (int c = 0; c < kCrcBlockChunks; ++c) {
    const int bit = c * kCrcChunkBits, k = bit / 32, o = bit % 32;
    const uint32_t index = o + kCrcChunkBits <= 32 || k == 1 ? w[k] >> o : __funnelshift_r(w[k], w[k + 1], o);
    acc ^= __shfl_sync(0xffffffffu, table[c], static_cast<int>(index));
  }
  return acc ^ t.bytes[0][v.z & 0xffu] ^ t.bytes[1][(v.z >> 8) & 0xffu] ^ t.bytes[2][(v.z >> 16) & 0xffu] ^
         t.bytes[3][v.z >> 24] ^ t.bytes[4][v.w & 0xffu] ^ t.bytes[5][(v.w >> 8) & 0xffu] ^
         t.bytes[6][(v.w >> 16) & 0xffu] ^ t.bytes[7][v.w >> 24];
}

// x^(8*512) r.
__device__ inline uint32_t crc32c_step(const uint32_t (&table)[kCrcRegisterChunks], uint32_t r) {
  uint32_t acc = 0;
#pragma unroll
  for (int c = 0; c < kCrcRegisterChunks; ++c) {
    acc ^= __shfl_sync(0xffffffffu, table[c], static_cast<int>(r >> (c * kCrcChunkBits)));
  }
  return acc;
}

// v with its bytes below `keep_from` (0..15) zeroed.
__device__ inline uint4 zero_bytes_below(const uint4& v, int keep_from) {
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  uint32_t kept[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int below = keep_from - 4 * k;  // bytes of word k to zero
    kept[k] = below >= 4 ? 0u : below > 0 ? w[k] & ~0u << (8 * below) : w[k];
  }
  return make_uint4(kept[0], kept[1], kept[2], kept[3]);
}

// The CRC32C of the row_bytes bytes at p (the size the tables were loaded for),
// returned to every lane; all 32 lanes of the warp call it together. Each block
// of the row a lane hashes is also handed to sink(at, block), `at` its offset from
// the aligned address at or below p, as hashed (bytes before the row zeroed), and
// not the tail's bytes after the last whole aligned block.
template <class Sink>
__device__ inline uint32_t warp_crc32c_blocks(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane,
                                              const Sink& sink) {
  uint32_t block_table[kCrcBlockChunks], step_table[kCrcRegisterChunks];
#pragma unroll
  for (int c = 0; c < kCrcBlockChunks; ++c) block_table[c] = t.block[c][lane];
#pragma unroll
  for (int c = 0; c < kCrcRegisterChunks; ++c) step_table[c] = t.step[c][lane];

  const auto begin = reinterpret_cast<uintptr_t>(p);
  const uintptr_t end = begin + static_cast<uintptr_t>(row_bytes);
  const uintptr_t first = begin & ~uintptr_t{15};  // the aligned block holding the first byte
  const uintptr_t last = end & ~uintptr_t{15};     // the end of the last whole aligned block
  uint32_t raw = 0;
  if (last > begin) {
    // Steps so that the grid ends at `last`; lane l's block in step m starts `at`
    // bytes after `first` (before it if negative: a zero block, not read).
    const auto span = static_cast<int64_t>(last - first);
    const int64_t steps = (span + kCrcStepBytes - 1) / kCrcStepBytes;
    const int64_t lane_at = span - steps * kCrcStepBytes + kCrcBlockBytes * lane;
    const int head = static_cast<int>(begin - first);  // bytes of the first block before the row
    const auto load = [&](int64_t at) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (at >= 0 && at < span) {
        v = *reinterpret_cast<const uint4*>(first + static_cast<uintptr_t>(at));
        if (at == 0 && head != 0) v = zero_bytes_below(v, head);
      }
      return v;
    };
    // Four steps' loads in flight while the four before them are hashed.
    constexpr int kDepth = 4;
    uint4 v[kDepth];
#pragma unroll
    for (int k = 0; k < kDepth; ++k) v[k] = load(lane_at + k * kCrcStepBytes);
    uint32_t r = 0;
    for (int64_t m = 0; m < steps; m += kDepth) {
      uint4 next[kDepth];
#pragma unroll
      for (int k = 0; k < kDepth; ++k) next[k] = load(lane_at + (m + kDepth + k) * kCrcStepBytes);
#pragma unroll
      for (int k = 0; k < kDepth; ++k) {
        if (m + k < steps) {
          const int64_t at = lane_at + (m + k) * kCrcStepBytes;
          if (at >= 0) sink(at, v[k]);
          r = crc32c_step(step_table, r) ^ crc32c_block(t, block_table, v[k]);
        }
        v[k] = next[k];
      }
    }
    raw = crc32c::multiply(t.lane_shift[lane], r);
#pragma unroll
    for (int d = 1; d < kCrcLanes; d *= 2) raw ^= __shfl_xor_sync(0xffffffffu, raw, d);
  }
  // The bytes after `last` (all the row when it lies within one aligned block).
  const uintptr_t tail_begin = last > begin ? last : begin;
  const int tail = static_cast<int>(end - tail_begin);
  if (tail != 0) {
    uint32_t w[4] = {0, 0, 0, 0};
    const auto* bytes = reinterpret_cast<const uint8_t*>(tail_begin);
#pragma unroll
    for (int j = 0; j < kCrcBlockBytes; ++j) {
      const int from = j - (kCrcBlockBytes - tail);
      if (from >= 0) w[j / 4] |= static_cast<uint32_t>(bytes[from]) << (8 * (j % 4));
    }
    raw = crc32c::multiply(t.tail_shift[tail], raw) ^ crc32c_block(t, block_table, make_uint4(w[0], w[1], w[2], w[3]));
  }
  return ~(raw ^ t.init);
}

__device__ inline uint32_t warp_crc32c(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane) {
  return warp_crc32c_blocks(t, p, row_bytes, lane, [](int64_t, const uint4&) {});
}


__global__ void __launch_bounds__(256)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t* out) {
  __shared__ Crc32cTables tables;
  load_crc32c_tables(tables, row_bytes);
  __syncthreads();
  const int lane = threadIdx.x % kCrcLanes;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / kCrcLanes; r < count;
       r += static_cast<int64_t>(gridDim.x) * 8) {
    const uint32_t crc = warp_crc32c(tables, rows[r], row_bytes, lane);
    if (lane == 0) out[r] = crc;
  }
}

}  // namespace

void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, cudaStream_t stream) {
  const int64_t blocks = (count + 7) / 8;
  crc32c_rows_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), 256, 0, stream>>>(
      reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes, out);
}

}  // namespace epcomm::kernels::crc32c::hybrid

