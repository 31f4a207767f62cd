// SPDX-License-Identifier: MIT
// bench/common: the order statistics against values worked out by hand (numpy's
// default linear interpolation), the command-line helpers against the exit statuses
// and values the bench programs promise, a JSON line read back by the parser, the
// memcpy floor's byte count against hand-counted rows and its threaded copy against
// the source bytes.
#include <gtest/gtest.h>

#include <epcomm/version.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/json_lines.hpp"
#include "common/memcpy_floor.hpp"
#include "common/parallel_copy.hpp"
#include "common/run_header.hpp"
#include "common/stats.hpp"

namespace {

using epcomm_bench::Spread;

TEST(BenchStats, SpreadInterpolatesBetweenOrderStatistics) {
  // 1..11 shuffled: position q * 10 of the sorted values, exact.
  const Spread a = epcomm_bench::spread_of({7, 3, 11, 1, 9, 5, 2, 10, 4, 8, 6});
  EXPECT_DOUBLE_EQ(a.min, 1);
  EXPECT_DOUBLE_EQ(a.p10, 2);
  EXPECT_DOUBLE_EQ(a.p50, 6);
  EXPECT_DOUBLE_EQ(a.p90, 10);
  EXPECT_DOUBLE_EQ(a.max, 11);
  // Even count: the median is the mean of the middle two; p10 sits at 0.3 between 1
  // and 2 (numpy.percentile([1, 2, 3, 4], 10) = 1.3), p90 at 0.7 between 3 and 4.
  const Spread b = epcomm_bench::spread_of({4, 1, 3, 2}, 1e6);
  EXPECT_DOUBLE_EQ(b.p50, 2.5e6);
  EXPECT_NEAR(b.p10, 1.3e6, 1e-6);
  EXPECT_NEAR(b.p90, 3.7e6, 1e-6);
  const Spread one = epcomm_bench::spread_of({5});
  EXPECT_DOUBLE_EQ(one.min, 5);
  EXPECT_DOUBLE_EQ(one.max, 5);
  EXPECT_THROW(epcomm_bench::spread_of({}), std::invalid_argument);
}

struct Parsed {
  std::vector<int> list{128};
  int count = 5;
  uint64_t seed = 1;
  std::vector<std::string> formats;
  std::optional<int> status;
};

Parsed parse(std::vector<std::string> args) {
  Parsed p;
  CLI::App app("test", "test");
  epcomm_bench::add_int_list(app, "--list", p.list, 1, "");
  epcomm_bench::add_number(app, "--count", p.count, 0, "");
  epcomm_bench::add_number<uint64_t>(app, "--seed", p.seed, 0, "");
  epcomm_bench::add_word_list(app, "--formats", p.formats, epcomm_bench::wire_format(), "");
  std::vector<char*> argv{const_cast<char*>("test")};
  for (std::string& a : args) argv.push_back(a.data());
  p.status = epcomm_bench::parse_command_line(app, static_cast<int>(argv.size()), argv.data(), false);
  return p;
}

TEST(BenchCli, GoodArgumentsAreTaken) {
  const Parsed p = parse({"--list", "1,2,30", "--count=0", "--seed", "18446744073709551615", "--formats",
                          "fp8,logfmt10"});
  EXPECT_FALSE(p.status.has_value());
  EXPECT_EQ(p.list, (std::vector<int>{1, 2, 30}));
  EXPECT_EQ(p.count, 0);
  EXPECT_EQ(p.seed, 18446744073709551615ull);
  EXPECT_EQ(epcomm_bench::to_formats(p.formats),
            (std::vector<epcomm::Format>{epcomm::Format::kFP8, epcomm::Format::kLogFMT10}));
  const Parsed defaults = parse({});
  EXPECT_FALSE(defaults.status.has_value());
  EXPECT_EQ(defaults.list, (std::vector<int>{128}));
  EXPECT_EQ(defaults.count, 5);
}

TEST(BenchCli, HelpIsZeroAndBadArgumentsAreTwo) {
  EXPECT_EQ(parse({"--help"}).status, 0);
  for (const std::vector<std::string>& bad : std::vector<std::vector<std::string>>{
           {"--list", "0"},        {"--list", "1,x"},   {"--list"},           {"--count", "-1"},
           {"--count", "1.5"},     {"--seed", "-1"},    {"--formats", "fp9"}, {"--unknown", "1"},
           {"stray"},              {"--list", "1", "2"}}) {
    EXPECT_EQ(parse(bad).status, 2) << bad[0] << " " << (bad.size() > 1 ? bad[1] : "");
  }
}

TEST(BenchJson, RunHeaderLeadsAndStringsAreEscaped) {
  epcomm_bench::RunHeader h;
  h.bench = "a \"quoted\" name\n";
  h.ranks = 4;
  h.nodes = 2;
  h.transport = "mpi";
  h.progress_thread = true;
  h.threads = 3;
  epcomm_bench::Json j = epcomm_bench::run_header_json(h);
  j["ranks"] = 8;  // a later key of the same name updates the header's in place
  j["x_us"] = epcomm_bench::rounded(1.23456, 3);
  epcomm_bench::add_spread(j, "t_us", Spread{1, 2, 3, 4, 5}, 1);
  const nlohmann::json back = nlohmann::json::parse(j.dump());
  EXPECT_EQ(back["bench"], h.bench);
  EXPECT_EQ(back["version"], EPCOMM_VERSION_STRING);
  EXPECT_FALSE(back["git_commit"].get<std::string>().empty());
  EXPECT_EQ(back["git_commit"].get<std::string>().find('/'), std::string::npos);
  EXPECT_EQ(back["ranks"], 8);
  EXPECT_EQ(back["nodes"], 2);
  EXPECT_EQ(back["transport"], "mpi");
  EXPECT_EQ(back["progress_thread"], true);
  EXPECT_EQ(back["threads"], 3);
  EXPECT_DOUBLE_EQ(back["x_us"].get<double>(), 1.235);
  EXPECT_EQ(back["t_us"], 3);
  EXPECT_EQ(back["t_us_min"], 1);
  EXPECT_EQ(back["t_us_p10"], 2);
  EXPECT_EQ(back["t_us_p90"], 4);
  EXPECT_EQ(back["t_us_max"], 5);
  EXPECT_EQ(j.begin().key(), "bench");
  EXPECT_EQ(j.dump().find('\n'), std::string::npos);  // one object, one line
}

TEST(BenchMemcpyFloor, CountsTheRowsRoutedToTheRanksExperts) {
  // 8 experts over 4 ranks: rank r holds experts 2r and 2r + 1.
  const std::vector<int64_t> load{3, 0, 5, 2, 1, 4, 0, 7};
  const int64_t want_rows[] = {3, 7, 5, 7};
  // Hidden 7168: an FP8 row is 7168 codes + 56 FP32 scales = 7392 bytes, a BF16
  // expert output 14336.
  for (int rank = 0; rank < 4; ++rank) {
    const epcomm_bench::FloorBytes b = epcomm_bench::memcpy_floor_bytes(load, 4, rank, 7392, 14336);
    EXPECT_EQ(b.rows, want_rows[rank]) << "rank " << rank;
    EXPECT_EQ(b.dispatch, want_rows[rank] * 7392) << "rank " << rank;
    EXPECT_EQ(b.combine, want_rows[rank] * 14336) << "rank " << rank;
    EXPECT_EQ(b.total(), want_rows[rank] * (7392 + 14336)) << "rank " << rank;
  }
  // One rank holds every expert: every pair is its row.
  EXPECT_EQ(epcomm_bench::memcpy_floor_bytes(load, 1, 0, 2, 4).total(), 22 * 6);
  EXPECT_THROW(epcomm_bench::memcpy_floor_bytes(load, 3, 0, 2, 4), std::invalid_argument);  // 8 % 3
  EXPECT_THROW(epcomm_bench::memcpy_floor_bytes(load, 4, 4, 2, 4), std::invalid_argument);
  EXPECT_THROW(epcomm_bench::memcpy_floor_bytes(load, 0, 0, 2, 4), std::invalid_argument);
}

TEST(BenchParallelCopy, PartsTileTheRangeInWholeCacheLines) {
  for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{64}, std::size_t{65}, std::size_t{1000003}}) {
    for (int n = 1; n <= 7; ++n) {
      std::size_t next = 0;
      for (int i = 0; i < n; ++i) {
        const auto [begin, end] = epcomm_bench::ParallelCopy::part(bytes, i, n);
        EXPECT_EQ(begin, next) << bytes << " bytes, part " << i << " of " << n;
        EXPECT_LE(begin, end);
        EXPECT_TRUE(begin % 64 == 0 || begin == bytes) << bytes << " bytes, part " << i << " of " << n;
        next = end;
      }
      EXPECT_EQ(next, bytes) << bytes << " bytes in " << n << " parts";
    }
  }
}

TEST(BenchParallelCopy, CopiesEveryByteAndNothingElse) {
  std::mt19937 rng(5);
  for (int threads : {1, 2, 3, 5}) {
    epcomm_bench::ParallelCopy copy(threads);
    EXPECT_EQ(copy.threads(), threads);
    for (std::size_t bytes : {std::size_t{0}, std::size_t{1}, std::size_t{63}, std::size_t{129}, std::size_t{1000003}}) {
      std::vector<uint8_t> src(bytes), dst(bytes + 64, 0xa5);
      for (uint8_t& b : src) b = static_cast<uint8_t>(rng());
      copy(dst.data(), src.data(), bytes);
      // std::equal, not memcmp: an empty vector's data() may be null, which memcmp may not take.
      ASSERT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << threads << " threads, " << bytes << " bytes";
      for (std::size_t i = bytes; i < dst.size(); ++i) ASSERT_EQ(dst[i], 0xa5) << "written past the end at " << i;
    }
  }
  EXPECT_THROW(epcomm_bench::ParallelCopy(0), std::invalid_argument);
}

}  // namespace
