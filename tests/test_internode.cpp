// SPDX-License-Identifier: MIT
// The inter-node tier on its own, without an exchange: regions registered, one
// block sent to every rail peer and received from each, the bytes checked against
// what the sender's rank and the destination make (computed here, not read back
// from the tier). The tier is the one make_internode picks for this group (verbs
// where a port is up, else MPI).
#include <gtest/gtest.h>

#include <epcomm/epcomm.hpp>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "exchange/internode_factory.hpp"
#include "support/mpi_test.hpp"

namespace epcomm_test {
namespace {

using epcomm::detail::BlockKind;
using epcomm::detail::GroupState;
using epcomm::detail::InterNode;
using epcomm::detail::InterNodeSetup;
using epcomm::detail::RegionId;
using epcomm::detail::block_offset;

constexpr std::size_t kBlockBytes = 1000;

// Byte i of the block that rank `from` sends to node `to`.
std::byte expected_byte(int from, int to, std::size_t i) {
  return static_cast<std::byte>((from * 131 + to * 31 + i * 7) % 251);
}

class InterNodeTest : public MpiTest {};

TEST_F(InterNodeTest, BlocksReachEveryRailPeerAtTheirOffsets) {
  epcomm::Group group(MPI_COMM_WORLD);
  const GroupState& g = *group.state();
  if (g.num_nodes < 2) GTEST_SKIP() << "one node: nothing crosses the inter-node tier";
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Comm_dup(g.comm, &comm);
  const std::size_t region_bytes = (g.num_nodes - 1) * kBlockBytes;
  std::vector<std::byte> send(region_bytes), recv(region_bytes, std::byte{0xee});
  RegionId from = -1, into = -1;
  {
    const InterNodeSetup setup{g, comm, 0, false, 1, true};
    std::unique_ptr<InterNode> net = epcomm::detail::make_internode(setup, [&](InterNode& tier) {
      from = tier.register_region(send.data(), send.size(), epcomm::MemorySpace::kHost);
      into = tier.register_region(recv.data(), recv.size(), epcomm::MemorySpace::kHost);
    });
    ASSERT_EQ(from, 0);
    ASSERT_EQ(into, 1);
    // Every node's block at its place in the packed send region; the receive blocks
    // are free, so clearance is only the ready handshake of one-sided tiers.
    auto sends = net->new_transfers();
    auto recvs = net->new_transfers();
    const uint64_t seq = 1;
    for (int n = 0; n < g.num_nodes; ++n) {
      if (n == g.node) continue;
      net->receive(*recvs, BlockKind::kCombine, into, block_offset(n, g.node, kBlockBytes), n, kBlockBytes, seq,
                   nullptr);
      if (net->needs_clear_to_send()) net->announce_ready(n, seq);
    }
    std::vector<char> sent(g.num_nodes, 0);
    int to_send = g.num_nodes - 1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (to_send > 0 || !sends->all_done() || !recvs->all_done()) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline)
          << "still waiting for " << sends->pending_peers() << " " << recvs->pending_peers();
      net->poll();
      for (int n = 0; n < g.num_nodes; ++n) {
        if (n == g.node || sent[n] || !net->take_ready(n, seq)) continue;
        const std::size_t at = static_cast<std::size_t>(n < g.node ? n : n - 1) * kBlockBytes;
        for (std::size_t i = 0; i < kBlockBytes; ++i) send[at + i] = expected_byte(g.rank, n, i);
        net->send(*sends, BlockKind::kCombine, from, at, n, into, block_offset(g.node, n, kBlockBytes), kBlockBytes,
                  seq, nullptr);
        sent[n] = 1;
        --to_send;
      }
      sends->test_some();
      recvs->test_some();
    }
  }
  for (int n = 0; n < g.num_nodes; ++n) {
    if (n == g.node) continue;
    const std::size_t at = block_offset(n, g.node, kBlockBytes);
    for (std::size_t i = 0; i < kBlockBytes; ++i) {
      ASSERT_EQ(recv[at + i], expected_byte(g.global_rank(n, g.local_rank), g.node, i))
          << "byte " << i << " of the block from node " << n;
    }
  }
  MPI_Comm_free(&comm);
}

// The MPI tier reads and writes host memory only: a device region is refused by
// name, with the rank, before anything moves.
TEST_F(InterNodeTest, MpiTierRefusesDeviceMemory) {
  epcomm::Group group(MPI_COMM_WORLD);
  const GroupState& g = *group.state();
  const InterNodeSetup setup{g, g.comm, 0, false, 1, false};  // no traffic: always MPI
  std::byte byte{};
  try {
    epcomm::detail::make_internode(setup, [&](InterNode& tier) {
      tier.register_region(&byte, 1, epcomm::MemorySpace::kDevice);
    });
    ADD_FAILURE() << "device memory was accepted";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find("device memory"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind("epcomm rank " + std::to_string(g.rank) + ":", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace epcomm_test
