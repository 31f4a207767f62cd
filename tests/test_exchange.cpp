// SPDX-License-Identifier: MIT
// Multi-rank dispatch/combine against the independent reference of
// support/test_data: run under mpiexec with 1..8 ranks and 1..4 emulated nodes.
#include <epcomm/epcomm.hpp>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "epcomm_kernels/codec.hpp"
#include "support/expect_error.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;

struct Case {
  std::string name;
  int experts_per_rank;
  int topk;
  int hidden;
  int max_tokens;
  DType dtype;
  Format dispatch_format;
  Format combine_format;
  int alignment;
  int max_nodes;      // node limit of the random routing (large = none)
  double drop_prob;   // chance of a -1 slot
  uint64_t seed;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.name; }

// Inputs and shapes for one case on this job's ranks.
struct CaseSetup {
  epcomm::Group& group;
  Shape shape;
  epcomm::ExchangeConfig config;
  RankInput input;
  std::vector<RankInput> all;
};

bool is_plain(Format f) { return f == Format::kF32 || f == Format::kBF16; }

// An input as the experts see it: x rows encoded in the dispatch format `f` and
// decoded again (unchanged for the plain formats, whose conversions are exact here).
RankInput quantised(RankInput in, Format f, int hidden) {
  if (is_plain(f)) return in;
  const auto& codec = epcomm::kernels::codec_for(f);
  std::vector<std::byte> row(codec.row_bytes(hidden));
  for (int t = 0; t < in.num_tokens; ++t) {
    float* x = in.x.data() + static_cast<std::size_t>(t) * hidden;
    EXPECT_EQ(codec.encode_row(x, DType::kF32, hidden, row.data()), -1);
    codec.decode_row(row.data(), hidden, x, DType::kF32);
  }
  return in;
}

CaseSetup make_setup(epcomm::Group& g, const Case& c, uint64_t seed_offset = 0) {
  Shape s{g.size(), g.ranks_per_node(), c.experts_per_rank * g.size(), 0, c.hidden};
  s.topk = std::min(c.topk, s.experts);
  std::mt19937 rng(static_cast<unsigned>(c.seed + seed_offset) * 7919u + static_cast<unsigned>(g.rank()));
  int tokens = std::uniform_int_distribution<int>(0, c.max_tokens)(rng);
  if (g.size() > 1 && g.rank() == 1) tokens = 0;  // a rank with nothing to send
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = s.experts;
  cfg.topk = s.topk;
  cfg.hidden = c.hidden;
  cfg.max_tokens_per_rank = c.max_tokens;
  cfg.dtype = c.dtype;
  cfg.dispatch_format = c.dispatch_format;
  cfg.combine_format = c.combine_format;
  cfg.expert_alignment = c.alignment;
  cfg.max_inflight = 3;
  RankInput in = make_rank_input(s, tokens, c.max_nodes, c.drop_prob, c.seed + seed_offset, g.rank());
  std::vector<RankInput> all = allgather_inputs(in, s, g.comm());
  return CaseSetup{g, s, cfg, std::move(in), std::move(all)};
}

float element(const void* row, Format f, int h) {
  if (f == Format::kF32) return static_cast<const float*>(row)[h];
  const uint32_t u = static_cast<uint32_t>(static_cast<const uint16_t*>(row)[h]) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

Format plain(DType t) { return t == DType::kF32 ? Format::kF32 : Format::kBF16; }

struct RunResult {
  std::vector<std::byte> rows;
  std::vector<std::byte> out;
};

epcomm::DispatchInput input_of(const CaseSetup& su, const std::vector<std::byte>& x) {
  epcomm::DispatchInput in;
  in.x = x.data();
  in.topk_idx = su.input.topk_idx.data();
  in.topk_weights = su.input.topk_weights.data();
  in.num_tokens = su.input.num_tokens;
  return in;
}

// Received rows decoded to FP32, through the handle's own decoder.
std::vector<float> decoded_rows(const epcomm::DispatchHandle& h, int hidden) {
  std::vector<float> rows(static_cast<std::size_t>(h.num_rows()) * hidden, 0.0f);
  h.decode_rows(rows.data(), DType::kF32);
  return rows;
}

void check_dispatch(const CaseSetup& su, const epcomm::DispatchHandle& h) {
  const Shape& s = su.shape;
  std::vector<RankInput> all_seen;
  for (const RankInput& r : su.all) all_seen.push_back(quantised(r, su.config.dispatch_format, s.hidden));
  const auto expected = expected_dispatch(all_seen, s, su.group.rank());
  ASSERT_EQ(h.num_local_experts(), s.experts_per_rank());
  const Format f = su.config.dispatch_format;
  const std::vector<float> rows = decoded_rows(h, s.hidden);
  int64_t offset = 0;
  for (int j = 0; j < s.experts_per_rank(); ++j) {
    const auto& exp = expected[j];
    ASSERT_EQ(h.expert_offset(j), offset) << "local expert " << j;
    ASSERT_EQ(h.expert_count(j), static_cast<int64_t>(exp.size())) << "local expert " << j;
    const int64_t padded = (static_cast<int64_t>(exp.size()) + su.config.expert_alignment - 1) /
                           su.config.expert_alignment * su.config.expert_alignment;
    for (int64_t i = 0; i < padded; ++i) {
      const int64_t r = offset + i;
      const void* row = static_cast<const std::byte*>(h.rows()) + r * h.row_bytes();
      if (i >= static_cast<int64_t>(exp.size())) {
        ASSERT_EQ(h.row_src_rank()[r], -1) << "padding row " << r;
        ASSERT_EQ(h.row_weights()[r], 0.0f) << "padding row " << r;
        if (is_plain(f)) {
          for (int x = 0; x < s.hidden; ++x) ASSERT_EQ(element(row, f, x), 0.0f) << "padding row " << r;
        }
        continue;
      }
      ASSERT_EQ(h.row_src_rank()[r], exp[i].src_rank) << "expert " << j << " row " << i;
      ASSERT_EQ(h.row_src_token()[r], exp[i].src_token) << "expert " << j << " row " << i;
      ASSERT_EQ(h.row_weights()[r], exp[i].weight) << "expert " << j << " row " << i;
      for (int x = 0; x < s.hidden; ++x) {
        const float got = rows[static_cast<std::size_t>(r) * s.hidden + x];
        ASSERT_EQ(got, exp[i].x[x]) << "expert " << j << " row " << i << " element " << x;
        if (is_plain(f)) {
          ASSERT_EQ(element(row, f, x), got);
        }
      }
    }
    offset += padded;
  }
  ASSERT_EQ(h.num_rows(), offset);
}

// Tolerance from the formats: every BF16 rounding (expert output, final output)
// adds at most its unit roundoff 2^-8 relative to the magnitude it rounds, which is
// bounded by sum_k |w_k f_k|. A LogFMT-n partial is off by at most half the ratio
// between neighbouring levels, 2^step - 1 with step at most 32 / (2^(n-1) - 2) (the
// clamped range over the levels). The combine format rounds twice in a row: the
// owner partials a node peer reads (their magnitudes sum to at most the bound) and
// the node partial on the wire summed from them: r (2 + r) for a rounding r.
double combine_tolerance(const epcomm::ExchangeConfig& c) {
  double rel = 1e-6;
  if (c.dtype == DType::kBF16) rel += 2 * std::ldexp(1.0, -8);
  double r = 0;
  if (c.combine_format == Format::kBF16) r = std::ldexp(1.0, -8);
  if (const int bits = epcomm::logfmt_bits(c.combine_format)) {
    r = (std::exp2(32.0 / ((1 << (bits - 1)) - 2)) - 1) / 2;
  }
  return rel + r * (2 + r);
}

// One dispatch, then `combines` combines along it (each must give the same bits:
// a later combine reuses the receive blocks of the earlier one).
RunResult run_exchange(epcomm::Exchange& ex, const CaseSetup& su, bool jitter, int combines = 1) {
  const Shape& s = su.shape;
  const auto x = to_dtype(su.input.x, su.config.dtype);
  epcomm::DispatchHandle h = ex.dispatch_begin(input_of(su, x));
  if (jitter) std::this_thread::sleep_for(std::chrono::milliseconds(3 * su.group.rank()));
  h.wait();
  check_dispatch(su, h);

  // Expert outputs in the dispatch layout.
  const int J = s.experts_per_rank();
  std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * s.hidden, 0.0f);
  const std::vector<float> rows = decoded_rows(h, s.hidden);
  for (int j = 0; j < J; ++j) {
    const int e = su.group.rank() * J + j;
    for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
      for (int x2 = 0; x2 < s.hidden; ++x2) {
        const std::size_t at = static_cast<std::size_t>(r) * s.hidden + x2;
        y[at] = expert_fn(e, x2, rows[at]);
      }
    }
  }
  std::vector<std::byte> ybytes(y.size() * epcomm::dtype_size(su.config.dtype));
  for (std::size_t i = 0; i < y.size(); ++i) {
    if (su.config.dtype == DType::kF32) {
      std::memcpy(ybytes.data() + i * 4, &y[i], 4);
    } else {  // round to nearest even, as a BF16 expert kernel would
      uint32_t u;
      std::memcpy(&u, &y[i], 4);
      u += 0x7fffu + ((u >> 16) & 1u);
      const uint16_t b = static_cast<uint16_t>(u >> 16);
      std::memcpy(ybytes.data() + i * 2, &b, 2);
    }
  }
  RunResult run;
  run.out.resize(static_cast<std::size_t>(su.input.num_tokens) * s.hidden * epcomm::dtype_size(su.config.dtype));
  for (int k = 0; k < combines; ++k) {
    std::vector<std::byte> out(run.out.size());
    epcomm::CombineHandle c = ex.combine_begin(h, ybytes.data(), h.num_rows(), out.data(), su.input.num_tokens);
    if (jitter) std::this_thread::sleep_for(std::chrono::milliseconds(3 * (su.group.size() - su.group.rank())));
    c.wait();
    if (k == 0) {
      run.out = std::move(out);
    } else {
      EXPECT_EQ(out, run.out) << "combine " << k + 1 << " along one dispatch differs from the first";
    }
  }

  std::vector<double> ref, mag;
  expected_combine(quantised(su.input, su.config.dispatch_format, s.hidden), s, ref, mag);
  const double tol = combine_tolerance(su.config);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const float got = element(run.out.data(), plain(su.config.dtype), static_cast<int>(i));
    EXPECT_LE(std::fabs(got - ref[i]), tol * mag[i] + 1e-6)
        << "token " << i / s.hidden << " element " << i % s.hidden << ": got " << got << " want " << ref[i];
    if (::testing::Test::HasFailure()) break;
  }
  // Deduplication: each (token, remote node) pair crosses the network exactly once,
  // as a record (index, ids, weights) and a row; a block's records are padded to a
  // multiple of 16 bytes.
  int64_t wire = 0;
  for (int64_t tokens : remote_node_tokens(su.input, s, su.group.node())) {
    const int64_t records = tokens * (4 + 8 * static_cast<int64_t>(s.topk));
    wire += (records + 15) / 16 * 16 + tokens * static_cast<int64_t>(h.row_bytes());
  }
  EXPECT_EQ(h.stats().internode_bytes, wire);
  run.rows.assign(static_cast<const std::byte*>(h.rows()),
                  static_cast<const std::byte*>(h.rows()) + h.num_rows() * h.row_bytes());
  return run;
}

class ExchangeTest : public MpiTest, public testing::WithParamInterface<Case> {};

TEST_P(ExchangeTest, MatchesReferenceAndIsDeterministic) {
  epcomm::Group g(MPI_COMM_WORLD);
  CaseSetup su = make_setup(g, GetParam());
  epcomm::Exchange ex(g, su.config);
  RunResult first = run_exchange(ex, su, false);
  ASSERT_FALSE(HasFailure());
  // Same inputs, different arrival order (rank-dependent delays): same bits.
  RunResult second = run_exchange(ex, su, true);
  EXPECT_EQ(first.rows, second.rows);
  EXPECT_EQ(first.out, second.out);
}

const Case kCases[] = {
    {"bf16_h7168_top8", 4, 8, 7168, 24, DType::kBF16, Format::kBF16, Format::kBF16, 1, 99, 0.0, 11},
    {"f32_h100_top2_pad4", 3, 2, 100, 40, DType::kF32, Format::kF32, Format::kF32, 4, 99, 0.1, 12},
    {"f32_in_bf16_wire", 2, 3, 130, 33, DType::kF32, Format::kBF16, Format::kF32, 1, 99, 0.2, 13},
    {"bf16_top1", 2, 1, 64, 50, DType::kBF16, Format::kBF16, Format::kBF16, 8, 99, 0.0, 14},
    {"node_limit_1", 4, 4, 96, 30, DType::kBF16, Format::kBF16, Format::kF32, 1, 1, 0.0, 15},
    {"node_limit_2_drops", 4, 8, 200, 30, DType::kF32, Format::kF32, Format::kBF16, 2, 2, 0.3, 16},
    {"all_dropped", 2, 2, 16, 8, DType::kF32, Format::kF32, Format::kF32, 1, 99, 1.0, 17},
    {"hidden_1_many_experts", 8, 8, 1, 64, DType::kF32, Format::kF32, Format::kF32, 2, 99, 0.1, 18},
    {"fp8_h300_top4", 4, 4, 300, 30, DType::kBF16, Format::kFP8, Format::kBF16, 1, 99, 0.1, 21},
    {"fp8_ue8m0_f32_logfmt10", 2, 3, 257, 20, DType::kF32, Format::kFP8UE8M0, Format::kLogFMT10, 2, 99, 0.1, 22},
    {"logfmt8_both_h7168", 4, 8, 7168, 12, DType::kBF16, Format::kLogFMT8, Format::kLogFMT8, 1, 99, 0.0, 23},
    {"logfmt3_in_logfmt16_out", 2, 2, 64, 20, DType::kF32, Format::kLogFMT3, Format::kLogFMT16, 1, 2, 0.0, 24},
};

INSTANTIATE_TEST_SUITE_P(Cases, ExchangeTest, testing::ValuesIn(kCases),
                         [](const testing::TestParamInfo<Case>& p) { return p.param.name; });

// Rows the caller quantised itself (x_encoded) travel as they are: the same bytes
// arrive as when the exchange quantises BF16 input.
TEST_F(MpiTest, PreEncodedFp8InputArrivesUnchanged) {
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c{"fp8_pre_encoded", 2, 4, 260, 24, DType::kBF16, Format::kFP8, Format::kBF16, 1, 99, 0.1, 31};
  CaseSetup su = make_setup(g, c);
  epcomm::Exchange ex(g, su.config);
  const auto x = to_dtype(su.input.x, su.config.dtype);
  const auto& codec = epcomm::kernels::codec_for(Format::kFP8);
  const std::size_t row = codec.row_bytes(c.hidden);
  std::vector<std::byte> encoded(static_cast<std::size_t>(su.input.num_tokens) * row);
  for (int t = 0; t < su.input.num_tokens; ++t) {
    ASSERT_EQ(codec.encode_row(x.data() + static_cast<std::size_t>(t) * c.hidden * 2, DType::kBF16, c.hidden,
                               encoded.data() + t * row),
              -1);
  }
  epcomm::DispatchHandle from_bf16 = ex.dispatch(input_of(su, x));
  check_dispatch(su, from_bf16);
  epcomm::DispatchInput pre = input_of(su, encoded);
  pre.x_encoded = true;
  epcomm::DispatchHandle from_fp8 = ex.dispatch(pre);
  ASSERT_EQ(from_fp8.num_rows(), from_bf16.num_rows());
  for (int64_t r = 0; r < from_fp8.num_rows(); ++r) {
    if (from_fp8.row_src_rank()[r] < 0) continue;  // padding bytes are unspecified
    ASSERT_EQ(0, std::memcmp(static_cast<const std::byte*>(from_fp8.rows()) + r * row,
                             static_cast<const std::byte*>(from_bf16.rows()) + r * row, row))
        << "row " << r;
  }
}

// Several micro-batches in flight on one exchange, completed in reverse order,
// give exactly what one-at-a-time exchanges give.
TEST_F(MpiTest, ThreeInFlightCompleteInAnyOrder) {
  epcomm::Group g(MPI_COMM_WORLD);
  const Case c = kCases[1];
  std::vector<CaseSetup> setups;
  for (uint64_t i = 0; i < 3; ++i) setups.push_back(make_setup(g, c, 100 * i));
  epcomm::Exchange ex(g, setups[0].config);
  std::vector<RunResult> blocking;
  for (const CaseSetup& su : setups) blocking.push_back(run_exchange(ex, su, false));
  ASSERT_FALSE(HasFailure());

  std::vector<std::vector<std::byte>> xs;
  for (const CaseSetup& su : setups) xs.push_back(to_dtype(su.input.x, su.config.dtype));
  std::vector<epcomm::DispatchHandle> hs;
  for (int i = 0; i < 3; ++i) hs.push_back(ex.dispatch_begin(input_of(setups[i], xs[i])));
  for (int i = 2; i >= 0; --i) hs[i].wait();
  for (int i = 0; i < 3; ++i) {
    const std::size_t bytes = static_cast<std::size_t>(hs[i].num_rows()) * hs[i].row_bytes();
    ASSERT_EQ(bytes, blocking[i].rows.size());
    EXPECT_EQ(0, std::memcmp(hs[i].rows(), blocking[i].rows.data(), bytes)) << "micro-batch " << i;
  }
  // Combine with identity-free outputs: reuse the dispatched rows as expert outputs.
  std::vector<std::vector<std::byte>> outs(3);
  std::vector<epcomm::CombineHandle> cs;
  for (int i = 0; i < 3; ++i) {
    outs[i].resize(static_cast<std::size_t>(setups[i].input.num_tokens) * c.hidden * 4);
    cs.push_back(ex.combine_begin(hs[i], hs[i].rows(), hs[i].num_rows(), outs[i].data(), setups[i].input.num_tokens));
  }
  for (int i : {1, 2, 0}) cs[i].wait();
  // Reference: the same combine, one at a time.
  for (int i = 0; i < 3; ++i) {
    std::vector<std::byte> again(outs[i].size());
    ex.combine(hs[i], hs[i].rows(), hs[i].num_rows(), again.data(), setups[i].input.num_tokens);
    EXPECT_EQ(outs[i], again) << "micro-batch " << i;
  }
}

// Routing produced by NodeLimitedRouter with every node limit feeds the exchange,
// and no token crosses to more nodes than the limit allows.
TEST_F(MpiTest, RouterOutputRespectsNodeLimitEndToEnd) {
  epcomm::Group g(MPI_COMM_WORLD);
  for (int m = 1; m <= g.num_nodes(); ++m) {
    Case c = kCases[0];
    c.hidden = 256;
    c.max_tokens = 32;
    CaseSetup su = make_setup(g, c, 500 + m);
    epcomm::RouterConfig rc;
    rc.num_experts = su.shape.experts;
    rc.topk = su.shape.topk;
    rc.num_nodes = g.num_nodes();
    rc.max_nodes = m;
    if (rc.topk > m * (rc.num_experts / rc.num_nodes)) continue;
    epcomm::NodeLimitedRouter router(rc);
    std::mt19937 rng(77 + g.rank());
    std::normal_distribution<float> logit;
    std::vector<float> logits(static_cast<std::size_t>(su.input.num_tokens) * rc.num_experts);
    for (float& l : logits) l = logit(rng);
    router.route(logits.data(), su.input.num_tokens, nullptr, su.input.topk_idx.data(), su.input.topk_weights.data());
    su.all = allgather_inputs(su.input, su.shape, g.comm());
    EXPECT_LE(remote_node_pairs(su.input, su.shape, g.node()), static_cast<int64_t>(su.input.num_tokens) * m);
    epcomm::Exchange ex(g, su.config);
    run_exchange(ex, su, false);
  }
}

// The verbs tier (RDMA writes at fixed offsets, clear-to-send from layouts and
// ready signals) against MPI's matched messages: same bits out, across slot reuse
// and repeated combines. Runs where every rank has a verbs port (the soft-RoCE
// guest, ctest -L verbs-vm); skipped elsewhere.
TEST_F(MpiTest, MpiAndVerbsTransportsGiveIdenticalResults) {
  epcomm::GroupOptions mpi_options, verbs_options;
  mpi_options.transport = epcomm::GroupOptions::Transport::kMpi;
  verbs_options.transport = epcomm::GroupOptions::Transport::kVerbs;
  epcomm::Group mpi_group(MPI_COMM_WORLD, mpi_options), verbs_group(MPI_COMM_WORLD, verbs_options);
  if (verbs_group.num_nodes() < 2) GTEST_SKIP() << "one node: nothing crosses the inter-node tier";
  for (const Case& c : kCases) {
    CaseSetup a = make_setup(mpi_group, c), b = make_setup(verbs_group, c);
    epcomm::Exchange ea(mpi_group, a.config);
    std::unique_ptr<epcomm::Exchange> eb;
    try {
      eb = std::make_unique<epcomm::Exchange>(verbs_group, b.config);
    } catch (const epcomm::Error& e) {
      // Every rank learns together that some rank has no port, and skips.
      if (e.code() == epcomm::ErrorCode::kUnsupported) GTEST_SKIP() << e.what();
      throw;
    }
    ASSERT_STREQ(ea.transport(), "mpi");
    ASSERT_STREQ(eb->transport(), "verbs");
    for (int round = 0; round < 3; ++round) {  // more rounds than slots: slots are reused
      RunResult ra = run_exchange(ea, a, false, 2), rb = run_exchange(*eb, b, round == 1, 2);
      EXPECT_EQ(ra.rows, rb.rows) << c.name << " round " << round;
      EXPECT_EQ(ra.out, rb.out) << c.name << " round " << round;
    }
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace epcomm_test

namespace epcomm_test {
namespace {

epcomm::GroupOptions with_progress(epcomm::GroupOptions::Progress p) {
  epcomm::GroupOptions o;
  o.progress = p;
  return o;
}

// The background thread and inline progress are two drivers of the same state
// machines: same bits out.
TEST_F(MpiTest, ProgressThreadAndInlineGiveIdenticalResults) {
  epcomm::Group threaded(MPI_COMM_WORLD, with_progress(epcomm::GroupOptions::Progress::kThread));
  epcomm::Group inline_group(MPI_COMM_WORLD, with_progress(epcomm::GroupOptions::Progress::kInline));
  ASSERT_TRUE(threaded.progress_thread());
  ASSERT_FALSE(inline_group.progress_thread());
  for (const Case& c : {kCases[0], kCases[5]}) {
    CaseSetup a = make_setup(threaded, c), b = make_setup(inline_group, c);
    epcomm::Exchange ea(threaded, a.config), eb(inline_group, b.config);
    RunResult ra = run_exchange(ea, a, true), rb = run_exchange(eb, b, false);
    EXPECT_EQ(ra.rows, rb.rows) << c.name;
    EXPECT_EQ(ra.out, rb.out) << c.name;
  }
}

// Rows are split across the row-moving threads, never a row's sum: one thread and
// three give the same bits, for every case (formats, padding, node limits), and a
// bad thread count is an error naming it.
TEST_F(MpiTest, MoverThreadCountsGiveIdenticalResults) {
  epcomm::GroupOptions one, three;
  one.mover_threads = 1;
  three.mover_threads = 3;
  epcomm::Group g1(MPI_COMM_WORLD, one), g3(MPI_COMM_WORLD, three);
  ASSERT_EQ(g1.mover_threads(), 1);
  ASSERT_EQ(g3.mover_threads(), 3);
  for (const Case& c : kCases) {
    CaseSetup a = make_setup(g1, c), b = make_setup(g3, c);
    epcomm::Exchange ea(g1, a.config), eb(g3, b.config);
    RunResult ra = run_exchange(ea, a, false), rb = run_exchange(eb, b, true);
    EXPECT_EQ(ra.rows, rb.rows) << c.name;
    EXPECT_EQ(ra.out, rb.out) << c.name;
    if (HasFailure()) break;
  }
  epcomm::GroupOptions bad;
  bad.mover_threads = -2;
  try {
    epcomm::Group g(MPI_COMM_WORLD, bad);
    ADD_FAILURE() << "no error for mover_threads=-2";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("mover_threads=-2"), std::string::npos) << e.what();
  }
}

// With the thread on, an exchange completes while the caller only sleeps; with it
// off, nothing moves until the caller waits.
TEST_F(MpiTest, ThreadProgressesWithoutWaitInlineDoesNot) {
  const Case c = kCases[1];
  for (auto mode : {epcomm::GroupOptions::Progress::kThread, epcomm::GroupOptions::Progress::kInline}) {
    epcomm::Group g(MPI_COMM_WORLD, with_progress(mode));
    CaseSetup su = make_setup(g, c);
    epcomm::Exchange ex(g, su.config);
    const auto x = to_dtype(su.input.x, su.config.dtype);
    epcomm::DispatchHandle h = ex.dispatch_begin(input_of(su, x));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    if (mode == epcomm::GroupOptions::Progress::kThread) {
      while (!h.done() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      EXPECT_TRUE(h.done()) << "the progress thread did not complete the dispatch";
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      EXPECT_FALSE(h.done()) << "inline progress moved without wait()";
    }
    h.wait();
    check_dispatch(su, h);
    MPI_Barrier(MPI_COMM_WORLD);  // no rank tears down while a peer still reads its slot
  }
}

// ExchangeConfig::gpu_sm_budget: a negative budget is refused at construction on
// every rank (all pass it), naming the value and the rank; EPCOMM_GPU_SM_BUDGET
// sets a budget the config leaves 0 (host memory runs no kernels and keeps it
// only as the config), and a bad value there names the variable. The bound above
// (the device's SM count) needs a GPU: test_exchange_gpu.cpp.
TEST_F(MpiTest, SmBudgetIsChecked) {
  epcomm::Group g(MPI_COMM_WORLD);
  CaseSetup su = make_setup(g, kCases[0]);
  su.config.gpu_sm_budget = -1;
  expect_error([&] { epcomm::Exchange ex(g, su.config); }, epcomm::ErrorCode::kInvalidArgument,
               {"gpu_sm_budget=-1", "rank " + std::to_string(g.rank())});
  su.config.gpu_sm_budget = 0;
  ASSERT_EQ(setenv("EPCOMM_GPU_SM_BUDGET", "7", 1), 0);
  {
    epcomm::Exchange ex(g, su.config);
    EXPECT_EQ(ex.config().gpu_sm_budget, 7);
  }
  su.config.gpu_sm_budget = 20;  // the config's own value wins
  {
    epcomm::Exchange ex(g, su.config);
    EXPECT_EQ(ex.config().gpu_sm_budget, 20);
  }
  su.config.gpu_sm_budget = 0;
  ASSERT_EQ(setenv("EPCOMM_GPU_SM_BUDGET", "-3", 1), 0);
  expect_error([&] { epcomm::Exchange ex(g, su.config); }, epcomm::ErrorCode::kInvalidArgument,
               {"EPCOMM_GPU_SM_BUDGET='-3'"});
  ASSERT_EQ(unsetenv("EPCOMM_GPU_SM_BUDGET"), 0);
}

}  // namespace
}  // namespace epcomm_test
