// SPDX-License-Identifier: MIT
// CRC32C computed a bit at a time from its definition (reflected polynomial
// 0x82F63B78, initial value and final xor 0xFFFFFFFF), with no table and no
// instruction: the independent reference the host (ISA-L) and GPU CRCs are
// checked against.
#pragma once

#include <cstddef>
#include <cstdint>

namespace epcomm_test {

inline uint32_t crc32c_bitwise(const unsigned char* p, std::size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

}  // namespace epcomm_test
