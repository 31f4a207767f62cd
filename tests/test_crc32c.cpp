// SPDX-License-Identifier: MIT
// CRC32C against the published check value and a bit-at-a-time reference written
// here from the definition (no table, no instruction), on random lengths and
// alignments; the instruction and table versions must agree.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "util/crc32c.hpp"

namespace {

uint32_t crc32c_bitwise(const unsigned char* p, std::size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
  }
  return ~c;
}

TEST(Crc32c, CheckValue) {
  const char text[] = "123456789";
  EXPECT_EQ(epcomm::detail::crc32c(text, 9), 0xE3069283u);
  EXPECT_EQ(epcomm::detail::crc32c_table(text, 9), 0xE3069283u);
  EXPECT_EQ(epcomm::detail::crc32c(text, 0), 0u);
}

TEST(Crc32c, MatchesTheDefinitionOnRandomBlocks) {
  std::mt19937_64 rng(7);
  std::vector<unsigned char> buf(4096 + 16);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t offset = rng() % 16, n = rng() % 4097;
    const unsigned char* p = buf.data() + offset;
    const uint32_t want = crc32c_bitwise(p, n);
    EXPECT_EQ(epcomm::detail::crc32c(p, n), want) << "offset " << offset << " length " << n;
    EXPECT_EQ(epcomm::detail::crc32c_table(p, n), want) << "offset " << offset << " length " << n;
  }
}

// The block checksum is the CRC32C of each part, the parts tiling the block.
TEST(Crc32c, BlockChecksumIsTheCrcOfEachPart) {
  std::mt19937_64 rng(11);
  std::vector<unsigned char> buf(20000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{23}, std::size_t{24}, std::size_t{25},
                        std::size_t{4096}, std::size_t{19999}}) {
    std::size_t part[3];
    epcomm::detail::block_checksum_parts(n, part);
    ASSERT_EQ(part[0] + part[1] + part[2], n);
    const epcomm::detail::BlockChecksum sum = epcomm::detail::block_checksum(buf.data(), n);
    std::size_t at = 0;
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(sum.part[k], crc32c_bitwise(buf.data() + at, part[k])) << "length " << n << " part " << k;
      at += part[k];
    }
  }
}

TEST(Crc32c, EverySingleBitFlipChangesIt) {
  std::vector<unsigned char> block(257, 0x5a);
  const uint32_t clean = epcomm::detail::crc32c(block.data(), block.size());
  const epcomm::detail::BlockChecksum clean_block = epcomm::detail::block_checksum(block.data(), block.size());
  for (std::size_t bit = 0; bit < block.size() * 8; ++bit) {
    block[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    EXPECT_NE(epcomm::detail::crc32c(block.data(), block.size()), clean) << "bit " << bit;
    EXPECT_FALSE(epcomm::detail::block_checksum(block.data(), block.size()) == clean_block) << "bit " << bit;
    block[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
  }
}

}  // namespace
