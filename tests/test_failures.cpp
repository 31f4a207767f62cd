// SPDX-License-Identifier: MIT
// Every error the exchange promises, on 4 ranks in 2 emulated nodes with a short
// timeout (EPCOMM_TIMEOUT_S=3 from ctest): the error code, the rank and the bad
// value in the message, and no hang.
#include <epcomm/epcomm.hpp>

#include <chrono>
#include <functional>
#include <limits>
#include <string>
#include <thread>

#include "support/cuda_presence.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::ErrorCode;

// Runs `body` and checks that it throws epcomm::Error with `code` and a message
// containing every needle. Returns the message.
std::string expect_error(const std::function<void()>& body, ErrorCode code, std::vector<std::string> needles) {
  try {
    body();
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error thrown; expected " << epcomm::to_string(code);
  return "";
}

struct Fixture : MpiTest {
  epcomm::ExchangeConfig config() const {
    epcomm::ExchangeConfig c;
    c.num_experts = 2 * group.size();
    c.topk = 2;
    c.hidden = 40;
    c.max_tokens_per_rank = 16;
    c.dtype = epcomm::DType::kF32;
    c.dispatch_format = epcomm::Format::kF32;
    c.combine_format = epcomm::Format::kF32;
    return c;
  }
  RankInput input(int tokens = 8) const {
    Shape s{group.size(), group.ranks_per_node(), 2 * group.size(), 2, 40};
    return make_rank_input(s, tokens, 99, 0.0, 5, group.rank());
  }
  static epcomm::DispatchInput as_dispatch(const RankInput& in) {
    epcomm::DispatchInput d;
    d.x = in.x.data();
    d.topk_idx = in.topk_idx.data();
    d.topk_weights = in.topk_weights.data();
    d.num_tokens = in.num_tokens;
    return d;
  }
  std::string rank_tag(int r) const { return "epcomm rank " + std::to_string(r) + ":"; }

  epcomm::Group group{MPI_COMM_WORLD};
};

TEST_F(Fixture, ExpertIdOutOfRangeNamesValueAndRank) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  if (group.rank() == 1) {
    in.topk_idx[5] = 999;
    expect_error([&] { ex.dispatch(as_dispatch(in)); }, ErrorCode::kInvalidArgument,
                 {rank_tag(1), "topk_idx[2][1]=999"});
  } else {
    // The others cannot know; they must not hang: a timeout naming rank 1 and the phase.
    expect_error([&] { ex.dispatch(as_dispatch(in)); }, ErrorCode::kTimeout, {"'layout'", "ranks 1 (receive)"});
  }
}

// LogFMT has no code for NaN or infinity: the rank holding one names the token and
// column; the others end without hanging (done, or a timeout/group failure).
TEST_F(Fixture, NonFiniteInputForLogFmtNamesTokenAndColumn) {
  epcomm::ExchangeConfig c = config();
  c.dispatch_format = epcomm::Format::kLogFMT8;
  epcomm::Exchange ex(group, c);
  RankInput in = input();
  if (group.rank() == 1) {
    in.x[3 * 40 + 7] = std::numeric_limits<float>::quiet_NaN();
    expect_error([&] { ex.dispatch(as_dispatch(in)); }, ErrorCode::kInvalidArgument,
                 {rank_tag(1), "token 3 column 7", "logfmt8"});
  } else {
    try {
      ex.dispatch(as_dispatch(in));
    } catch (const epcomm::Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::kTimeout || e.code() == ErrorCode::kGroupFailed) << e.what();
    }
  }
}

TEST_F(Fixture, RepeatedExpertInRow) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  in.topk_idx[1] = in.topk_idx[0];  // every rank makes the same mistake: nobody waits
  expect_error([&] { ex.dispatch_begin(as_dispatch(in)); }, ErrorCode::kInvalidArgument,
               {rank_tag(group.rank()), "chooses expert " + std::to_string(in.topk_idx[0]) + " twice"});
}

TEST_F(Fixture, TooManyTokensForDeclaredMaximum) {
  epcomm::Exchange ex(group, config());
  RankInput in = input(17);
  expect_error([&] { ex.dispatch_begin(as_dispatch(in)); }, ErrorCode::kBufferTooSmall,
               {"num_tokens=17", "max_tokens_per_rank=16"});
}

TEST_F(Fixture, ConfigsThatDisagreeAcrossRanks) {
  epcomm::ExchangeConfig c = config();
  if (group.rank() == 2) c.hidden = 48;
  expect_error([&] { epcomm::Exchange ex(group, c); }, ErrorCode::kMismatch,
               {"hidden=", group.rank() == 2 ? "rank 0 has hidden=40" : "rank 2 has hidden=48"});
}

TEST_F(Fixture, InvalidConfigIsRejectedLocally) {
  epcomm::ExchangeConfig c = config();
  c.num_experts = 2 * group.size() + 1;
  expect_error([&] { epcomm::Exchange ex(group, c); }, ErrorCode::kInvalidArgument,
               {"num_experts=" + std::to_string(c.num_experts)});
  c = config();
  c.topk = c.num_experts + 1;
  expect_error([&] { epcomm::Exchange ex(group, c); }, ErrorCode::kInvalidArgument, {"topk="});
}

TEST_F(Fixture, CombineBuffersTooSmall) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
  std::vector<float> y(static_cast<std::size_t>(h.num_rows() + 1) * 40), out(8 * 40);
  if (h.num_rows() > 0) {
    expect_error([&] { ex.combine_begin(h, y.data(), h.num_rows() - 1, out.data(), 8); }, ErrorCode::kBufferTooSmall,
                 {"expert_out has " + std::to_string(h.num_rows() - 1) + " rows"});
  }
  expect_error([&] { ex.combine_begin(h, y.data(), h.num_rows(), out.data(), 7); }, ErrorCode::kBufferTooSmall,
               {"holds 7 tokens", "sent 8"});
  ex.combine(h, y.data(), h.num_rows(), out.data(), 8);  // the exchange is still usable
}

TEST_F(Fixture, ReceiveCapacityExceeded) {
  epcomm::ExchangeConfig c = config();
  c.max_recv_rows = 4;  // 4 ranks x 8 tokens x 2 experts cannot fit anywhere
  epcomm::Exchange ex(group, c);
  RankInput in = input();
  std::string msg;
  try {
    ex.dispatch(as_dispatch(in));
  } catch (const epcomm::Error& e) {
    msg = e.what();
    // The overflowing rank says why; its node peers learn it failed; others time out.
    EXPECT_TRUE(e.code() == ErrorCode::kBufferTooSmall || e.code() == ErrorCode::kGroupFailed ||
                e.code() == ErrorCode::kTimeout)
        << msg;
  }
  EXPECT_FALSE(msg.empty());
  if (msg.find("max_recv_rows is 4") == std::string::npos) {
    EXPECT_NE(msg.find("rank"), std::string::npos);
  }
  // A failed exchange refuses further work with the original reason.
  expect_error([&] { ex.dispatch_begin(as_dispatch(in)); }, ErrorCode::kGroupFailed, {"earlier error"});
}

TEST_F(Fixture, RankThatNeverJoinsTimesOutWithDiagnosis) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  if (group.rank() == 3) return;  // never begins the dispatch
  const auto start = std::chrono::steady_clock::now();
  expect_error([&] { ex.dispatch(as_dispatch(in)); }, ErrorCode::kTimeout,
               {rank_tag(group.rank()), "dispatch operation 1 timed out", "'layout'", "3 (receive)"});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(took, 2.9);
  EXPECT_LT(took, 10.0);
}

// Rank 3 begins a dispatch and then stops (no progress thread, no wait) past the
// timeout. Its rail peer (rank 1) gets its layout, writes its own rows to it, and
// times out naming rank 3 and what it still expects from it: the block an MPI
// receive or an RDMA write would deliver. Rank 3 itself, resumed, learns that the
// operation failed elsewhere instead of hanging; so may rank 0, whose node peer
// (rank 1) can fail before rank 0's own timeout.
TEST_F(Fixture, RankThatStopsAfterBeginIsNamedByItsRailPeer) {
  epcomm::GroupOptions opt;
  opt.progress = epcomm::GroupOptions::Progress::kInline;
  epcomm::Group inline_group(MPI_COMM_WORLD, opt);
  ASSERT_EQ(inline_group.num_nodes(), 2);
  epcomm::Exchange ex(inline_group, config());
  RankInput in = input();
  const bool verbs = std::string(ex.transport()) == "verbs";
  const int me = inline_group.rank();
  const auto start = std::chrono::steady_clock::now();
  if (me == 0 || me == 3) {
    epcomm::DispatchHandle h = ex.dispatch_begin(as_dispatch(in));
    if (me == 3) std::this_thread::sleep_for(std::chrono::duration<double>(inline_group.timeout_s() + 1.5));
    try {
      h.wait();
      ADD_FAILURE() << "rank " << me << " completed a dispatch that rank 3 held up";
    } catch (const epcomm::Error& e) {
      EXPECT_TRUE(e.code() == ErrorCode::kGroupFailed || e.code() == ErrorCode::kTimeout) << e.what();
      EXPECT_NE(std::string(e.what()).find(rank_tag(me)), std::string::npos) << e.what();
    }
  } else {
    expect_error([&] { ex.dispatch(as_dispatch(in)); }, ErrorCode::kTimeout,
                 {rank_tag(me), "dispatch operation 1 timed out",
                  me == 2 ? "3 (shared memory)" : verbs ? "3 (RDMA write into this rank)" : "3 (receive)"});
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, inline_group.timeout_s() + 5.0);
}

TEST_F(Fixture, AllSlotsHeld) {
  epcomm::ExchangeConfig c = config();
  c.max_inflight = 1;
  epcomm::Exchange ex(group, c);
  RankInput in = input();
  epcomm::DispatchHandle held = ex.dispatch(as_dispatch(in));
  expect_error([&] { ex.dispatch_begin(as_dispatch(in)); }, ErrorCode::kInvalidArgument,
               {"all 1 exchange slots are held"});
  held = epcomm::DispatchHandle();
  ex.dispatch(as_dispatch(in));  // the slot is free again
}

TEST_F(Fixture, InputMemorySpaceMustMatchTheExchange) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  epcomm::DispatchInput d = as_dispatch(in);
  d.memory = epcomm::MemorySpace::kDevice;
  expect_error([&] { ex.dispatch_begin(d); }, ErrorCode::kInvalidArgument,
               {"DispatchInput::memory is device", "ExchangeConfig::memory"});
  d = as_dispatch(in);
  int not_a_stream = 0;
  d.stream = &not_a_stream;
  expect_error([&] { ex.dispatch_begin(d); }, ErrorCode::kInvalidArgument, {"stream", "host"});
  ex.dispatch(as_dispatch(in));  // nothing was taken: the exchange still works
}

TEST_F(Fixture, MemorySpacesMustAgreeAcrossRanks) {
  epcomm::ExchangeConfig c = config();
  if (group.rank() == 0) c.memory = epcomm::MemorySpace::kDevice;
  expect_error([&] { epcomm::Exchange ex(group, c); }, ErrorCode::kMismatch, {"memory="});
}

// Where a GPU exists, the gpu tests (test_exchange_gpu) cover device memory.
TEST_F(Fixture, DeviceMemoryWithoutAGpuFailsOnEveryRank) {
  if (cuda_device_present()) GTEST_SKIP() << "this host has a CUDA device";
  epcomm::ExchangeConfig c = config();
  c.memory = epcomm::MemorySpace::kDevice;
  expect_error([&] { epcomm::Exchange ex(group, c); }, ErrorCode::kUnsupported, {"CUDA"});
}

TEST_F(Fixture, BadNodeSplits) {
  epcomm::GroupOptions opt;
  opt.ranks_per_node = 3;  // 4 ranks on one host
  expect_error([&] { epcomm::Group g(MPI_COMM_WORLD, opt); }, ErrorCode::kInvalidArgument,
               {"not a multiple of EPCOMM_RANKS_PER_NODE=3"});
  opt.ranks_per_node = group.rank() == 0 ? 1 : 2;
  expect_error([&] { epcomm::Group g(MPI_COMM_WORLD, opt); }, ErrorCode::kMismatch, {"ranks per node differ"});
}

}  // namespace
}  // namespace epcomm_test
