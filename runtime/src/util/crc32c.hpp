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

}  // namespace epcomm::detail
