// SPDX-License-Identifier: MIT
// Every error the exchange promises, on 4 ranks in 2 emulated nodes with a short
// timeout (EPCOMM_TIMEOUT_S=3 from ctest): the error code, the rank and the bad
// value in the message, and no hang. The catalogue cases (Catalogue.*) run with a
// 30 s timeout and require every rank to fail within 1 s, so no case can pass by a
// timeout; each also checks that /dev/shm holds no segment of this job afterwards.
#include <epcomm/epcomm.hpp>
#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
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
  // Every rank makes both bad calls (a rank with no rows passes -1): a begin
  // rejected on one rank only would fail the group.
  expect_error([&] { ex.combine_begin(h, y.data(), h.num_rows() - 1, out.data(), 8); }, ErrorCode::kBufferTooSmall,
               {"expert_out has " + std::to_string(h.num_rows() - 1) + " rows"});
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

// Rank 3 never begins the dispatch. The first rank to time out names it and tells
// the others, which fail at once naming that rank (or time out themselves, if their
// own timeout came first).
TEST_F(Fixture, RankThatNeverJoinsTimesOutWithDiagnosis) {
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  if (group.rank() == 3) return;  // never begins the dispatch
  const auto start = std::chrono::steady_clock::now();
  try {
    ex.dispatch(as_dispatch(in));
    ADD_FAILURE() << "a dispatch without rank 3 completed";
  } catch (const epcomm::Error& e) {
    const std::string what = e.what();
    if (e.code() == ErrorCode::kTimeout) {
      for (const char* n : {"dispatch operation 1 timed out", "'layout'", "3 (receive)"}) {
        EXPECT_NE(what.find(n), std::string::npos) << what;
      }
    } else {
      EXPECT_EQ(e.code(), ErrorCode::kGroupFailed) << what;
      EXPECT_NE(what.find("timed out"), std::string::npos) << what;
      EXPECT_NE(what.find("3 (receive)"), std::string::npos) << what;
    }
    EXPECT_NE(what.find(rank_tag(group.rank())), std::string::npos) << what;
  }
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
    // Rank 1 waits on rank 3's block, rank 2 on rank 3's shared-memory flag: each
    // times out naming rank 3, unless a peer's timeout reached it first.
    try {
      ex.dispatch(as_dispatch(in));
      ADD_FAILURE() << "rank " << me << " completed a dispatch that rank 3 held up";
    } catch (const epcomm::Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(rank_tag(me)), std::string::npos) << what;
      if (e.code() == ErrorCode::kTimeout) {
        EXPECT_NE(what.find("dispatch operation 1 timed out"), std::string::npos) << what;
        EXPECT_NE(what.find(me == 2 ? "3 (shared memory)" : verbs ? "3 (RDMA write into this rank)" : "3 (receive)"),
                  std::string::npos)
            << what;
      } else {
        EXPECT_EQ(e.code(), ErrorCode::kGroupFailed) << what;
        EXPECT_NE(what.find("timed out"), std::string::npos) << what;
      }
    }
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(took, inline_group.timeout_s() + 5.0);
}

// Rank 3 reaches Exchange construction after its peers' timeout. They fail naming
// it; it fails too, bounded, naming the peers that gave up (instead of hanging in
// a collective they left). A later construction on the same group works.
TEST_F(Fixture, RankLateToExchangeConstruction) {
  const double timeout = group.timeout_s();
  const int me = group.rank();
  MPI_Barrier(MPI_COMM_WORLD);
  if (me == 3) std::this_thread::sleep_for(std::chrono::duration<double>(timeout + 1.0));
  const auto start = std::chrono::steady_clock::now();
  if (me == 3) {
    expect_error([&] { epcomm::Exchange ex(group, config()); }, ErrorCode::kTimeout,
                 {rank_tag(3), "'setup' (Exchange construction)", "ranks 0, 1, 2 gave up"});
  } else {
    expect_error([&] { epcomm::Exchange ex(group, config()); }, ErrorCode::kTimeout,
                 {rank_tag(me), "'setup' (Exchange construction)", "ranks 3 did not arrive"});
  }
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(took, timeout - 0.1);
  EXPECT_LT(took, timeout + 1.0);
  MPI_Barrier(MPI_COMM_WORLD);
  epcomm::Exchange ex(group, config());
  RankInput in = input();
  ex.dispatch(as_dispatch(in));
}

// A rank that never creates its Group: the others time out, bounded, instead of
// hanging in the first collective (on a communicator used for nothing else, since
// the duplication they began stays pending on it).
TEST_F(Fixture, RankMissingFromGroupConstruction) {
  MPI_Comm spare = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &spare);
  if (group.rank() == 3) return;
  epcomm::GroupOptions opt;
  opt.timeout_s = 1;
  const auto start = std::chrono::steady_clock::now();
  expect_error([&] { epcomm::Group g(spare, opt); }, ErrorCode::kTimeout, {"'setup' (Group construction)"});
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_GE(took, 0.9);
  EXPECT_LT(took, 2.0);
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


// --- The catalogue: who fails, with which code, naming whom, how fast ---

// What one rank saw in one case: the error code (or none) and message, and the
// seconds from the case's common start (a barrier) to the throw.
struct Outcome {
  bool failed = false;
  ErrorCode code{};
  std::string what;
  double seconds = 0;
};

// Segments of this job in /dev/shm: names carry the pid of a node's first rank.
std::set<std::string> job_segments(MPI_Comm comm) {
  int size = 0;
  MPI_Comm_size(comm, &size);
  const int pid = static_cast<int>(getpid());
  std::vector<int> pids(size);
  MPI_Allgather(&pid, 1, MPI_INT, pids.data(), 1, MPI_INT, comm);
  std::set<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string name = entry.path().filename().string();
    for (int p : pids) {
      if (name.rfind("epcomm-" + std::to_string(p) + "-", 0) == 0) out.insert(name);
    }
  }
  return out;
}

struct Catalogue : Fixture {
  // A group whose timeout (30 s) cannot end any case within its 1 s bound.
  epcomm::Group slow_group{MPI_COMM_WORLD, [] {
                             epcomm::GroupOptions o;
                             o.timeout_s = 30;
                             return o;
                           }()};
  static constexpr double kBoundS = 1.0;
  std::chrono::steady_clock::time_point start;

  void SetUp() override { EXPECT_TRUE(job_segments(MPI_COMM_WORLD).empty()); }
  void TearDown() override {
    const std::set<std::string> left = job_segments(MPI_COMM_WORLD);
    EXPECT_TRUE(left.empty()) << left.size() << " shared-memory segment(s) left, first " << *left.begin();
    Fixture::TearDown();
  }

  void begin_case() {
    MPI_Barrier(MPI_COMM_WORLD);
    start = std::chrono::steady_clock::now();
  }
  Outcome attempt(const std::function<void()>& body) const {
    Outcome o;
    try {
      body();
    } catch (const epcomm::Error& e) {
      o.failed = true;
      o.code = e.code();
      o.what = e.what();
    }
    o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return o;
  }
  // Checks one rank's outcome and prints the case's table row (rank 0).
  void expect(const std::string& name, const Outcome& o, ErrorCode code, const std::vector<std::string>& needles) {
    EXPECT_TRUE(o.failed) << name << ": rank " << slow_group.rank() << " did not fail";
    if (o.failed) {
      EXPECT_EQ(o.code, code) << name << ": " << o.what;
      for (const std::string& n : needles) EXPECT_NE(o.what.find(n), std::string::npos) << name << ": " << o.what;
    }
    EXPECT_LT(o.seconds, kBoundS) << name << ": rank " << slow_group.rank() << " took " << o.seconds << " s";
    report(name, o);
  }
  void report(const std::string& name, const Outcome& o) const {
    const int size = slow_group.size();
    std::vector<int> codes(size);
    std::vector<double> times(size);
    const int code = o.failed ? static_cast<int>(o.code) : 0;
    MPI_Gather(&code, 1, MPI_INT, codes.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Gather(&o.seconds, 1, MPI_DOUBLE, times.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (slow_group.rank() != 0) return;
    std::string who;
    for (int r = 0; r < size; ++r) {
      who += (r ? ", " : "") + std::to_string(r) + ": " +
             (codes[r] ? epcomm::to_string(static_cast<ErrorCode>(codes[r])) : std::string("ok"));
    }
    std::printf("[catalogue] %s | %s | max %.1f ms\n", name.c_str(), who.c_str(),
                *std::max_element(times.begin(), times.end()) * 1e3);
  }

  RankInput good_input() const {
    Shape sh{slow_group.size(), slow_group.ranks_per_node(), 2 * slow_group.size(), 2, 40};
    return make_rank_input(sh, 8, 99, 0.0, 5, slow_group.rank());
  }

  // A correct dispatch and combine on `ex`, checked against the reference.
  void correct_round(epcomm::Exchange& ex, const std::string& after) {
    const Shape sh{slow_group.size(), slow_group.ranks_per_node(), 2 * slow_group.size(), 2, 40};
    RankInput in = good_input();
    epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
    std::vector<float> rows(static_cast<std::size_t>(h.num_rows()) * sh.hidden), y(rows.size());
    h.decode_rows(rows.data(), epcomm::DType::kF32);
    const int J = sh.experts_per_rank();
    for (int j = 0; j < J; ++j) {
      for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
        for (int c = 0; c < sh.hidden; ++c) {
          const std::size_t at = static_cast<std::size_t>(r) * sh.hidden + c;
          y[at] = expert_fn(slow_group.rank() * J + j, c, rows[at]);
        }
      }
    }
    std::vector<float> out(static_cast<std::size_t>(in.num_tokens) * sh.hidden);
    ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens);
    std::vector<double> ref, mag;
    expected_combine(in, sh, ref, mag);
    for (std::size_t i = 0; i < out.size(); ++i) {
      ASSERT_LE(std::abs(out[i] - ref[i]), 1e-5 * (mag[i] + 1)) << "after " << after << ": element " << i;
    }
  }
};

// A bad input of the catalogue, as each rank applies it to a correct one, with the
// error it must get and the words that name the bad value.
struct BadInput {
  std::string name;
  std::function<void(RankInput&)> spoil;
  ErrorCode code;
  std::string needle;
};

std::vector<BadInput> bad_inputs() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  return {
      {"expert id out of range", [](RankInput& in) { in.topk_idx[5] = 999; }, ErrorCode::kInvalidArgument,
       "topk_idx[2][1]=999"},
      {"NaN weight", [nan](RankInput& in) { in.topk_weights[4] = nan; }, ErrorCode::kInvalidArgument,
       "topk_weights[2][0]=nan"},
      {"inf weight", [inf](RankInput& in) { in.topk_weights[3] = inf; }, ErrorCode::kInvalidArgument,
       "topk_weights[1][1]=inf"},
      {"duplicate expert", [](RankInput& in) { in.topk_idx[7] = in.topk_idx[6]; }, ErrorCode::kInvalidArgument,
       "twice"},
      {"num_tokens over the maximum", [](RankInput& in) { in.num_tokens = 17; }, ErrorCode::kBufferTooSmall,
       "num_tokens=17"},
  };
}

// The same bad input on every rank: each rejects it (naming itself and the value),
// nobody waits, and the same Exchange then runs a correct round.
TEST_F(Catalogue, SameBadInputOnEveryRankLeavesTheExchangeUsable) {
  epcomm::Exchange ex(slow_group, config());
  for (const BadInput& bad : bad_inputs()) {
    RankInput in = good_input();
    bad.spoil(in);
    if (in.num_tokens > 8) in.x.resize(static_cast<std::size_t>(in.num_tokens) * 40);
    begin_case();
    const Outcome o = attempt([&] { ex.dispatch_begin(as_dispatch(in)); });
    expect("every rank: " + bad.name, o, bad.code, {rank_tag(slow_group.rank()), bad.needle});
    correct_round(ex, bad.name);
  }
}

// The bad input on rank 1 only: rank 1 rejects it; the others, which began the
// dispatch, fail at once naming rank 1 and its reason; the group stays failed, on
// rank 1 too.
TEST_F(Catalogue, BadInputOnOneRankFailsEveryRankAtOnce) {
  for (const BadInput& bad : bad_inputs()) {
    epcomm::Exchange ex(slow_group, config());
    RankInput in = good_input();
    if (slow_group.rank() == 1) bad.spoil(in);
    begin_case();
    const Outcome o = attempt([&] { ex.dispatch(as_dispatch(in)); });
    if (slow_group.rank() == 1) {
      expect("rank 1: " + bad.name, o, bad.code, {rank_tag(1), bad.needle});
    } else {
      expect("rank 1: " + bad.name, o, ErrorCode::kGroupFailed,
             {rank_tag(slow_group.rank()), "because of rank 1", bad.needle});
    }
    // The next call fails everywhere (rank 1 learns from the others' messages).
    RankInput good = good_input();
    const Outcome next = attempt([&] { ex.dispatch(as_dispatch(good)); });
    EXPECT_TRUE(next.failed && next.code == ErrorCode::kGroupFailed) << bad.name << ": " << next.what;
    EXPECT_LT(next.seconds, kBoundS) << bad.name;
  }
}

// LogFMT cannot encode NaN: rank 1 finds it while encoding (after the begin), so the
// group fails; the others fail at once naming rank 1, the token and the column.
TEST_F(Catalogue, NonFiniteInputWithLogFmtOnOneRank) {
  epcomm::ExchangeConfig c = config();
  c.dispatch_format = epcomm::Format::kLogFMT8;
  epcomm::Exchange ex(slow_group, c);
  RankInput in = good_input();
  if (slow_group.rank() == 1) in.x[3 * 40 + 7] = std::numeric_limits<float>::quiet_NaN();
  begin_case();
  const Outcome o = attempt([&] { ex.dispatch(as_dispatch(in)); });
  if (slow_group.rank() == 1) {
    expect("NaN in x, LogFMT-8 dispatch", o, ErrorCode::kInvalidArgument, {rank_tag(1), "token 3 column 7", "logfmt8"});
  } else {
    expect("NaN in x, LogFMT-8 dispatch", o, ErrorCode::kGroupFailed, {"because of rank 1", "token 3 column 7"});
  }
}

// A NaN in one expert output row of rank 1, for a token from the other node: rank
// 1 cannot encode a partial of it, whether it pre-reduces the token for its node
// itself (it is the source's rail peer) or sums its rows into an owner partial for
// the node peer that does; every other rank fails at once naming it (in this
// combine, or in its next call if its own partials had all arrived).
TEST_F(Catalogue, NonFiniteExpertOutputWithLogFmtCombine) {
  epcomm::ExchangeConfig c = config();
  c.combine_format = epcomm::Format::kLogFMT8;
  epcomm::Exchange ex(slow_group, c);
  RankInput in = good_input();
  epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
  std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * 40, 0.5f);
  int source = -1;  // rank 1 poisons a row from this source on node 1
  if (slow_group.rank() == 1) {
    for (int64_t r = 0; r < h.num_rows() && source < 0; ++r) {
      if (h.row_src_rank()[r] >= slow_group.ranks_per_node()) {
        source = h.row_src_rank()[r];
        y[static_cast<std::size_t>(r) * 40 + 11] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }
  MPI_Bcast(&source, 1, MPI_INT, 1, MPI_COMM_WORLD);
  ASSERT_GE(source, 0) << "rank 1 received no token from the other node";
  const int failing = 1;  // as the source's rail peer, or as the owner of its rows
  std::vector<float> out(static_cast<std::size_t>(in.num_tokens) * 40);
  begin_case();
  Outcome o = attempt([&] { ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens); });
  // A rank whose partials had all arrived may finish first: its next call fails.
  if (!o.failed && slow_group.rank() != failing) o = attempt([&] { ex.dispatch(as_dispatch(in)); });
  const std::string name = "NaN in an expert output, LogFMT-8 combine";
  if (slow_group.rank() == failing) {
    expect(name, o, ErrorCode::kInvalidArgument, {rank_tag(failing), "partial sum", "rank " + std::to_string(source)});
  } else {
    expect(name, o, ErrorCode::kGroupFailed, {"because of rank " + std::to_string(failing), "partial sum"});
  }
}


// Node 0 begins a combine where node 1 begins a dispatch: every rank fails at once,
// the message naming both operations (kMismatch where the headers were compared,
// kGroupFailed where the news came from a peer).
TEST_F(Catalogue, OperationsBegunInDifferentOrders) {
  epcomm::Exchange ex(slow_group, config());
  RankInput in = good_input();
  epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
  std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * 40, 0.5f), out(static_cast<std::size_t>(8) * 40);
  const bool node0 = slow_group.node() == 0;
  begin_case();
  const Outcome o = attempt([&] {
    if (node0) {
      ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens);
    } else {
      ex.dispatch(as_dispatch(in));
    }
  });
  const std::string name = "node 0 combines where node 1 dispatches";
  const std::vector<std::string> needles{rank_tag(slow_group.rank()), "began combine 2 of dispatch 1",
                                         "began dispatch 2"};
  if (o.failed && o.code == ErrorCode::kGroupFailed) {
    expect(name, o, ErrorCode::kGroupFailed, needles);
  } else {
    expect(name, o, ErrorCode::kMismatch, needles);
  }
}


// Buffers that pass every check but cannot be allocated: an address-space limit
// just above what the process uses makes the first 512 MiB buffer fail on every
// rank, which names the bytes and the limit (not a bare std::bad_alloc).
TEST_F(Catalogue, AllocationFailureNamesBytesAndLimit) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator ends the process when out of memory instead of throwing";
#endif
  epcomm::ExchangeConfig c = config();
  c.hidden = 4096;
  c.max_tokens_per_rank = 32768;  // dispatch send buffer: 32768 x (20 + 16384) bytes
  c.max_recv_rows = 64;           // keeps the shared part small
  c.max_inflight = 1;
  unsigned long long vm_kib = 0;
  {
    std::ifstream status("/proc/self/status");
    for (std::string key; status >> key;) {
      if (key == "VmSize:") {
        status >> vm_kib;
        break;
      }
    }
  }
  ASSERT_GT(vm_kib, 0u);
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_AS, &before), 0);
  rlimit tight = before;
  tight.rlim_cur = static_cast<rlim_t>(vm_kib * 1024 + (256ull << 20));
  ASSERT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
  begin_case();
  const Outcome o = attempt([&] { epcomm::Exchange ex(slow_group, c); });
  setrlimit(RLIMIT_AS, &before);
  expect("buffers over the address-space limit", o, ErrorCode::kSystem,
         {rank_tag(slow_group.rank()), "cannot allocate " + std::to_string(32768ull * (20 + 16384)) + " bytes",
          "RLIMIT_AS) " + std::to_string(static_cast<unsigned long long>(tight.rlim_cur)) + " bytes"});
}


// ExchangeConfig::checksum: a correct round passes its checks (between nodes and
// inside them); then rank 2's first inter-node block gets one bit flipped after its
// CRC32C was taken (the inter-node tier's fault-injection hook: MPI here, verbs in
// the verbs guest). Its receiver, rank 0, fails naming rank 2, the block and the
// operation; the others fail at once naming rank 0.
TEST_F(Catalogue, BitFlippedInFlightIsCaughtByTheChecksum) {
#ifndef EPCOMM_FAULT_INJECTION
  GTEST_SKIP() << "built without EPCOMM_FAULT_INJECTION";
#endif
  epcomm::ExchangeConfig c = config();
  c.checksum = true;
  {
    epcomm::Exchange clean(slow_group, c);
    correct_round(clean, "checksums on");
  }
  if (slow_group.rank() == 2) setenv("EPCOMM_FAULT_FLIP_BIT", "1", 1);
  epcomm::Exchange ex(slow_group, c);
  unsetenv("EPCOMM_FAULT_FLIP_BIT");
  RankInput in = good_input();
  begin_case();
  Outcome out = attempt([&] { ex.dispatch(as_dispatch(in)); });
  // A rank whose dispatch needed nothing from rank 0 may finish first: its next call fails.
  if (!out.failed) out = attempt([&] { ex.dispatch(as_dispatch(in)); });
  const std::string name = "one bit flipped in rank 2's dispatch block, checksums on";
  if (slow_group.rank() == 0) {
    expect(name, out, ErrorCode::kDataCorrupted,
           {rank_tag(0), "dispatch block of operation 1 from rank 2", "arrived corrupted"});
  } else {
    expect(name, out, ErrorCode::kGroupFailed, {"because of rank 0", "dispatch block of operation 1 from rank 2"});
  }
}

// The same in a combine block: rank 2's second inter-node block
// (EPCOMM_FAULT_FLIP_BIT=2; the first is its dispatch block) is its combine block,
// which its receiver, rank 0, checks in the pass that sums it, before the combine
// completes.
TEST_F(Catalogue, BitFlippedInACombineBlockIsCaughtByTheChecksum) {
#ifndef EPCOMM_FAULT_INJECTION
  GTEST_SKIP() << "built without EPCOMM_FAULT_INJECTION";
#endif
  epcomm::ExchangeConfig c = config();
  c.checksum = true;
  if (slow_group.rank() == 2) setenv("EPCOMM_FAULT_FLIP_BIT", "2", 1);
  epcomm::Exchange ex(slow_group, c);
  unsetenv("EPCOMM_FAULT_FLIP_BIT");
  RankInput in = good_input();
  epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
  std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * 40, 0.5f), out(static_cast<std::size_t>(8) * 40);
  begin_case();
  Outcome o = attempt([&] { ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens); });
  // A rank whose combine needed nothing from rank 0 may finish first: its next call fails.
  if (!o.failed) o = attempt([&] { ex.dispatch(as_dispatch(in)); });
  const std::string name = "one bit flipped in rank 2's combine block, checksums on";
  if (slow_group.rank() == 0) {
    expect(name, o, ErrorCode::kDataCorrupted,
           {rank_tag(0), "combine block of operation 2 from rank 2", "arrived corrupted"});
  } else {
    expect(name, o, ErrorCode::kGroupFailed, {"because of rank 0", "combine block of operation 2 from rank 2"});
  }
}

// ExchangeConfig::checksum inside a node: rank 1 flips one bit of the first row it
// shows its node peer, rank 0, after signing it (EPCOMM_FAULT_FLIP_NODE_BIT=n: the
// n-th operation that shows rows; the dispatch is the first, the combine the
// second). Rank 0 checks the row before it uses it and fails naming the row, rank
// 1 and the operation; the others fail at once naming rank 0.
struct NodePeerBitFlip : Catalogue {
  // Runs a dispatch and, when `in_combine`, a combine, on an Exchange made while
  // rank 1 has EPCOMM_FAULT_FLIP_NODE_BIT set to flip_at.
  Outcome run(int flip_at, bool in_combine) {
    epcomm::ExchangeConfig c = config();
    c.checksum = true;
    if (slow_group.rank() == 1) setenv("EPCOMM_FAULT_FLIP_NODE_BIT", std::to_string(flip_at).c_str(), 1);
    epcomm::Exchange ex(slow_group, c);
    unsetenv("EPCOMM_FAULT_FLIP_NODE_BIT");
    RankInput in = good_input();
    if (!in_combine) {
      begin_case();
      Outcome out = attempt([&] { ex.dispatch(as_dispatch(in)); });
      // A rank that needed no row of rank 0 may finish first: its next call fails.
      if (!out.failed) out = attempt([&] { ex.dispatch(as_dispatch(in)); });
      return out;
    }
    epcomm::DispatchHandle h = ex.dispatch(as_dispatch(in));
    std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * 40, 0.5f), out(static_cast<std::size_t>(8) * 40);
    begin_case();
    Outcome o = attempt([&] { ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens); });
    if (!o.failed) o = attempt([&] { ex.dispatch(as_dispatch(in)); });
    return o;
  }
};

TEST_F(NodePeerBitFlip, InADispatchRowIsCaughtByItsOwner) {
#ifndef EPCOMM_FAULT_INJECTION
  GTEST_SKIP() << "built without EPCOMM_FAULT_INJECTION";
#endif
  const Outcome o = run(1, false);
  const std::string name = "one bit flipped in a dispatch row rank 1 wrote into rank 0's memory, checksums on";
  if (slow_group.rank() == 0) {
    expect(name, o, ErrorCode::kDataCorrupted,
           {rank_tag(0), "dispatch row", "of operation 1 in rank 0's shared memory", "written by rank 1, is corrupted"});
  } else {
    expect(name, o, ErrorCode::kGroupFailed, {"because of rank 0", "written by rank 1"});
  }
}

TEST_F(NodePeerBitFlip, InAnOwnerPartialIsCaughtByItsReader) {
#ifndef EPCOMM_FAULT_INJECTION
  GTEST_SKIP() << "built without EPCOMM_FAULT_INJECTION";
#endif
  const Outcome o = run(2, true);
  const std::string name = "one bit flipped in an owner partial of rank 1 that rank 0 reads, checksums on";
  if (slow_group.rank() == 0) {
    expect(name, o, ErrorCode::kDataCorrupted,
           {rank_tag(0), "owner partial row", "of operation 2 in rank 1's shared memory",
            "written by rank 1, is corrupted"});
  } else {
    expect(name, o, ErrorCode::kGroupFailed, {"because of rank 0", "written by rank 1"});
  }
}

}  // namespace
}  // namespace epcomm_test
