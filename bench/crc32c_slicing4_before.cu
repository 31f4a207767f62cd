// SPDX-License-Identifier: MIT
// For one comparison run only: the slicing-by-4 warp CRC32C that
// kernels/cuda/warp_crc32c.cuh replaces (each lane a contiguous piece, tables of
// bytes in shared memory), so epcomm-codec-gpu-bench can time both in one run.
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

// For the same comparison run: the coalesced layout of kernels/cuda/warp_crc32c.cuh
// with its lookups in shared-memory tables of bytes (slicing by 16 for a block,
// by 4 for the step) instead of shuffles; aligned rows of whole blocks only.
namespace epcomm::kernels::crc32c::lds16 {
namespace {

namespace m = ::epcomm::kernels::crc32c;

struct Tables {
  uint32_t block[16][256];
  uint32_t step[4][256];
  uint32_t lane_shift[32];
};

constexpr Tables make() {
  Tables t{};
  for (int j = 0; j < 16; ++j) {
    const uint32_t k = m::shift_operator(static_cast<uint64_t>(15 - j));
    for (uint32_t v = 0; v < 256; ++v) t.block[j][v] = m::multiply(k, m::table_entry(v));
  }
  const uint32_t step = m::shift_operator(512);
  for (int j = 0; j < 4; ++j) {
    for (uint32_t v = 0; v < 256; ++v) t.step[j][v] = m::multiply(step, v << (8 * j));
  }
  for (int l = 0; l < 32; ++l) t.lane_shift[l] = m::shift_operator(static_cast<uint64_t>(16) * (31 - l));
  return t;
}

__device__ const Tables kTables = make();

__device__ inline uint32_t word_bytes(const uint32_t (*table)[256], uint32_t w) {
  return table[0][w & 0xffu] ^ table[1][(w >> 8) & 0xffu] ^ table[2][(w >> 16) & 0xffu] ^ table[3][w >> 24];
}

__global__ void __launch_bounds__(256)
    crc32c_rows_kernel(const uint8_t* const* rows, int64_t count, int64_t row_bytes, uint32_t init, uint32_t* out) {
  __shared__ Tables t;
  {
    const auto* from = reinterpret_cast<const uint32_t*>(&kTables);
    auto* to = reinterpret_cast<uint32_t*>(&t);
    for (int i = threadIdx.x; i < static_cast<int>(sizeof(Tables) / 4); i += blockDim.x) to[i] = from[i];
  }
  __syncthreads();
  const int lane = threadIdx.x % 32;
  const int64_t steps = (row_bytes + 511) / 512;
  const int64_t lane_at = row_bytes - steps * 512 + 16 * lane;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * 8 + threadIdx.x / 32; r < count;
       r += static_cast<int64_t>(gridDim.x) * 8) {
    const uint8_t* p = rows[r];
    uint32_t reg = 0;
    int64_t s = 0;
    for (; s + 4 <= steps; s += 4) {
      uint4 v[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t at = lane_at + (s + k) * 512;
        v[k] = at >= 0 ? *reinterpret_cast<const uint4*>(p + at) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        reg = word_bytes(t.step, reg) ^ word_bytes(&t.block[0], v[k].x) ^ word_bytes(&t.block[4], v[k].y) ^
              word_bytes(&t.block[8], v[k].z) ^ word_bytes(&t.block[12], v[k].w);
      }
    }
    for (; s < steps; ++s) {
      const int64_t at = lane_at + s * 512;
      const uint4 v = at >= 0 ? *reinterpret_cast<const uint4*>(p + at) : make_uint4(0, 0, 0, 0);
      reg = word_bytes(t.step, reg) ^ word_bytes(&t.block[0], v.x) ^ word_bytes(&t.block[4], v.y) ^
            word_bytes(&t.block[8], v.z) ^ word_bytes(&t.block[12], v.w);
    }
    uint32_t raw = m::multiply(t.lane_shift[lane], reg);
    for (int d = 1; d < 32; d *= 2) raw ^= __shfl_xor_sync(0xffffffffu, raw, d);
    if (lane == 0) out[r] = ~(raw ^ init);
  }
}

}  // namespace

void crc32c_row_list(const void* const* rows, int64_t count, int64_t row_bytes, uint32_t* out, cudaStream_t stream) {
  const int64_t blocks = (count + 7) / 8;
  crc32c_rows_kernel<<<static_cast<unsigned>(blocks < (1 << 20) ? blocks : (1 << 20)), 256, 0, stream>>>(
      reinterpret_cast<const uint8_t* const*>(rows), count, row_bytes,
      m::multiply(m::shift_operator(static_cast<uint64_t>(row_bytes)), 0xFFFFFFFFu), out);
}

}  // namespace epcomm::kernels::crc32c::lds16
