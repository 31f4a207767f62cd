// SPDX-License-Identifier: MIT
#include "util/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace epcomm::detail {
namespace {

constexpr uint32_t kPolynomial = 0x82F63B78u;  // reflected Castagnoli

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1u) ? kPolynomial : 0u);
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = make_table();

uint32_t table_update(uint32_t c, const unsigned char* p, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) c = kTable[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t sse42_update(uint32_t state, const unsigned char* p, std::size_t bytes) {
  uint64_t c = state;
  for (; bytes >= 8; bytes -= 8, p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    c = _mm_crc32_u64(c, word);
  }
  auto c32 = static_cast<uint32_t>(c);
  for (; bytes > 0; --bytes, ++p) c32 = _mm_crc32_u8(c32, *p);
  return c32;
}

// The three parts in one loop: three independent dependency chains.
__attribute__((target("sse4.2"))) BlockChecksum sse42_block(const unsigned char* p, const std::size_t part[3]) {
  const unsigned char *a = p, *b = p + part[0], *c = p + part[0] + part[1];
  uint64_t ca = 0xFFFFFFFFu, cb = 0xFFFFFFFFu, cc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < part[0]; i += 8) {
    uint64_t wa, wb, wc;
    std::memcpy(&wa, a + i, 8);
    std::memcpy(&wb, b + i, 8);
    std::memcpy(&wc, c + i, 8);
    ca = _mm_crc32_u64(ca, wa);
    cb = _mm_crc32_u64(cb, wb);
    cc = _mm_crc32_u64(cc, wc);
  }
  const uint32_t last = sse42_update(static_cast<uint32_t>(cc), c + part[0], part[2] - part[0]);
  return {{static_cast<uint32_t>(ca) ^ 0xFFFFFFFFu, static_cast<uint32_t>(cb) ^ 0xFFFFFFFFu, last ^ 0xFFFFFFFFu}};
}
#endif

}  // namespace

uint32_t crc32c_table(const void* data, std::size_t bytes) {
  return table_update(0xFFFFFFFFu, static_cast<const unsigned char*>(data), bytes) ^ 0xFFFFFFFFu;
}

bool crc32c_in_hardware() {
#if defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
#else
  return false;
#endif
}

uint32_t crc32c(const void* data, std::size_t bytes) {
#if defined(__x86_64__)
  if (crc32c_in_hardware()) {
    return sse42_update(0xFFFFFFFFu, static_cast<const unsigned char*>(data), bytes) ^ 0xFFFFFFFFu;
  }
#endif
  return crc32c_table(data, bytes);
}

void block_checksum_parts(std::size_t bytes, std::size_t part_bytes[3]) {
  part_bytes[0] = part_bytes[1] = bytes / 24 * 8;
  part_bytes[2] = bytes - 2 * part_bytes[0];
}

BlockChecksum block_checksum(const void* data, std::size_t bytes) {
  std::size_t part[3];
  block_checksum_parts(bytes, part);
  const auto* p = static_cast<const unsigned char*>(data);
#if defined(__x86_64__)
  if (crc32c_in_hardware()) return sse42_block(p, part);
#endif
  return {{crc32c_table(p, part[0]), crc32c_table(p + part[0], part[1]),
           crc32c_table(p + part[0] + part[1], part[2])}};
}

}  // namespace epcomm::detail
