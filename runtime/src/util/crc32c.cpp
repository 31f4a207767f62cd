// SPDX-License-Identifier: MIT
#include "util/crc32c.hpp"

#include <isa-l/crc.h>

#include <algorithm>
#include <cstring>

#include "common/crc32c_math.hpp"

namespace epcomm::detail {
namespace {

// ISA-L takes an int length: longer ranges go in pieces. Copies go in pieces that
// stay in the L1/L2 cache between the copy and the hash.
constexpr std::size_t kCallBytes = std::size_t{1} << 30;
constexpr std::size_t kCopyPieceBytes = std::size_t{16} << 10;

// The CRC register after `bytes` more bytes (crc32_iscsi neither inverts its input
// register nor its result).
uint32_t update(uint32_t state, const unsigned char* p, std::size_t bytes) {
  while (bytes > 0) {
    const std::size_t n = std::min(bytes, kCallBytes);
    // ISA-L's prototype takes a non-const buffer; it only reads it.
    state = crc32_iscsi(const_cast<unsigned char*>(p), static_cast<int>(n), state);
    p += n;
    bytes -= n;
  }
  return state;
}

}  // namespace

// The GF(2) arithmetic is the GPU kernels' (kernels/common/crc32c_math.hpp), so
// host and GPU combine CRCs alike.
Crc32cAppend::Crc32cAppend(std::size_t part_bytes) : shift_(kernels::crc32c::shift_operator(part_bytes)) {}

// The pre- and post-inversions cancel: CRC32C(A B) = CRC32C(A) x^(8|B|) + CRC32C(B).
uint32_t Crc32cAppend::operator()(uint32_t crc_a, uint32_t crc_b) const {
  return kernels::crc32c::combine(crc_a, crc_b, shift_);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, std::size_t bytes_b) {
  return Crc32cAppend(bytes_b)(crc_a, crc_b);
}

uint32_t crc32c(const void* data, std::size_t bytes) {
  return ~update(0xFFFFFFFFu, static_cast<const unsigned char*>(data), bytes);
}

BlockChecksum block_checksum(const void* data, std::size_t bytes) { return {crc32c(data, bytes)}; }

BlockChecksum copy_with_checksum(void* dst, const void* src, std::size_t bytes) {
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  uint32_t state = 0xFFFFFFFFu;
  for (std::size_t at = 0; at < bytes; at += kCopyPieceBytes) {
    const std::size_t n = std::min(kCopyPieceBytes, bytes - at);
    std::memcpy(d + at, s + at, n);
    state = update(state, s + at, n);
  }
  return {~state};
}

}  // namespace epcomm::detail
