// SPDX-License-Identifier: MIT
// What training and cached routing need from the exchange, against the independent
// reference of support/test_data: a dispatch along an earlier dispatch's route (the
// backward of combine), a dispatch on an earlier dispatch's layout (no layout
// exchange) and its misuse, and the unweighted combine (the backward of dispatch).
// Run under mpiexec with 2 and 4 ranks, 4 as 2 emulated nodes.
#include <epcomm/epcomm.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "support/expect_error.hpp"
#include "support/mpi_test.hpp"
#include "support/test_data.hpp"

namespace epcomm_test {
namespace {

using epcomm::DType;
using epcomm::Format;

struct ReuseSetup {
  Shape shape;
  epcomm::ExchangeConfig config;
  RankInput input;
  std::vector<RankInput> all;
};

// Random routing on every rank (one rank sends nothing), F32 tokens and wire, so
// every value arrives exactly.
ReuseSetup make_setup(const epcomm::Group& g, uint64_t seed, int alignment) {
  Shape s{g.size(), g.ranks_per_node(), 3 * g.size(), 4, 70};
  std::mt19937 rng(static_cast<unsigned>(seed) * 7919u + static_cast<unsigned>(g.rank()));
  const int max_tokens = 24;
  const int tokens = g.size() > 1 && g.rank() == 1 ? 0 : std::uniform_int_distribution<int>(1, max_tokens)(rng);
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = s.experts;
  cfg.topk = s.topk;
  cfg.hidden = s.hidden;
  cfg.max_tokens_per_rank = max_tokens;
  cfg.dtype = DType::kF32;
  cfg.dispatch_format = Format::kF32;
  cfg.combine_format = Format::kF32;
  cfg.expert_alignment = alignment;
  cfg.max_inflight = 2;
  RankInput in = make_rank_input(s, tokens, 99, 0.15, seed, g.rank());
  std::vector<RankInput> all = allgather_inputs(in, s, g.comm());
  return ReuseSetup{s, cfg, std::move(in), std::move(all)};
}

epcomm::DispatchInput input_of(const RankInput& in) {
  epcomm::DispatchInput d;
  d.x = in.x.data();
  d.topk_idx = in.topk_idx.data();
  d.topk_weights = in.topk_weights.data();
  d.num_tokens = in.num_tokens;
  return d;
}

// The same routing with other token values: what a gradient looks like.
RankInput with_new_x(RankInput in, uint64_t seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::uniform_int_distribution<int> v(-512, 512);
  for (float& x : in.x) x = static_cast<float>(v(rng)) / 64.0f;
  return in;
}

// Rows of `h` against the reference layout of `all`: per local expert, rows in
// (source rank, token) order with the source's values, then padding.
void expect_rows_match_reference(const epcomm::DispatchHandle& h, const std::vector<RankInput>& all,
                                 const ReuseSetup& su, int rank) {
  const auto expected = expected_dispatch(all, su.shape, rank);
  const int H = su.shape.hidden;
  const auto* rows = static_cast<const float*>(h.rows());
  int64_t offset = 0;
  for (int j = 0; j < su.shape.experts_per_rank(); ++j) {
    ASSERT_EQ(h.expert_offset(j), offset) << "local expert " << j;
    ASSERT_EQ(h.expert_count(j), static_cast<int64_t>(expected[j].size())) << "local expert " << j;
    for (std::size_t i = 0; i < expected[j].size(); ++i) {
      const int64_t r = offset + static_cast<int64_t>(i);
      ASSERT_EQ(h.row_src_rank()[r], expected[j][i].src_rank) << "row " << r;
      ASSERT_EQ(h.row_src_token()[r], expected[j][i].src_token) << "row " << r;
      ASSERT_EQ(h.row_weights()[r], expected[j][i].weight) << "row " << r;
      for (int x = 0; x < H; ++x) ASSERT_EQ(rows[r * H + x], expected[j][i].x[x]) << "row " << r << " column " << x;
    }
    const int64_t a = su.config.expert_alignment;
    offset += (static_cast<int64_t>(expected[j].size()) + a - 1) / a * a;
  }
  ASSERT_EQ(h.num_rows(), offset);
}

// Expert outputs: expert_fn of each real row, zero for padding.
std::vector<float> expert_outputs(const epcomm::DispatchHandle& h, const ReuseSetup& su, int rank) {
  const int H = su.shape.hidden, J = su.shape.experts_per_rank();
  const auto* rows = static_cast<const float*>(h.rows());
  std::vector<float> y(static_cast<std::size_t>(h.num_rows()) * H, 0.0f);
  for (int j = 0; j < J; ++j) {
    for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
      for (int x = 0; x < H; ++x) y[r * H + x] = expert_fn(rank * J + j, x, rows[r * H + x]);
    }
  }
  return y;
}

// Combines `h` (expert_fn outputs) and compares with the reference for `in`.
void expect_combine_matches_reference(epcomm::Exchange& ex, const epcomm::DispatchHandle& h, const RankInput& in,
                                      const ReuseSetup& su, int rank) {
  const std::vector<float> y = expert_outputs(h, su, rank);
  std::vector<float> out(static_cast<std::size_t>(in.num_tokens) * su.shape.hidden);
  ex.combine(h, y.data(), h.num_rows(), out.data(), in.num_tokens);
  std::vector<double> ref, mag;
  expected_combine(in, su.shape, ref, mag);
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ASSERT_LE(std::fabs(out[i] - ref[i]), 1e-6 * mag[i] + 1e-6) << "element " << i;
  }
}

TEST_F(MpiTest, DispatchAlongAHandleDeliversNewRowsInTheSameLayout) {
  epcomm::Group g(MPI_COMM_WORLD);
  for (int alignment : {1, 4}) {
    SCOPED_TRACE("expert_alignment " + std::to_string(alignment));
    const ReuseSetup su = make_setup(g, 31 + alignment, alignment);
    epcomm::Exchange ex(g, su.config);
    for (int round = 0; round < 3; ++round) {  // slots rotate; the route may sit in either
      epcomm::DispatchHandle first = ex.dispatch(input_of(su.input));
      expect_rows_match_reference(first, su.all, su, g.rank());
      ASSERT_FALSE(HasFailure());

      // New values, same topk_idx and weights: the reference is computed from the
      // gathered new inputs, as for any dispatch.
      const RankInput grad = with_new_x(su.input, 1000 + 10 * round + g.rank());
      std::vector<RankInput> all_grad;
      for (int r = 0; r < g.size(); ++r) all_grad.push_back(with_new_x(su.all[r], 1000 + 10 * round + r));
      epcomm::DispatchHandle second = ex.dispatch(input_of(grad), first);
      expect_rows_match_reference(second, all_grad, su, g.rank());
      ASSERT_FALSE(HasFailure());
      // Expert outputs of the second dispatch combine back like any other.
      expect_combine_matches_reference(ex, second, grad, su, g.rank());
      ASSERT_FALSE(HasFailure());
    }
  }
}

TEST_F(MpiTest, DispatchAlongAHandleChecksTokensAndLeavesTheExchangeUsable) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 41, 1);
  epcomm::Exchange ex(g, su.config);
  epcomm::DispatchHandle first = ex.dispatch(input_of(su.input));
  RankInput shorter = su.input;
  ++shorter.num_tokens;
  shorter.x.resize(shorter.x.size() + su.shape.hidden);
  shorter.topk_idx.resize(shorter.topk_idx.size() + su.shape.topk, -1);
  shorter.topk_weights.resize(shorter.topk_weights.size() + su.shape.topk, 0.0f);
  try {
    ex.dispatch(input_of(shorter), first);
    FAIL() << "a dispatch along a handle with another token count must throw";
  } catch (const epcomm::Error& e) {
    EXPECT_EQ(e.code(), epcomm::ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("num_tokens=" + std::to_string(shorter.num_tokens)), std::string::npos)
        << e.what();
  }
  // Both slots were free again (the failed dispatch took none): a second route
  // dispatch and a combine still work.
  epcomm::DispatchHandle second = ex.dispatch(input_of(su.input), first);
  expect_rows_match_reference(second, su.all, su, g.rank());
}

// A bad expert id throws before the dispatch takes its slot: every slot stays usable.
TEST_F(MpiTest, RejectedDispatchTakesNoSlot) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 43, 1);
  epcomm::Exchange ex(g, su.config);
  RankInput bad = su.input;
  bad.num_tokens = std::max(bad.num_tokens, 1);
  bad.x.resize(static_cast<std::size_t>(bad.num_tokens) * su.shape.hidden, 0.0f);
  bad.topk_idx.resize(static_cast<std::size_t>(bad.num_tokens) * su.shape.topk, -1);
  bad.topk_weights.resize(bad.topk_idx.size(), 0.0f);
  bad.topk_idx[0] = su.shape.experts;
  for (int attempt = 0; attempt < su.config.max_inflight + 1; ++attempt) {
    EXPECT_THROW(ex.dispatch(input_of(bad)), epcomm::Error);
  }
  epcomm::DispatchHandle h = ex.dispatch(input_of(su.input));
  expect_rows_match_reference(h, su.all, su, g.rank());
}

TEST_F(MpiTest, UnweightedCombineSumsEachTokensRows) {
  epcomm::Group g(MPI_COMM_WORLD);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(epcomm::to_string(dtype));
    ReuseSetup su = make_setup(g, 51, 2);
    su.config.dtype = dtype;
    su.config.combine_format = dtype == DType::kF32 ? Format::kF32 : Format::kBF16;
    epcomm::Exchange ex(g, su.config);
    std::vector<std::byte> x(su.input.x.size() * epcomm::dtype_size(dtype));
    for (std::size_t i = 0; i < su.input.x.size(); ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(x.data() + i * 4, &su.input.x[i], 4);
      } else {  // the inputs are BF16-exact: the top half is the value
        uint32_t u;
        std::memcpy(&u, &su.input.x[i], 4);
        const auto b = static_cast<uint16_t>(u >> 16);
        std::memcpy(x.data() + i * 2, &b, 2);
      }
    }
    epcomm::DispatchInput in = input_of(su.input);
    in.x = x.data();
    epcomm::DispatchHandle h = ex.dispatch(in);
    const int H = su.shape.hidden;
    std::vector<float> rows(static_cast<std::size_t>(h.num_rows()) * H, 0.0f);
    h.decode_rows(rows.data(), DType::kF32);
    const int J = su.shape.experts_per_rank();
    // Outputs in the exchange dtype (BF16: rounded, which the tolerance covers).
    std::vector<std::byte> y(static_cast<std::size_t>(h.num_rows()) * H * epcomm::dtype_size(dtype));
    for (int j = 0; j < J; ++j) {
      for (int64_t r = h.expert_offset(j); r < h.expert_offset(j) + h.expert_count(j); ++r) {
        for (int c = 0; c < H; ++c) {
          const float v = expert_fn(g.rank() * J + j, c, rows[r * H + c]);
          const std::size_t at = static_cast<std::size_t>(r) * H + c;
          if (dtype == DType::kF32) {
            std::memcpy(y.data() + at * 4, &v, 4);
          } else {
            uint32_t u;
            std::memcpy(&u, &v, 4);
            u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
            const auto b = static_cast<uint16_t>(u >> 16);
            std::memcpy(y.data() + at * 2, &b, 2);
          }
        }
      }
    }
    std::vector<std::byte> out(static_cast<std::size_t>(su.input.num_tokens) * H * epcomm::dtype_size(dtype));
    epcomm::CombineOptions unweighted;
    unweighted.weighted = false;
    ex.combine(h, y.data(), h.num_rows(), out.data(), su.input.num_tokens, unweighted);

    // Reference: per token, the plain sum over its chosen experts of expert_fn,
    // computed from this rank's input with every weight set to 1.
    RankInput ones = su.input;
    for (std::size_t i = 0; i < ones.topk_weights.size(); ++i) ones.topk_weights[i] = 1.0f;
    std::vector<double> ref, mag;
    expected_combine(ones, su.shape, ref, mag);
    // Rounding of the expert output to BF16 (2^-8 relative), the BF16 partial on the
    // wire and the BF16 result: 3 units.
    const double rel = dtype == DType::kF32 ? 1e-6 : 3 * std::ldexp(1.0, -8);
    for (std::size_t i = 0; i < ref.size(); ++i) {
      float got;
      if (dtype == DType::kF32) {
        std::memcpy(&got, out.data() + i * 4, 4);
      } else {
        uint16_t b;
        std::memcpy(&b, out.data() + i * 2, 2);
        const uint32_t u = static_cast<uint32_t>(b) << 16;
        std::memcpy(&got, &u, 4);
      }
      ASSERT_LE(std::fabs(got - ref[i]), rel * mag[i] + 1e-6)
          << "token " << i / H << " column " << i % H << ": got " << got << " want " << ref[i];
    }
    // The weighted combine along the same dispatch still applies the weights.
    std::vector<std::byte> weighted(out.size());
    ex.combine(h, y.data(), h.num_rows(), weighted.data(), su.input.num_tokens);
    expected_combine(su.input, su.shape, ref, mag);
    for (std::size_t i = 0; i < ref.size() && dtype == DType::kF32; ++i) {
      float got;
      std::memcpy(&got, weighted.data() + i * 4, 4);
      ASSERT_LE(std::fabs(got - ref[i]), 1e-6 * mag[i] + 1e-6) << "weighted element " << i;
    }
  }
}

// The tokens of `in` in reverse order: another topk_idx with the same counts per
// expert, rank and node.
RankInput reversed(const RankInput& in, const Shape& s) {
  RankInput r = in;
  for (int t = 0; t < in.num_tokens; ++t) {
    const int u = in.num_tokens - 1 - t;
    std::copy_n(in.x.begin() + static_cast<std::ptrdiff_t>(u) * s.hidden, s.hidden,
                r.x.begin() + static_cast<std::ptrdiff_t>(t) * s.hidden);
    std::copy_n(in.topk_idx.begin() + static_cast<std::ptrdiff_t>(u) * s.topk, s.topk,
                r.topk_idx.begin() + static_cast<std::ptrdiff_t>(t) * s.topk);
    std::copy_n(in.topk_weights.begin() + static_cast<std::ptrdiff_t>(u) * s.topk, s.topk,
                r.topk_weights.begin() + static_cast<std::ptrdiff_t>(t) * s.topk);
  }
  return r;
}

// Other counts: the first expert any token chose, dropped.
void drop_first_expert(RankInput& in) {
  auto chosen = std::find_if(in.topk_idx.begin(), in.topk_idx.end(), [](int32_t e) { return e >= 0; });
  ASSERT_NE(chosen, in.topk_idx.end()) << "an input whose tokens chose no expert";
  *chosen = -1;
}

TEST_F(MpiTest, DispatchOnASavedLayoutDeliversRowsWithoutTheLayoutExchange) {
  epcomm::Group g(MPI_COMM_WORLD);
  for (int alignment : {1, 4}) {
    SCOPED_TRACE("expert_alignment " + std::to_string(alignment));
    const ReuseSetup su = make_setup(g, 61 + alignment, alignment);
    epcomm::Exchange ex(g, su.config);
    epcomm::DispatchLayout layout;
    {
      // The layout outlives its handle: the handle's slot is free again.
      epcomm::DispatchHandle first = ex.dispatch(input_of(su.input));
      layout = first.layout();
      ASSERT_GT(first.stats().layout_bytes, 0);
    }
    for (int round = 0; round < 3; ++round) {
      // New values (gradients, the next layer's activations) on the same routing.
      const RankInput next = with_new_x(su.input, 2000 + 10 * round + g.rank());
      std::vector<RankInput> all_next;
      for (int r = 0; r < g.size(); ++r) all_next.push_back(with_new_x(su.all[r], 2000 + 10 * round + r));
      epcomm::DispatchHandle h = ex.dispatch(input_of(next), layout);
      expect_rows_match_reference(h, all_next, su, g.rank());
      ASSERT_FALSE(HasFailure());
      EXPECT_EQ(h.stats().layout_bytes, 0);
      expect_combine_matches_reference(ex, h, next, su, g.rank());
      ASSERT_FALSE(HasFailure());
      // The handle of a dispatch on a layout gives that layout again.
      layout = h.layout();
    }
    // Another topk_idx with the same counts (the tokens reversed) fits the layout;
    // its rows are placed by its own topk_idx.
    const RankInput rev = reversed(su.input, su.shape);
    std::vector<RankInput> all_rev;
    for (int r = 0; r < g.size(); ++r) all_rev.push_back(reversed(su.all[r], su.shape));
    epcomm::DispatchHandle h = ex.dispatch(input_of(rev), layout);
    expect_rows_match_reference(h, all_rev, su, g.rank());
    ASSERT_FALSE(HasFailure());
    expect_combine_matches_reference(ex, h, rev, su, g.rank());
  }
}

// Two dispatches on one layout in flight at once, in both slots, with a dispatch
// that exchanges its layout between them.
TEST_F(MpiTest, DispatchesOnASavedLayoutOverlap) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 71, 2);
  epcomm::Exchange ex(g, su.config);
  const epcomm::DispatchLayout layout = ex.dispatch(input_of(su.input)).layout();
  for (int round = 0; round < 2; ++round) {
    const RankInput a = with_new_x(su.input, 3000 + 10 * round + g.rank());
    const RankInput b = with_new_x(su.input, 4000 + 10 * round + g.rank());
    std::vector<RankInput> all_a, all_b;
    for (int r = 0; r < g.size(); ++r) {
      all_a.push_back(with_new_x(su.all[r], 3000 + 10 * round + r));
      all_b.push_back(with_new_x(su.all[r], 4000 + 10 * round + r));
    }
    epcomm::DispatchHandle ha = ex.dispatch_begin(input_of(a), layout);
    epcomm::DispatchHandle hb = round == 0 ? ex.dispatch_begin(input_of(b), layout) : ex.dispatch_begin(input_of(b));
    hb.wait();
    ha.wait();
    expect_rows_match_reference(ha, all_a, su, g.rank());
    expect_rows_match_reference(hb, all_b, su, g.rank());
    ASSERT_FALSE(HasFailure());
  }
}

// Every rank passes a topk_idx with other counts: each rejects it naming itself and
// the first count that differs; the exchange and the layout stay usable.
TEST_F(MpiTest, DispatchOnALayoutWithOtherCountsIsRejectedOnEveryRank) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 81, 1);
  epcomm::Exchange ex(g, su.config);
  const epcomm::DispatchLayout layout = ex.dispatch(input_of(su.input)).layout();
  RankInput other = su.input;
  if (other.num_tokens == 0) {  // one more token, to expert 0
    other.num_tokens = 1;
    other.x.assign(su.shape.hidden, 1.0f);
    other.topk_idx.assign(su.shape.topk, -1);
    other.topk_weights.assign(su.shape.topk, 0.5f);
    other.topk_idx[0] = 0;
  } else {
    drop_first_expert(other);
  }
  expect_error([&] { ex.dispatch_begin(input_of(other), layout); }, epcomm::ErrorCode::kInvalidArgument,
               {"epcomm rank " + std::to_string(g.rank()) + ":", "on the layout of dispatch 1", "tokens to expert"});
  ASSERT_FALSE(HasFailure());
  epcomm::DispatchHandle h = ex.dispatch(input_of(su.input), layout);
  expect_rows_match_reference(h, su.all, su, g.rank());
  ASSERT_FALSE(HasFailure());
  expect_combine_matches_reference(ex, h, su.input, su, g.rank());
}

// Rank 0 alone passes other counts: it rejects the begin, every other rank fails
// naming it (in the first dispatch, if still waiting for it when the news comes);
// a new Exchange on the group works.
TEST_F(MpiTest, DispatchOnALayoutWithOtherCountsOnOneRankFailsTheGroup) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 83, 1);
  {
    epcomm::Exchange ex(g, su.config);
    auto dispatch_twice = [&] {
      const epcomm::DispatchLayout layout = ex.dispatch(input_of(su.input)).layout();
      RankInput other = su.input;
      if (g.rank() == 0) drop_first_expert(other);  // rank 0 always has tokens
      ex.dispatch(input_of(other), layout);
    };
    if (g.rank() == 0) {
      expect_error(dispatch_twice, epcomm::ErrorCode::kInvalidArgument,
                   {"epcomm rank 0:", "on the layout of dispatch 1"});
    } else {
      expect_error(dispatch_twice, epcomm::ErrorCode::kGroupFailed,
                   {"epcomm rank " + std::to_string(g.rank()) + ":", "because of rank 0",
                    "on the layout of dispatch 1"});
    }
  }
  ASSERT_FALSE(HasFailure());
  epcomm::Exchange fresh(g, su.config);
  epcomm::DispatchHandle h = fresh.dispatch(input_of(su.input));
  expect_rows_match_reference(h, su.all, su, g.rank());
}

// Rank 0 dispatches on a layout where the others exchange theirs: every rank fails,
// naming both operations (kMismatch where it compared the headers, kGroupFailed
// where the news came from a peer). A rank still waiting for the first dispatch
// when the news comes fails there.
TEST_F(MpiTest, RanksThatDisagreeOnReusingALayoutFail) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 87, 1);
  epcomm::Exchange ex(g, su.config);
  try {
    const epcomm::DispatchLayout layout = ex.dispatch(input_of(su.input)).layout();
    if (g.rank() == 0) {
      ex.dispatch(input_of(su.input), layout);
    } else {
      ex.dispatch(input_of(su.input));
    }
    ADD_FAILURE() << "rank " << g.rank() << " did not fail";
  } catch (const epcomm::Error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(e.code() == epcomm::ErrorCode::kMismatch || e.code() == epcomm::ErrorCode::kGroupFailed) << what;
    EXPECT_NE(what.find("began dispatch 2 on the layout of dispatch 1"), std::string::npos) << what;
    // ... and the other rank's own dispatch, followed by "while" or ":".
    EXPECT_TRUE(what.find("began dispatch 2 while") != std::string::npos ||
                what.find("began dispatch 2:") != std::string::npos)
        << what;
  }
}

// A layout is for the exchange that made it; an empty one is no layout.
TEST_F(MpiTest, ForeignOrEmptyLayoutIsRejected) {
  epcomm::Group g(MPI_COMM_WORLD);
  const ReuseSetup su = make_setup(g, 89, 1);
  epcomm::Exchange a(g, su.config);
  epcomm::Exchange b(g, su.config);
  const epcomm::DispatchLayout from_a = a.dispatch(input_of(su.input)).layout();
  expect_error([&] { b.dispatch_begin(input_of(su.input), from_a); }, epcomm::ErrorCode::kInvalidArgument,
               {"epcomm rank " + std::to_string(g.rank()) + ":", "another Exchange"});
  expect_error([&] { b.dispatch_begin(input_of(su.input), epcomm::DispatchLayout()); },
               epcomm::ErrorCode::kInvalidArgument, {"empty DispatchLayout"});
  ASSERT_FALSE(HasFailure());
  epcomm::DispatchHandle h = b.dispatch(input_of(su.input));
  expect_rows_match_reference(h, su.all, su, g.rank());
}

}  // namespace
}  // namespace epcomm_test
