// SPDX-License-Identifier: MIT
// The CRC32C of one row by the 32 lanes of a warp, for every kernel that hashes
// rows (checksum_rows.cu, and the node peer checksums of the exchange's row
// writes and reads). Equal to the host's checksum (runtime/src/util/crc32c.hpp),
// so a row hashed on one side can be checked on the other.
//
// The CRC is linear over GF(2) (crc32c_math.hpp), and that is all this uses:
// - Raw registers. raw(M) is the register after M from a zero register; then
//   CRC(M) = ~(raw(M) ^ x^(8 len M) * 0xFFFFFFFF), raw(A || B) = x^(8 len B) raw(A)
//   ^ raw(B), and leading zero bytes leave raw unchanged.
// - 16-byte blocks, read as the warp reads a row it copies: in step m lane l reads
//   the 16 bytes at 512 m + 16 l, one coalesced 512-byte load per warp, several in
//   flight. Each lane keeps the raw register of its own blocks with the 496 bytes
//   between them taken as zeros: r <- x^(8*512) r ^ raw(block). The row's raw
//   register is the XOR of the lanes' registers, each moved past the bytes after
//   its last block (one multiplication a lane, then 5 shuffles).
// - Tables of bytes in shared memory. raw(block) is linear in the block's bytes:
//   the XOR over its 16 bytes of the raw register of a block holding only that
//   byte (slicing by 16), and x^(8*512) r likewise over r's 4 bytes: 20 lookups a
//   block, none waiting on another, and only the 4 of r on the dependence chain
//   from one block to the next. (The lanes look up random entries, so they
//   conflict on the banks; lookups by shuffle from lanes that hold the entries in
//   registers avoid that but need 33 a block and 33 registers a thread, and hash
//   no faster: epcomm-codec-gpu-bench --checksum, docs/failures.md. The kernels
//   that hash also sum or copy rows, and want few registers.)
// - Any alignment and size at the same speed. The 16-byte grid ends where the
//   row's last whole aligned block ends (each lane's first steps fall before the
//   row on short rows: zeros, which leave the register zero, and no load); the
//   block holding the row's first byte is read whole with the bytes before the
//   row zeroed (leading zeros again), and the at most 15 bytes after the last
//   aligned block are hashed as one block of leading zeros then those bytes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/crc32c_math.hpp"
#include "epcomm_kernels/cuda_plan.hpp"

namespace epcomm::kernels::cuda::detail {

constexpr int kCrcLanes = 32;
constexpr int kCrcBlockBytes = 16;
constexpr int kCrcStepBytes = kCrcLanes * kCrcBlockBytes;  // a warp's coalesced load

// The block's tables (filled from kCrc32cConstants) and the one value that
// depends on the row size. A kernel holds one in shared memory and fills it with
// load_crc32c_tables before a barrier.
struct Crc32cTables {
  uint32_t block[kCrcBlockBytes][256];  // raw(a block whose only nonzero byte is j, v)
  uint32_t step[4][256];                // x^(8*512) (v << 8 j)
  uint32_t lane_shift[kCrcLanes];       // x^(8 * 16 (31 - l)): past the lanes after l
  uint32_t tail_shift[kCrcBlockBytes];  // x^(8 t)
  uint32_t init;                        // x^(8 row_bytes) * 0xFFFFFFFF
};

// What the compiler builds: the tables but init, and the powers that make init.
struct Crc32cConstants {
  Crc32cTables tables;
  uint32_t power[64];  // x^(8 * 2^i)
};

namespace crc_tables {

constexpr Crc32cConstants make() {
  Crc32cConstants constants{};
  Crc32cTables& t = constants.tables;
  for (int j = 0; j < kCrcBlockBytes; ++j) {
    const uint32_t after = crc32c::shift_operator(static_cast<uint64_t>(kCrcBlockBytes - 1 - j));
    for (uint32_t v = 0; v < 256; ++v) t.block[j][v] = crc32c::multiply(after, crc32c::table_entry(v));
  }
  const uint32_t step = crc32c::shift_operator(kCrcStepBytes);
  for (int j = 0; j < 4; ++j) {
    for (uint32_t v = 0; v < 256; ++v) t.step[j][v] = crc32c::multiply(step, v << (8 * j));
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

// The bytes of w looked up in four of the tables.
__device__ inline uint32_t crc32c_bytes(const uint32_t (*table)[256], uint32_t w) {
  return table[0][w & 0xffu] ^ table[1][(w >> 8) & 0xffu] ^ table[2][(w >> 16) & 0xffu] ^ table[3][w >> 24];
}

// raw(block).
__device__ inline uint32_t crc32c_block(const Crc32cTables& t, const uint4& v) {
  return crc32c_bytes(&t.block[0], v.x) ^ crc32c_bytes(&t.block[4], v.y) ^ crc32c_bytes(&t.block[8], v.z) ^
         crc32c_bytes(&t.block[12], v.w);
}

// x^(8*512) r.
__device__ inline uint32_t crc32c_step(const Crc32cTables& t, uint32_t r) { return crc32c_bytes(t.step, r); }

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
          r = crc32c_step(t, r) ^ crc32c_block(t, v[k]);
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
    raw = crc32c::multiply(t.tail_shift[tail], raw) ^ crc32c_block(t, make_uint4(w[0], w[1], w[2], w[3]));
  }
  return ~(raw ^ t.init);
}

__device__ inline uint32_t warp_crc32c(const Crc32cTables& t, const uint8_t* p, int64_t row_bytes, int lane) {
  return warp_crc32c_blocks(t, p, row_bytes, lane, [](int64_t, const uint4&) {});
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
