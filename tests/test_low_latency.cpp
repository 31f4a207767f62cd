// SPDX-License-Identifier: MIT
// The low-latency exchange (epcomm/low_latency.hpp) against the independent
// reference of support/test_data: 2 and 4 ranks, one node and emulated nodes
// (EPCOMM_RANKS_PER_NODE), so rows go through node peers' shared memory and through
// the proxy. Dispatched rows must be bit-identical to the scalar reference codec's
// encoding of the source row; combine bit-identical to the same sum computed here
// in the documented order (k = 0..topk-1), and within the formats' bound of the
// exact (double) result.
#include <epcomm/epcomm.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "epcomm_kernels/codec.hpp"
#include "support/expect_error.hpp"
#include "support/low_latency_reference.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;

struct LlCase {
  std::string name;
  int experts_per_rank;
  int topk;
  int hidden;
  int max_tokens;
  DType dtype;
  Format dispatch_format;
  Format combine_format;
  double drop_prob;
  uint64_t seed;
};

std::ostream& operator<<(std::ostream& os, const LlCase& c) { return os << c.name; }

struct RoundSetup {
  Shape shape;
  epcomm::LowLatencyConfig config;
  RankInput input;
  std::vector<RankInput> all;
  std::vector<std::byte> x;  // input.x in config.dtype
};

RoundSetup make_setup(const epcomm::Group& g, const LlCase& c, uint64_t seed_offset = 0) {
  RoundSetup su;
  su.shape = Shape{g.size(), g.ranks_per_node(), c.experts_per_rank * g.size(), 0, c.hidden};
  su.shape.topk = std::min(c.topk, su.shape.experts);
  std::mt19937 rng(static_cast<unsigned>(c.seed + seed_offset) * 7919u + static_cast<unsigned>(g.rank()));
  int tokens = std::uniform_int_distribution<int>(1, c.max_tokens)(rng);
  if (g.rank() == 1) tokens = 0;  // a rank with nothing to send
  if (g.rank() == 0) tokens = c.max_tokens;  // and one with the most
  su.config.num_experts = su.shape.experts;
  su.config.topk = su.shape.topk;
  su.config.hidden = c.hidden;
  su.config.max_tokens_per_rank = c.max_tokens;
  su.config.dtype = c.dtype;
  su.config.dispatch_format = c.dispatch_format;
  su.config.combine_format = c.combine_format;
  su.input = make_rank_input(su.shape, tokens, 99, c.drop_prob, c.seed + seed_offset, g.rank());
  su.all = allgather_inputs(su.input, su.shape, g.comm());
  su.x = to_dtype(su.input.x, c.dtype);
  return su;
}

epcomm::LowLatencyDispatchInput input_of(const RoundSetup& su) {
  epcomm::LowLatencyDispatchInput in;
  in.x = su.x.data();
  in.topk_idx = su.input.topk_idx.data();
  in.topk_weights = su.input.topk_weights.data();
  in.num_tokens = su.input.num_tokens;
  return in;
}

const epcomm::kernels::Codec& ref(Format f) { return epcomm::kernels::reference_codec_for(f); }
const epcomm::kernels::Codec& plain(DType t) { return ref(epcomm::kernels::plain_format(t)); }

void check_dispatch(const epcomm::Group& g, const RoundSetup& su, const epcomm::LowLatencyRecv& r) {
  const Shape& s = su.shape;
  const auto expected = expected_dispatch(su.all, s, g.rank());
  ASSERT_EQ(r.num_local_experts, s.experts_per_rank());
  ASSERT_EQ(r.rows_per_expert, int64_t{g.size()} * su.config.max_tokens_per_rank);
  ASSERT_EQ(r.row_bytes, epcomm::encoded_row_bytes(su.config.dispatch_format, s.hidden));
  ASSERT_EQ(r.format, su.config.dispatch_format);
  std::vector<float> decoded(static_cast<std::size_t>(s.hidden));
  for (int j = 0; j < s.experts_per_rank(); ++j) {
    const auto& exp = expected[j];
    ASSERT_EQ(r.counts[j], static_cast<int32_t>(exp.size())) << "local expert " << j;
    for (std::size_t i = 0; i < exp.size(); ++i) {
      const int64_t at = j * r.rows_per_expert + static_cast<int64_t>(i);
      ASSERT_EQ(r.src_rank[at], exp[i].src_rank) << "expert " << j << " row " << i;
      ASSERT_EQ(r.src_token[at], exp[i].src_token) << "expert " << j << " row " << i;
      const auto* row = static_cast<const std::byte*>(r.rows) + at * static_cast<int64_t>(r.row_bytes);
      const std::vector<std::byte> want = encoded_source_row(su.all[exp[i].src_rank], exp[i].src_token, su.config);
      ASSERT_EQ(0, std::memcmp(row, want.data(), want.size())) << "expert " << j << " row " << i << " differs in bits";
      if (epcomm::is_plain_format(su.config.dispatch_format)) {
        // Plain rows hold the source's values exactly (BF16-representable data).
        ref(su.config.dispatch_format).decode_row(row, s.hidden, decoded.data(), DType::kF32);
        for (int h = 0; h < s.hidden; ++h) ASSERT_EQ(decoded[h], exp[i].x[h]) << "expert " << j << " row " << i;
      }
    }
  }
}

std::vector<std::byte> expert_outputs(const epcomm::Group& g, const RoundSetup& su, const epcomm::LowLatencyRecv& r) {
  return epcomm_test::expert_outputs(su.config, g.rank() * r.num_local_experts, r.num_local_experts, r.rows_per_expert,
                                     r.rows, r.row_bytes, r.counts);
}

// Per-term bound of the combine: each (token, k) output rounded to dtype, then to
// combine_format (BF16: 2^-8 relative; LogFMT-n: half the ratio of neighbouring
// levels, step at most 32 / (2^(n-1) - 2) in log2), the sum rounded to dtype once.
double term_tolerance(const epcomm::LowLatencyConfig& c) {
  double rel = 1e-6;
  if (c.dtype == DType::kBF16) rel += 2 * std::ldexp(1.0, -8);
  if (c.combine_format == Format::kBF16) rel += std::ldexp(1.0, -8);
  if (const int bits = epcomm::logfmt_bits(c.combine_format)) rel += (std::exp2(32.0 / ((1 << (bits - 1)) - 2)) - 1) / 2;
  return rel;
}

void check_combine(const RoundSetup& su, const std::vector<std::byte>& out) {
  const epcomm::LowLatencyConfig& c = su.config;
  const int H = su.shape.hidden;
  RankInput seen;
  const std::vector<std::byte> want = expected_low_latency_combine(su.input, c, &seen);
  ASSERT_EQ(out.size(), want.size());
  if (out.empty()) return;  // a rank without tokens
  std::vector<float> got(out.size() / epcomm::dtype_size(c.dtype)), w(got.size());
  plain(c.dtype).decode_row(out.data(), static_cast<int>(got.size()), got.data(), DType::kF32);
  plain(c.dtype).decode_row(want.data(), static_cast<int>(w.size()), w.data(), DType::kF32);
  // Bit-exact: the same terms summed in the documented order.
  for (std::size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i], w[i]) << "token " << i / H << " element " << i % H << ": not the k-ordered sum";
  }
  // Within the formats' bound of the exact sum.
  std::vector<double> exact, mag;
  expected_combine(seen, su.shape, exact, mag);
  const double tol = term_tolerance(c);
  for (std::size_t i = 0; i < exact.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - exact[i]), tol * mag[i] + 1e-6)
        << "token " << i / H << " element " << i % H << ": got " << got[i] << " want " << exact[i];
  }
}

struct RoundResult {
  std::vector<std::byte> rows;
  std::vector<std::byte> out;
};

// One round: dispatch_send, (optional delay), dispatch_recv, experts,
// combine_send, (optional delay), combine_recv, checked against the reference.
RoundResult run_round(const epcomm::Group& g, epcomm::LowLatencyExchange& ex, const RoundSetup& su, bool jitter) {
  RoundResult res;
  ex.dispatch_send(input_of(su));
  if (jitter) std::this_thread::sleep_for(std::chrono::milliseconds(2 * g.rank()));
  const epcomm::LowLatencyRecv r = ex.dispatch_recv();
  check_dispatch(g, su, r);
  const std::vector<std::byte> y = expert_outputs(g, su, r);
  for (int j = 0; j < r.num_local_experts; ++j) {
    const auto* first = static_cast<const std::byte*>(r.rows) + j * r.rows_per_expert * static_cast<int64_t>(r.row_bytes);
    res.rows.insert(res.rows.end(), first, first + r.counts[j] * r.row_bytes);
  }
  ex.combine_send(y.data());
  if (jitter) std::this_thread::sleep_for(std::chrono::milliseconds(2 * (g.size() - g.rank())));
  res.out.assign(static_cast<std::size_t>(su.input.num_tokens) * su.shape.hidden * epcomm::dtype_size(su.config.dtype),
                 std::byte{0x7f});
  ex.combine_recv(res.out.data());
  check_combine(su, res.out);
  return res;
}

class LowLatencyTest : public MpiTest, public testing::WithParamInterface<LlCase> {};

TEST_P(LowLatencyTest, MatchesReferenceAndIsDeterministic) {
  const epcomm::Group g(MPI_COMM_WORLD);
  const RoundSetup su = make_setup(g, GetParam());
  epcomm::LowLatencyExchange ex(g, su.config);
  const RoundResult first = run_round(g, ex, su, false);
  ASSERT_FALSE(HasFailure());
  // Same inputs, another arrival order: the same bits.
  const RoundResult second = run_round(g, ex, su, true);
  EXPECT_EQ(first.rows, second.rows);
  EXPECT_EQ(first.out, second.out);
  // More rounds than the two parity buffers, with new inputs each time.
  for (uint64_t i = 1; i <= 3 && !HasFailure(); ++i) run_round(g, ex, make_setup(g, GetParam(), 100 * i), i == 2);
}

const LlCase kCases[] = {
    {"bf16_h7168_top8", 4, 8, 7168, 16, DType::kBF16, Format::kBF16, Format::kBF16, 0.0, 1},
    {"fp8_bf16_h7168_top8", 4, 8, 7168, 16, DType::kBF16, Format::kFP8, Format::kBF16, 0.1, 2},
    {"ue8m0_logfmt10_h2048_top9", 5, 9, 2048, 12, DType::kBF16, Format::kFP8UE8M0, Format::kLogFMT10, 0.1, 3},
    {"fp8_logfmt10_h128_top1", 2, 1, 128, 32, DType::kBF16, Format::kFP8, Format::kLogFMT10, 0.0, 4},
    {"bf16_bf16_h300_top3", 3, 3, 300, 20, DType::kBF16, Format::kBF16, Format::kBF16, 0.2, 5},
    {"f32_in_bf16_wire_h130_top2", 2, 2, 130, 24, DType::kF32, Format::kBF16, Format::kF32, 0.1, 6},
    {"ue8m0_logfmt8_h257_top5", 3, 5, 257, 10, DType::kF32, Format::kFP8UE8M0, Format::kLogFMT8, 0.0, 7},
    {"all_dropped", 2, 2, 128, 8, DType::kBF16, Format::kFP8, Format::kBF16, 1.0, 8},
};

INSTANTIATE_TEST_SUITE_P(Cases, LowLatencyTest, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<LlCase>& p) { return p.param.name; });

// Every top-k from 1 to 9 on one exchange per k, the formats taking turns.
TEST_F(MpiTest, EveryTopkOneToNine) {
  const epcomm::Group g(MPI_COMM_WORLD);
  const Format dispatch[] = {Format::kBF16, Format::kFP8, Format::kFP8UE8M0};
  const Format combine[] = {Format::kBF16, Format::kLogFMT10, Format::kF32, Format::kLogFMT16};
  for (int k = 1; k <= 9 && !HasFailure(); ++k) {
    const LlCase c{"topk", 5, k, 128 + 64 * (k % 2), 12, DType::kBF16, dispatch[k % 3], combine[k % 4], 0.1,
                   static_cast<uint64_t>(40 + k)};
    const RoundSetup su = make_setup(g, c);
    epcomm::LowLatencyExchange ex(g, su.config);
    run_round(g, ex, su, false);
  }
}

// Dispatch alone, several rounds without combine: the parity buffers keep a fast
// sender's next round away from rows its owner still reads.
TEST_F(MpiTest, DispatchOnlyRounds) {
  const epcomm::Group g(MPI_COMM_WORLD);
  const LlCase c{"dispatch_only", 3, 4, 256, 16, DType::kBF16, Format::kFP8, Format::kBF16, 0.1, 50};
  const RoundSetup first = make_setup(g, c);
  epcomm::LowLatencyExchange ex(g, first.config);
  for (uint64_t i = 0; i < 5 && !HasFailure(); ++i) {
    const RoundSetup su = make_setup(g, c, 7 * i);
    ex.dispatch_send(input_of(su));
    if (g.rank() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a slow owner
    check_dispatch(g, su, ex.dispatch_recv());
  }
}

// The buffers a config needs, stated before construction.
TEST_F(MpiTest, MemoryNeededIsStatedUpFront) {
  epcomm::LowLatencyConfig c;
  c.num_experts = 256;
  c.topk = 8;
  c.hidden = 7168;
  c.max_tokens_per_rank = 128;
  c.dispatch_format = Format::kFP8;
  const epcomm::LowLatencyMemory one_node = epcomm::LowLatencyExchange::memory_needed(c, 2, 2);
  const epcomm::LowLatencyMemory two_nodes = epcomm::LowLatencyExchange::memory_needed(c, 2, 1);
  // Two parity copies of [J][P][T] FP8 rows in the shared part, the [J][P*T] output
  // in the private one; staging and landing only with a second node.
  const std::size_t slots = std::size_t{128} * 2 * 128;
  EXPECT_GE(one_node.shared_bytes, 2 * slots * epcomm::encoded_row_bytes(Format::kFP8, 7168));
  EXPECT_GE(one_node.private_bytes, slots * epcomm::encoded_row_bytes(Format::kFP8, 7168));
  EXPECT_EQ(two_nodes.shared_bytes, one_node.shared_bytes);
  EXPECT_GT(two_nodes.private_bytes, one_node.private_bytes);
  EXPECT_EQ(one_node.total(), one_node.shared_bytes + one_node.private_bytes);
  c.dispatch_format = Format::kLogFMT8;
  try {
    epcomm::LowLatencyExchange::memory_needed(c, 2, 2);
    ADD_FAILURE() << "a LogFMT dispatch format was accepted";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("logfmt8"), std::string::npos) << e.what();
  }
}

// LowLatencyConfig::gpu_sm_budget: a negative budget is refused before any
// allocation, by memory_needed and by the constructor on every rank, naming the
// value (and the rank); the device's SM count bounds it from above
// (test_low_latency_gpu.cpp).
TEST_F(MpiTest, NegativeSmBudgetIsRefused) {
  const epcomm::Group g(MPI_COMM_WORLD);
  epcomm::LowLatencyConfig c;
  c.num_experts = 4 * g.size();
  c.topk = 2;
  c.hidden = 64;
  c.max_tokens_per_rank = 8;
  c.gpu_sm_budget = -2;
  expect_error([&] { epcomm::LowLatencyExchange::memory_needed(c, 2, 2); }, epcomm::ErrorCode::kInvalidArgument,
               {"gpu_sm_budget=-2"});
  expect_error([&] { epcomm::LowLatencyExchange ex(g, c); }, epcomm::ErrorCode::kInvalidArgument,
               {"gpu_sm_budget=-2", "rank " + std::to_string(g.rank())});
  c.gpu_sm_budget = 20;  // host memory: kept as the config, no kernels to bound
  epcomm::LowLatencyExchange ex(g, c);
  EXPECT_EQ(ex.config().gpu_sm_budget, 20);
}

// A bad input on one rank fails that round on every rank, naming the rank and the
// value; the next round works.
TEST_F(MpiTest, BadInputFailsEveryRankAndExchangeStaysUsable) {
  const epcomm::Group g(MPI_COMM_WORLD);
  const LlCase c{"bad_input", 3, 4, 200, 8, DType::kBF16, Format::kFP8, Format::kLogFMT10, 0.0, 60};
  const RoundSetup su = make_setup(g, c);
  epcomm::LowLatencyExchange ex(g, su.config);
  const int bad_rank = g.size() - 1;
  struct Bad {
    const char* what;
    std::string value;  // as the message names it
  };
  const Bad bads[] = {{"too many tokens", "num_tokens=9"}, {"expert id", "=" + std::to_string(su.shape.experts + 3)},
                      {"NaN weight", "nan"}, {"repeated expert", "twice"}};
  for (const Bad& bad : bads) {
    RoundSetup mine = su;
    std::vector<std::byte> big_x;
    if (g.rank() == bad_rank) {
      if (std::string(bad.what) == "too many tokens") {
        mine.input = make_rank_input(su.shape, 9, 99, 0.0, 61, g.rank());
        mine.x = to_dtype(mine.input.x, DType::kBF16);
      } else if (std::string(bad.what) == "expert id") {
        mine.input = make_rank_input(su.shape, 4, 99, 0.0, 62, g.rank());
        mine.x = to_dtype(mine.input.x, DType::kBF16);
        mine.input.topk_idx[5] = su.shape.experts + 3;
      } else if (std::string(bad.what) == "NaN weight") {
        mine.input = make_rank_input(su.shape, 4, 99, 0.0, 63, g.rank());
        mine.x = to_dtype(mine.input.x, DType::kBF16);
        mine.input.topk_weights[2] = std::nanf("");
      } else {
        mine.input = make_rank_input(su.shape, 4, 99, 0.0, 64, g.rank());
        mine.x = to_dtype(mine.input.x, DType::kBF16);
        mine.input.topk_idx[1] = mine.input.topk_idx[0];
      }
      expect_error([&] { ex.dispatch_send(input_of(mine)); }, epcomm::ErrorCode::kInvalidArgument,
                   {"epcomm rank " + std::to_string(bad_rank), bad.value});
    } else {
      ex.dispatch_send(input_of(mine));
      expect_error([&] { ex.dispatch_recv(); }, epcomm::ErrorCode::kInvalidArgument,
                   {"rejected by rank " + std::to_string(bad_rank), bad.value});
    }
    run_round(g, ex, su, false);
    ASSERT_FALSE(HasFailure()) << bad.what;
  }
  // An expert output LogFMT cannot encode: the combine fails everywhere.
  ex.dispatch_send(input_of(su));
  const epcomm::LowLatencyRecv r = ex.dispatch_recv();
  std::vector<std::byte> y = expert_outputs(g, su, r);
  const bool has_rows = r.counts[0] > 0;
  int any = has_rows ? 1 : 0, first_with_rows = 0;
  MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  ASSERT_EQ(any, 1);
  std::vector<int> all(static_cast<std::size_t>(g.size()));
  int mine_has = has_rows ? 1 : 0;
  MPI_Allgather(&mine_has, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  while (!all[first_with_rows]) ++first_with_rows;
  std::vector<float> out(static_cast<std::size_t>(su.input.num_tokens) * c.hidden);
  if (g.rank() == first_with_rows) {
    const uint16_t inf = 0x7f80;  // BF16 infinity in row 0, column 3
    std::memcpy(y.data() + 3 * 2, &inf, 2);
    expect_error([&] { ex.combine_send(y.data()); }, epcomm::ErrorCode::kInvalidArgument,
                 {"column 3", "logfmt10"});
  } else {
    ex.combine_send(y.data());
    expect_error([&] { ex.combine_recv(out.data()); }, epcomm::ErrorCode::kInvalidArgument,
                 {"rejected by rank " + std::to_string(first_with_rows), "column 3"});
  }
  run_round(g, ex, su, false);
  // A dispatch without combine, then a rejected one: the rejected round has no
  // rows to combine, on any rank.
  ex.dispatch_send(input_of(su));
  // A slow owner: the rank that rejects next must not run two rounds ahead of it.
  if (g.rank() == (bad_rank == 0 ? 1 : 0)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  check_dispatch(g, su, ex.dispatch_recv());
  if (g.rank() == bad_rank) {
    RoundSetup bad = su;
    bad.input.topk_weights.assign(bad.input.topk_weights.size(), std::nanf(""));
    bad.input.num_tokens = std::max(bad.input.num_tokens, 1);
    bad.input.topk_idx.assign(static_cast<std::size_t>(bad.input.num_tokens) * su.shape.topk, -1);
    bad.input.topk_idx[0] = 0;
    bad.input.topk_weights.resize(bad.input.topk_idx.size(), std::nanf(""));
    bad.input.x.resize(static_cast<std::size_t>(bad.input.num_tokens) * c.hidden, 1.0f);
    bad.x = to_dtype(bad.input.x, DType::kBF16);
    expect_error([&] { ex.dispatch_send(input_of(bad)); }, epcomm::ErrorCode::kInvalidArgument, {"nan"});
  } else {
    ex.dispatch_send(input_of(su));
    expect_error([&] { ex.dispatch_recv(); }, epcomm::ErrorCode::kInvalidArgument,
                 {"rejected by rank " + std::to_string(bad_rank)});
  }
  expect_error([&] { ex.combine_send(y.data()); }, epcomm::ErrorCode::kInvalidArgument,
               {"without a dispatch_recv"});
  run_round(g, ex, su, false);
  // Calls out of order are refused on the calling rank alone, taking nothing.
  expect_error([&] { ex.dispatch_recv(); }, epcomm::ErrorCode::kInvalidArgument, {"without a dispatch_send"});
  expect_error([&] { ex.combine_recv(out.data()); }, epcomm::ErrorCode::kInvalidArgument, {"without a combine_send"});
  run_round(g, ex, su, false);
}

// A rank that never sends: the others time out naming it, and the exchange
// refuses further work.
TEST_F(MpiTest, SilentPeerTimesOutNamingIt) {
  epcomm::GroupOptions o;
  o.timeout_s = 1;
  const epcomm::Group g(MPI_COMM_WORLD, o);
  const LlCase c{"silent", 2, 2, 128, 4, DType::kBF16, Format::kBF16, Format::kBF16, 0.0, 70};
  const RoundSetup su = make_setup(g, c);
  {
    epcomm::LowLatencyExchange ex(g, su.config);
    const int silent = g.size() - 1;
    if (g.rank() != silent) {
      ex.dispatch_send(input_of(su));
      expect_error([&] { ex.dispatch_recv(); }, epcomm::ErrorCode::kTimeout,
                   {"timed out after 1 s in dispatch_recv", "waiting for rank(s) " + std::to_string(silent)});
      expect_error([&] { ex.dispatch_send(input_of(su)); }, epcomm::ErrorCode::kGroupFailed, {"timed out"});
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  // A new exchange on the same group works.
  epcomm::LowLatencyExchange again(g, su.config);
  run_round(g, again, su, false);
}

}  // namespace
}  // namespace epcomm_test
