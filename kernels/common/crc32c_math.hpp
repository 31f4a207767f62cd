// SPDX-License-Identifier: MIT
// CRC32C (Castagnoli: reflected polynomial 0x82F63B78, initial value and final xor
// 0xFFFFFFFF; the checksum of runtime/src/util/crc32c.hpp) for code that runs on
// the GPU as well as the host: a byte-at-a-time update from a 256-entry table, and
// the combination of the CRCs of two adjacent pieces, CRC(A || B) from CRC(A),
// CRC(B) and the length of B, which lets the lanes of a warp hash parts of a row
// each and join them. The combination multiplies in GF(2)[x] modulo the
// polynomial (x^(8 len(B)) * CRC(A)); the pre- and post-inversions cancel, as in
// zlib's crc32_combine. tests/test_crc32c.cpp checks both against the library's
// CRC (ISA-L) on the host. All constexpr: the GPU's lookup tables
// (cuda/warp_crc32c.cuh) are built from them by the compiler.
#pragma once

#include "host_device.hpp"

namespace epcomm::kernels::crc32c {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected

// Entry b: the register after one byte b from a zero register.
EPCOMM_HD constexpr uint32_t table_entry(uint32_t b) {
  uint32_t c = b;
  for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPolynomial : c >> 1;
  return c;
}

// The register after `byte`, with table[b] == table_entry(b).
EPCOMM_HD constexpr uint32_t update_byte(const uint32_t* table, uint32_t reg, uint8_t byte) {
  return table[(reg ^ byte) & 0xffu] ^ (reg >> 8);
}

// a * b modulo the polynomial, both in the reflected representation (x^0 is bit 31).
EPCOMM_HD constexpr uint32_t multiply(uint32_t a, uint32_t b) {
  uint32_t product = 0;
  for (uint32_t m = 1u << 31; m != 0; m >>= 1) {
    if (a & m) product ^= b;
    b = (b & 1u) ? (b >> 1) ^ kPolynomial : b >> 1;
  }
  return product;
}

// x^(8 bytes) modulo the polynomial: the operator that moves a CRC past `bytes`
// bytes. Square-and-multiply over the bits of bytes, from x^8.
EPCOMM_HD constexpr uint32_t shift_operator(uint64_t bytes) {
  uint32_t result = 1u << 31;  // x^0
  uint32_t power = 1u << 23;   // x^8
  for (; bytes != 0; bytes >>= 1) {
    if (bytes & 1u) result = multiply(power, result);
    power = multiply(power, power);
  }
  return result;
}

// CRC(A || B) from CRC(A), CRC(B) and shift_operator(len(B)).
EPCOMM_HD constexpr uint32_t combine(uint32_t crc_a, uint32_t crc_b, uint32_t shift_b) {
  return multiply(shift_b, crc_a) ^ crc_b;
}

}  // namespace epcomm::kernels::crc32c
