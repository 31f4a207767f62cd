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

}  // namespace epcomm::detail
