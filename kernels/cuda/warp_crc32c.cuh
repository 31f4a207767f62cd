// SPDX-License-Identifier: MIT
// The CRC32C of one row by the 32 lanes of a warp, for every kernel that hashes
// rows (checksum_rows.cu, and the node peer checksums of the exchange's row
// writes and reads): each lane hashes a contiguous piece, then the 32 CRCs are
// joined in a tree of shuffles (crc32c_math.hpp: CRC(A || B) from CRC(A), CRC(B)
// and len(B)). Equal to the host's checksum (runtime/src/util/crc32c.hpp), so a
// row hashed on one side can be checked on the other.
//
// Pieces are a multiple of 16 bytes long: on a row whose size and address are
// multiples of 16 a lane reads its piece 64 bytes at a time in four 16-byte loads,
// all in flight at once, and folds each 4-byte word in with four lookups that do
// not wait on each other (slicing by 4: tables in shared memory); other rows are
// read and folded a byte at a time. (A byte at a time from global memory, each
// load waiting for the last, made the hash, not the copy, the row's cost.)
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/crc32c_math.hpp"
#include "epcomm_kernels/cuda_plan.hpp"

namespace epcomm::kernels::cuda::detail {

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
    uint32_t c = crc32c::table_entry(static_cast<uint32_t>(i));
    t.table[0][i] = c;
    for (int k = 1; k < 4; ++k) {
      c = crc32c::table_entry(c & 0xffu) ^ (c >> 8);  // one more zero byte
      t.table[k][i] = c;
    }
  }
  if (threadIdx.x < kCrcLevels) {
    t.shift[threadIdx.x] = crc32c::shift_operator(static_cast<uint64_t>(crc32c_piece(row_bytes)) << threadIdx.x);
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
    for (int64_t i = begin; i < end; ++i) reg = crc32c::update_byte(t.table[0], reg, p[i]);
  }
  uint32_t crc = end > begin ? ~reg : 0u;  // 0 for an empty piece
  for (int level = 0; level < kCrcLevels; ++level) {
    const uint32_t right = __shfl_down_sync(0xffffffffu, crc, 1 << level);
    if (lane % (2 << level) == 0) crc = crc32c::combine(crc, right, t.shift[level]);
  }
  return __shfl_sync(0xffffffffu, crc, 0);
}

// The node peer checksums' report (cuda_plan.hpp): the first caller records a
// mismatch of `row` in `owner`'s slot, or a row it signed (fault injection).
__device__ inline void record_mismatch(const ChecksumReport& report, int owner, int64_t row, uint32_t got,
                                       uint32_t expected) {
  if (atomicCAS(&report.claims[0], 0, 1) != 0) return;
  ChecksumRecord* r = report.record;
  r->owner = owner;
  r->row = row;
  r->got = got;
  r->expected = expected;
  __threadfence_system();
  *static_cast<volatile int32_t*>(&r->found) = 1;
}
__device__ inline void note_signed_row(const ChecksumReport& report, const uint8_t* row) {
  if (atomicCAS(&report.claims[1], 0, 1) != 0) return;
  report.record->signed_row = reinterpret_cast<unsigned long long>(row);
}

}  // namespace epcomm::kernels::cuda::detail
