// SPDX-License-Identifier: MIT
// CRC32C (Castagnoli, the iSCSI/ext4 checksum), for checking blocks that cross a
// node boundary. Debian packages no C/C++ CRC32C library, so it is here: the SSE4.2
// crc32 instruction where the CPU has it (8 bytes per instruction), else a table.
#pragma once

#include <cstddef>
#include <cstdint>

namespace epcomm::detail {

// CRC32C of `bytes` bytes (initial value and final xor 0xFFFFFFFF, reflected
// polynomial 0x82F63B78): crc32c("123456789", 9) == 0xE3069283.
uint32_t crc32c(const void* data, std::size_t bytes);
// The table version, whatever the CPU (for tests that compare the two).
uint32_t crc32c_table(const void* data, std::size_t bytes);
// Whether crc32c() uses the CPU's instruction.
bool crc32c_in_hardware();

// The checksum of an inter-node block: the CRC32C of each of its three parts (the
// first two floor(bytes / 24) * 8 bytes long, the third the rest). Three independent
// streams keep the instruction's pipeline full: about three times the throughput of
// one CRC32C over the whole block, with the same detection per part.
struct BlockChecksum {
  uint32_t part[3];
  bool operator==(const BlockChecksum&) const = default;
};
BlockChecksum block_checksum(const void* data, std::size_t bytes);
// Bytes in each part of a block of `bytes`: {first, second, third}.
void block_checksum_parts(std::size_t bytes, std::size_t part_bytes[3]);

}  // namespace epcomm::detail
