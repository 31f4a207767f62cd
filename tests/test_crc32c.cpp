// SPDX-License-Identifier: MIT
// CRC32C against the published check value and a bit-at-a-time reference written
// here from the definition (no table, no instruction), on random lengths and
// alignments, the fused copy against memcpy and that reference, and the CRC of a
// concatenation combined from its parts' against the reference of the whole.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "common/crc32c_math.hpp"
#include "support/crc32c_bitwise.hpp"
#include "util/crc32c.hpp"

namespace {

using epcomm_test::crc32c_bitwise;

TEST(Crc32c, CheckValue) {
  const char text[] = "123456789";
  EXPECT_EQ(epcomm::detail::crc32c(text, 9), 0xE3069283u);
  EXPECT_EQ(epcomm::detail::crc32c(text, 0), 0u);
}

// Lengths up to 40 KB cover every code path of the library's short and long
// buffers and several copy pieces.
TEST(Crc32c, MatchesTheDefinitionOnRandomBlocks) {
  std::mt19937_64 rng(7);
  std::vector<unsigned char> buf(40000 + 16);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (int trial = 0; trial < 200; ++trial) {
    const std::size_t offset = rng() % 16;
    const std::size_t n = trial % 2 == 0 ? rng() % 4097 : rng() % 40001;
    const unsigned char* p = buf.data() + offset;
    EXPECT_EQ(epcomm::detail::crc32c(p, n), crc32c_bitwise(p, n)) << "offset " << offset << " length " << n;
  }
}

// The fused copy moves the same bytes as memcpy and returns the CRC32C of the
// source, whatever the length and the alignment of either side.
TEST(Crc32c, CopyWithChecksumCopiesAndHashesInOnePass) {
  std::mt19937_64 rng(13);
  std::vector<unsigned char> src(40000 + 16), dst(40000 + 16);
  for (auto& b : src) b = static_cast<unsigned char>(rng());
  for (int trial = 0; trial < 100; ++trial) {
    const std::size_t from = rng() % 16, to = rng() % 16;
    const std::size_t n = trial < 4 ? static_cast<std::size_t>(trial) * 7 : rng() % 40001;
    std::fill(dst.begin(), dst.end(), 0xEE);
    const epcomm::detail::BlockChecksum sum = epcomm::detail::copy_with_checksum(dst.data() + to, src.data() + from, n);
    EXPECT_EQ(sum.crc, crc32c_bitwise(src.data() + from, n)) << "length " << n;
    for (std::size_t i = 0; i < dst.size(); ++i) {
      const bool inside = i >= to && i < to + n;
      ASSERT_EQ(dst[i], inside ? src[from + i - to] : 0xEE) << "length " << n << " byte " << i;
    }
  }
}

// The CRC of a block from the CRCs of its parts, split at random points (empty
// parts included), equals the CRC of the whole taken by the definition.
TEST(Crc32c, CombiningPartsGivesTheWhole) {
  std::mt19937_64 rng(21);
  std::vector<unsigned char> buf(30000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (int trial = 0; trial < 100; ++trial) {
    const std::size_t n = rng() % (buf.size() + 1);
    std::vector<std::size_t> cuts{0, n};
    for (int k = trial % 5; k > 0; --k) cuts.push_back(n == 0 ? 0 : rng() % (n + 1));
    std::sort(cuts.begin(), cuts.end());
    uint32_t crc = epcomm::detail::crc32c(buf.data(), 0);
    for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
      const std::size_t part = cuts[k + 1] - cuts[k];
      crc = epcomm::detail::crc32c_combine(crc, crc32c_bitwise(buf.data() + cuts[k], part), part);
    }
    EXPECT_EQ(crc, crc32c_bitwise(buf.data(), n)) << "length " << n << ", " << cuts.size() - 1 << " parts";
  }
}

// Rows of one length appended with one Crc32cAppend, after a header of another.
TEST(Crc32c, AppendingRowsOfOneLength) {
  std::mt19937_64 rng(5);
  const std::size_t head = 68, row = 1000, rows = 13;
  std::vector<unsigned char> buf(head + rows * row);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  const epcomm::detail::Crc32cAppend append(row);
  uint32_t crc = crc32c_bitwise(buf.data(), head);
  for (std::size_t r = 0; r < rows; ++r) crc = append(crc, crc32c_bitwise(buf.data() + head + r * row, row));
  EXPECT_EQ(crc, crc32c_bitwise(buf.data(), buf.size()));
}

// The pieces the GPU's warps hash and join (kernels/common/crc32c_math.hpp): the
// table-driven byte update gives the library's CRC, and joining the CRCs of two
// adjacent pieces gives the CRC of both, for every split of random blocks.
TEST(Crc32c, TableUpdateAndJoinGiveTheLibrarysCrc) {
  namespace m = epcomm::kernels::crc32c;
  uint32_t table[256];
  for (uint32_t b = 0; b < 256; ++b) table[b] = m::table_entry(b);
  const auto table_crc = [&](const unsigned char* p, std::size_t n) {
    uint32_t reg = 0xFFFFFFFFu;
    for (std::size_t i = 0; i < n; ++i) reg = m::update_byte(table, reg, p[i]);
    return ~reg;
  };
  std::mt19937_64 rng(21);
  std::vector<unsigned char> buf(9000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t n = trial < 3 ? static_cast<std::size_t>(trial) : rng() % buf.size();
    const std::size_t split = n == 0 ? 0 : rng() % (n + 1);
    const unsigned char* p = buf.data();
    const uint32_t whole = epcomm::detail::crc32c(p, n);
    ASSERT_EQ(table_crc(p, n), whole) << "length " << n;
    const uint32_t joined = m::combine(table_crc(p, split), table_crc(p + split, n - split), m::shift_operator(n - split));
    ASSERT_EQ(joined, whole) << "length " << n << " split at " << split;
  }
}

TEST(Crc32c, EverySingleBitFlipChangesIt) {
  std::vector<unsigned char> block(257, 0x5a);
  const epcomm::detail::BlockChecksum clean = epcomm::detail::block_checksum(block.data(), block.size());
  for (std::size_t bit = 0; bit < block.size() * 8; ++bit) {
    block[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
    EXPECT_FALSE(epcomm::detail::block_checksum(block.data(), block.size()) == clean) << "bit " << bit;
    block[bit / 8] ^= static_cast<unsigned char>(1u << (bit % 8));
  }
}

}  // namespace
