// SPDX-License-Identifier: MIT
// CRC32C (Castagnoli, the iSCSI/ext4 checksum), for checking blocks and rows that
// cross a node boundary or a node peer's memory (ExchangeConfig::checksum). The CRC
// itself is ISA-L's crc32_iscsi (docs/dependencies.md), which picks at run time the
// fastest code the CPU has (VPCLMULQDQ folding, the SSE4.2 instruction, a table).
#pragma once

#include <cstddef>
#include <cstdint>

namespace epcomm::detail {

// CRC32C of `bytes` bytes (initial value and final xor 0xFFFFFFFF, reflected
// polynomial 0x82F63B78): crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, std::size_t bytes);

// The checksum a writer takes of a block or row and its reader checks.
struct BlockChecksum {
  uint32_t crc;  // CRC32C of the bytes
  bool operator==(const BlockChecksum&) const = default;
};
BlockChecksum block_checksum(const void* data, std::size_t bytes);
// Copies `bytes` from src to dst (not overlapping) and returns the checksum of src,
// a cache-sized piece at a time: each piece is hashed right after it was copied,
// while it is still in cache, so checksumming bytes that are being copied anyway
// costs no second read of them from memory.
BlockChecksum copy_with_checksum(void* dst, const void* src, std::size_t bytes);

// The CRC32C of a concatenation from the CRC32Cs of its parts, for ranges hashed
// apart (rows split across threads): CRC32C(A B) from CRC32C(A), CRC32C(B) and the
// length of B, a multiplication by x^(8 |B|) modulo the polynomial (as zlib's
// crc32_combine does for its CRC-32). Appending parts of one length, make one
// Crc32cAppend for that length and reuse it: each append is then one
// multiplication.
class Crc32cAppend {
 public:
  explicit Crc32cAppend(std::size_t part_bytes);
  // CRC32C(A B) for crc_a = CRC32C(A), crc_b = CRC32C(B), |B| = part_bytes.
  uint32_t operator()(uint32_t crc_a, uint32_t crc_b) const;

 private:
  uint32_t shift_;  // x^(8 part_bytes) mod P, reflected
};
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, std::size_t bytes_b);

}  // namespace epcomm::detail
