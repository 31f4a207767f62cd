// SPDX-License-Identifier: MIT
// The device-free parts of the verbs transport: GID choice, the immediate's bit
// layout, and the offset math of a write (bounds, chunking).
#include <gtest/gtest.h>

#include <epcomm/error.hpp>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "exchange/internode.hpp"
#include "transport/verbs/device_locality.hpp"
#include "transport/verbs/gid_choice.hpp"
#include "transport/verbs/immediate.hpp"
#include "transport/verbs/write_plan.hpp"

namespace epcomm::detail {
namespace {

Gid ipv4_mapped(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return Gid{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d};
}
Gid link_local() { return Gid{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56}; }
Gid global_v6() { return Gid{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}; }

ErrorCode code_of(auto&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.code();
  }
  return ErrorCode{};
}

TEST(GidChoice, PrefersRoceV2Ipv4MappedOverEverythingElse) {
  // A soft-RoCE table as ibv_devinfo -v shows it, with a v1 twin of the IPv4 entry
  // in front (as mlx5 lists them).
  const std::vector<GidEntry> table{{0, GidType::kRoCEv2, link_local()},
                                    {1, GidType::kRoCEv1, ipv4_mapped(10, 0, 2, 15)},
                                    {2, GidType::kRoCEv2, global_v6()},
                                    {3, GidType::kRoCEv2, ipv4_mapped(10, 0, 2, 15)}};
  EXPECT_EQ(choose_gid_index(table, -1, "rxe0 port 1"), 3);
}

TEST(GidChoice, FallsBackToRoutableIpv6AndNeverLinkLocal) {
  const std::vector<GidEntry> table{{0, GidType::kRoCEv2, link_local()}, {5, GidType::kRoCEv2, global_v6()}};
  EXPECT_EQ(choose_gid_index(table, -1, "p"), 5);
  const std::vector<GidEntry> only_local{{0, GidType::kRoCEv2, link_local()}, {1, GidType::kRoCEv1, ipv4_mapped(1, 2, 3, 4)}};
  EXPECT_EQ(code_of([&] { choose_gid_index(only_local, -1, "p"); }), ErrorCode::kUnsupported);
}

TEST(GidChoice, ForcedIndexWinsButMustExist) {
  const std::vector<GidEntry> table{{0, GidType::kRoCEv2, link_local()}, {1, GidType::kRoCEv2, ipv4_mapped(10, 0, 0, 1)}};
  EXPECT_EQ(choose_gid_index(table, 0, "p"), 0);
  EXPECT_EQ(code_of([&] { choose_gid_index(table, 7, "p"); }), ErrorCode::kInvalidArgument);
  const std::vector<GidEntry> zero{{2, GidType::kRoCEv2, Gid{}}};
  EXPECT_EQ(code_of([&] { choose_gid_index(zero, 2, "p"); }), ErrorCode::kInvalidArgument);
}

TEST(GidChoice, ErrorListsTheTable) {
  const std::vector<GidEntry> table{{0, GidType::kRoCEv1, link_local()}};
  try {
    choose_gid_index(table, -1, "mlx5_0 port 1");
    FAIL() << "no routable GID was accepted";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("mlx5_0 port 1"), std::string::npos) << what;
    EXPECT_NE(what.find("[0] fe80:0000:0000:0000:5054:00ff:fe12:3456 RoCE v1"), std::string::npos) << what;
    EXPECT_NE(what.find("EPCOMM_IB_GID_INDEX"), std::string::npos) << what;
  }
}

TEST(GidChoice, Formats) {
  EXPECT_EQ(format_gid(ipv4_mapped(10, 0, 2, 15)), "::ffff:10.0.2.15");
  EXPECT_TRUE(gid_is_link_local(link_local()));
  EXPECT_FALSE(gid_is_link_local(global_v6()));
  EXPECT_TRUE(gid_is_zero(Gid{}));
}

TEST(Immediate, RoundTripsEveryFieldAtItsLimits) {
  for (uint64_t seq : {uint64_t{0}, uint64_t{1}, uint64_t{0xffff}, uint64_t{123456789}}) {
    for (uint32_t kind : {0u, 1u, Immediate::kMaxKind}) {
      for (uint32_t part : {0u, 17u, Immediate::kMaxPart}) {
        const Immediate d = decode_immediate(encode_immediate(seq, kind, part));
        EXPECT_EQ(d.seq, seq & 0xffff);
        EXPECT_EQ(d.kind, kind);
        EXPECT_EQ(d.part, part);
        EXPECT_TRUE(immediate_seq_matches(d.seq, seq));
      }
    }
  }
}

TEST(Immediate, BitLayoutIsFixed) {
  // The layout is a wire format between ranks: pin it.
  EXPECT_EQ(encode_immediate(0x1234, 0x5, 0x678), 0x12345678u);
  EXPECT_EQ(encode_immediate(0x11234, 0x5, 0x678), 0x12345678u);  // seq wraps at 2^16
}

TEST(Immediate, SequenceWrapIsDetected) {
  const uint32_t wire = decode_immediate(encode_immediate(70000, 0, 0)).seq;
  EXPECT_TRUE(immediate_seq_matches(wire, 70000));
  EXPECT_FALSE(immediate_seq_matches(wire, 70001));
  EXPECT_TRUE(immediate_seq_matches(wire, 70000 + 65536));  // only mod 2^16 is carried
}

TEST(Immediate, OutOfRangeFieldsAreRefused) {
  EXPECT_EQ(code_of([] { encode_immediate(0, Immediate::kMaxKind + 1, 0); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([] { encode_immediate(0, 0, Immediate::kMaxPart + 1); }), ErrorCode::kInvalidArgument);
}

TEST(WritePlan, OneChunkWhenItFits) {
  std::vector<WriteChunk> out;
  plan_write(4096, 100, RemoteRegion{0x10000, 8192, 7}, 200, 1000, 1 << 20, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].local_offset, 100u);
  EXPECT_EQ(out[0].remote_addr, 0x10000u + 200);
  EXPECT_EQ(out[0].length, 1000u);
  EXPECT_TRUE(out[0].last);
}

TEST(WritePlan, SplitsAtTheMaximumMessageSize) {
  std::vector<WriteChunk> out;
  plan_write(100, 10, RemoteRegion{1000, 100, 7}, 5, 25, 10, out);
  ASSERT_EQ(out.size(), 3u);
  const uint64_t lens[] = {10, 10, 5};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i].local_offset, 10 + 10 * i);
    EXPECT_EQ(out[i].remote_addr, 1000 + 5 + 10 * i);
    EXPECT_EQ(out[i].length, lens[i]);
    EXPECT_EQ(out[i].last, i == 2);
  }
  out.clear();
  plan_write(100, 0, RemoteRegion{0, 100, 7}, 0, 20, 10, out);  // exact multiple: no empty tail
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[1].last);
  EXPECT_EQ(out[1].length, 10u);
}

TEST(WritePlan, ZeroLengthIsOneSignal) {
  std::vector<WriteChunk> out;
  plan_write(16, 16, RemoteRegion{64, 16, 7}, 16, 0, 8, out);  // at the very end is allowed
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].length, 0u);
  EXPECT_TRUE(out[0].last);
}

TEST(WritePlan, RangesOutsideTheirRegionsAreRefused) {
  std::vector<WriteChunk> out;
  const RemoteRegion remote{0, 100, 7};
  EXPECT_EQ(code_of([&] { plan_write(100, 90, remote, 0, 11, 64, out); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { plan_write(100, 0, remote, 95, 6, 64, out); }), ErrorCode::kInvalidArgument);
  // offset + length overflows 64 bits: still refused, not wrapped into range.
  const uint64_t huge = std::numeric_limits<uint64_t>::max() - 3;
  EXPECT_EQ(code_of([&] { plan_write(100, 8, remote, 0, huge, 64, out); }), ErrorCode::kInvalidArgument);
  EXPECT_EQ(code_of([&] { plan_write(100, 0, remote, huge, 8, 64, out); }), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(out.empty());
}

// Receive buffers hold one fixed block per remote node, own node skipped: the
// sender computes the receiver's offset alone, and blocks never overlap.
TEST(BlockOffset, EachRemoteNodeHasItsOwnBlock) {
  const std::size_t block = 1000;
  for (int nodes = 2; nodes <= 5; ++nodes) {
    for (int to = 0; to < nodes; ++to) {
      std::vector<std::size_t> seen;
      for (int from = 0; from < nodes; ++from) {
        if (from == to) continue;
        const std::size_t at = block_offset(from, to, block);
        EXPECT_EQ(at % block, 0u);
        EXPECT_LE(at + block, (nodes - 1) * block) << "from " << from << " to " << to;
        seen.push_back(at);
      }
      std::sort(seen.begin(), seen.end());
      EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << nodes << " nodes, to " << to;
    }
  }
  EXPECT_EQ(block_offset(0, 1, block), 0u);
  EXPECT_EQ(block_offset(2, 1, block), block);
  EXPECT_EQ(block_offset(3, 0, block), 2 * block);
}

struct Bitmap {
  explicit Bitmap(const char* list) : b(hwloc_bitmap_alloc()) { hwloc_bitmap_list_sscanf(b, list); }
  ~Bitmap() { hwloc_bitmap_free(b); }
  hwloc_bitmap_t b;
};

TEST(DeviceLocality, AdapterOnTheRanksSocketScoresHighest) {
  const Bitmap rank("8-11"), socket1("8-15"), socket0("0-7"), straddling("4-9"), none("");
  EXPECT_EQ(locality_score(rank.b, socket1.b), 2);
  EXPECT_EQ(locality_score(rank.b, straddling.b), 1);
  EXPECT_EQ(locality_score(rank.b, socket0.b), 0);
  EXPECT_EQ(locality_score(rank.b, none.b), 0);  // no sysfs data: no preference
  EXPECT_EQ(locality_score(none.b, socket1.b), 0);
}

}  // namespace
}  // namespace epcomm::detail
