// SPDX-License-Identifier: MIT
#include "report.hpp"

#include "common/run_header.hpp"

#include <epcomm/types.hpp>

#include <cstdio>

namespace epcomm_bench {
namespace {

struct Column {
  const char* name;
  int width;
};

// nccl-tests / OSU style: right-aligned, fixed widths, header once.
constexpr Column kColumns[] = {
    {"ranks", 6},   {"nodes", 6},        {"tokens", 7},   {"hidden", 7},   {"experts", 8},
    {"topk", 5},    {"maxn", 5},         {"net", 6},      {"dtype", 6},    {"dfmt", 10},    {"cfmt", 10},
    {"disp_min", 10}, {"disp_p10", 10}, {"disp_us", 10}, {"disp_p90", 10}, {"disp_max", 10},
    {"comb_min", 10}, {"comb_p10", 10}, {"comb_us", 10}, {"comb_p90", 10}, {"comb_max", 10},
    {"total_us", 10}, {"base_us", 10},   {"speedup", 8},  {"floor_us", 10}, {"eff", 6},  {"inter_MB", 10}, {"intra_MB", 10},
    {"base_inter_MB", 14}, {"inter_GB/s", 11}, {"algbw_GB/s", 11}, {"check", 6},
};
constexpr std::size_t kNumColumns = sizeof kColumns / sizeof kColumns[0];

std::string fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string megabytes(int64_t bytes) { return fixed(static_cast<double>(bytes) / 1e6, 3); }

void print_line(const std::string (&cells)[kNumColumns]) {
  std::string line;
  for (std::size_t c = 0; c < kNumColumns; ++c) {
    // Widths include one separating space, kept even when a value outgrows its column.
    const std::size_t width = static_cast<std::size_t>(kColumns[c].width) - (c > 0 ? 1 : 0);
    if (c > 0) line += ' ';
    if (cells[c].size() < width) line.append(width - cells[c].size(), ' ');
    line += cells[c];
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace

int64_t Result::bytes_per_rank() const {
  return static_cast<int64_t>(config.tokens) * config.topk * config.hidden *
         static_cast<int64_t>(epcomm::dtype_size(config.dtype));
}

// Every inter-node dispatch row carries token id, topk ids and weights (4 + 8 topk
// bytes) and the encoded row; every combine row just the encoded partial.
int64_t Result::dispatch_internode_bytes_bf16() const {
  const int64_t meta = 4 + 8 * static_cast<int64_t>(config.topk);
  const int64_t row = static_cast<int64_t>(epcomm::encoded_row_bytes(config.dispatch_format, config.hidden));
  const int64_t bf16 = static_cast<int64_t>(epcomm::encoded_row_bytes(epcomm::Format::kBF16, config.hidden));
  return dispatch_internode_bytes / (meta + row) * (meta + bf16);
}

int64_t Result::combine_internode_bytes_bf16() const {
  const int64_t row = static_cast<int64_t>(epcomm::encoded_row_bytes(config.combine_format, config.hidden));
  const int64_t bf16 = static_cast<int64_t>(epcomm::encoded_row_bytes(epcomm::Format::kBF16, config.hidden));
  return combine_internode_bytes / row * bf16;
}

namespace {
// bytes / us = MB/s; / 1e3 = GB/s.
double gbps(int64_t bytes, double us) { return static_cast<double>(bytes) / us / 1e3; }
}  // namespace

double Result::algbw_gbps() const { return gbps(2 * bytes_per_rank(), total_us()); }
double Result::internode_gbps() const { return gbps(internode_bytes, total_us()); }
double Result::dispatch_internode_gbps() const { return gbps(dispatch_internode_bytes, dispatch.p50); }
double Result::combine_internode_gbps() const { return gbps(combine_internode_bytes, combine.p50); }
double Result::baseline_internode_gbps() const { return gbps(baseline_internode_bytes, baseline_us()); }

Report::Report(const RunInfo& info)
    : info_(info), json_(info.options->json, info.options->json_out) {
  const Options& o = *info_.options;
  std::printf("# epcomm-bench: %d ranks, %d nodes x %d ranks, warmup %d, iters %d, seed %llu, "
              "alignment %d, mover threads %d\n",
              info_.ranks, info_.nodes, info_.ranks_per_node, o.warmup, o.iters,
              static_cast<unsigned long long>(o.seed), o.alignment, info_.mover_threads);
  std::printf("# times: min, p10, median (_us), p90, max over iterations of the slowest rank (us); bytes: "
              "one dispatch + combine, summed over ranks (MB = 1e6 B); inter_GB/s: inter-node bytes / median "
              "total time; floor_us: memcpy of the bytes each rank must move, eff = floor_us / total_us\n");
  std::string cells[kNumColumns];
  for (std::size_t c = 0; c < kNumColumns; ++c) cells[c] = kColumns[c].name;
  cells[0] = std::string("#") + kColumns[0].name;  // header lines start with '#', like the notes
  print_line(cells);
}

void Report::note(const std::string& text) {
  std::printf("# %s\n", text.c_str());
  std::fflush(stdout);
}

void Report::row(const Result& r) {
  const BenchConfig& c = r.config;
  const std::string cells[kNumColumns] = {
      std::to_string(r.ranks),
      std::to_string(r.nodes),
      std::to_string(c.tokens),
      std::to_string(c.hidden),
      std::to_string(c.experts),
      std::to_string(c.topk),
      std::to_string(c.max_nodes),
      r.transport,
      dtype_name(c.dtype),
      epcomm::to_string(c.dispatch_format),
      epcomm::to_string(c.combine_format),
      fixed(r.dispatch.min, 1),
      fixed(r.dispatch.p10, 1),
      fixed(r.dispatch.p50, 1),
      fixed(r.dispatch.p90, 1),
      fixed(r.dispatch.max, 1),
      fixed(r.combine.min, 1),
      fixed(r.combine.p10, 1),
      fixed(r.combine.p50, 1),
      fixed(r.combine.p90, 1),
      fixed(r.combine.max, 1),
      fixed(r.total_us(), 1),
      fixed(r.baseline_us(), 1),
      fixed(r.speedup(), 2),
      fixed(r.memcpy_floor_us(), 1),
      fixed(r.efficiency_vs_memcpy(), 2),
      megabytes(r.internode_bytes),
      megabytes(r.intranode_bytes),
      megabytes(r.baseline_internode_bytes),
      fixed(r.internode_gbps(), 3),
      fixed(r.algbw_gbps(), 3),
      r.check ? "true" : "false",
  };
  print_line(cells);
  const Options& o = *info_.options;
  if (o.reuse_layout) {
    note("dispatch on a reused layout (DispatchLayout): min " + fixed(r.reuse_dispatch.min, 1) + ", p10 " +
         fixed(r.reuse_dispatch.p10, 1) + ", median " + fixed(r.reuse_dispatch.p50, 1) + ", p90 " +
         fixed(r.reuse_dispatch.p90, 1) + ", max " + fixed(r.reuse_dispatch.max, 1) + " us: " +
         fixed(r.reuse_dispatch.p50 / r.dispatch.p50, 3) + " x the dispatch that exchanges its layout");
  }
  if (o.checksum) {
    const double total = r.checksum_dispatch.p50 + r.checksum_combine.p50;
    note("with ExchangeConfig::checksum: dispatch median " + fixed(r.checksum_dispatch.p50, 1) + ", combine median " +
         fixed(r.checksum_combine.p50, 1) + ", total " + fixed(total, 1) + " us: " + fixed(total / r.total_us(), 3) +
         " x the same exchange without (dispatch " + fixed(r.checksum_dispatch.p50 / r.dispatch.p50, 3) +
         ", combine " + fixed(r.checksum_combine.p50 / r.combine.p50, 3) + ")");
  }

  if (!json_.enabled()) return;
  RunHeader header;
  header.bench = "epcomm-bench";
  header.ranks = r.ranks;
  header.nodes = r.nodes;
  header.transport = r.transport;
  header.progress_thread = info_.progress_thread;
  Json j = run_header_json(header);
  j["ranks_per_node"] = info_.ranks_per_node;
  j["tokens"] = c.tokens;
  j["hidden"] = c.hidden;
  j["experts"] = c.experts;
  j["topk"] = c.topk;
  j["max_nodes"] = c.max_nodes;
  j["effective_max_nodes"] = r.effective_max_nodes;
  j["dtype"] = dtype_name(c.dtype);
  j["dispatch_format"] = epcomm::to_string(c.dispatch_format);
  j["combine_format"] = epcomm::to_string(c.combine_format);
  j["alignment"] = o.alignment;
  j["warmup"] = o.warmup;
  j["iters"] = o.iters;
  j["seed"] = o.seed;
  j["max_recv_rows"] = r.max_recv_rows;
  add_spread(j, "dispatch_us", r.dispatch, 3);
  add_spread(j, "combine_us", r.combine, 3);
  j["total_us"] = rounded(r.total_us(), 3);
  add_spread(j, "baseline_dispatch_us", r.baseline_dispatch, 3);
  add_spread(j, "baseline_combine_us", r.baseline_combine, 3);
  j["baseline_us"] = rounded(r.baseline_us(), 3);
  if (o.reuse_layout) {
    add_spread(j, "reuse_dispatch_us", r.reuse_dispatch, 3);
    j["reuse_dispatch_ratio"] = rounded(r.reuse_dispatch.p50 / r.dispatch.p50, 4);
  }
  if (o.checksum) {
    add_spread(j, "checksum_dispatch_us", r.checksum_dispatch, 3);
    add_spread(j, "checksum_combine_us", r.checksum_combine, 3);
    const double total = r.checksum_dispatch.p50 + r.checksum_combine.p50;
    j["checksum_total_us"] = rounded(total, 3);
    j["checksum_ratio"] = rounded(total / r.total_us(), 4);
  }
  j["speedup_vs_baseline"] = rounded(r.speedup(), 4);
  j["mover_threads"] = r.mover_threads;
  add_spread(j, "memcpy_floor_dispatch_us", r.memcpy_floor_dispatch, 3);
  add_spread(j, "memcpy_floor_combine_us", r.memcpy_floor_combine, 3);
  j["memcpy_floor_us"] = rounded(r.memcpy_floor_us(), 3);
  j["memcpy_floor_bytes"] = r.memcpy_floor_bytes;
  j["efficiency_vs_memcpy"] = rounded(r.efficiency_vs_memcpy(), 4);
  j["internode_bytes"] = r.internode_bytes;
  j["dispatch_internode_bytes"] = r.dispatch_internode_bytes;
  j["combine_internode_bytes"] = r.combine_internode_bytes;
  j["dispatch_internode_bytes_bf16"] = r.dispatch_internode_bytes_bf16();
  j["combine_internode_bytes_bf16"] = r.combine_internode_bytes_bf16();
  j["intranode_bytes"] = r.intranode_bytes;
  j["layout_bytes"] = r.layout_bytes;
  j["baseline_internode_bytes"] = r.baseline_internode_bytes;
  j["baseline_intranode_bytes"] = r.baseline_intranode_bytes;
  j["bytes_per_rank"] = r.bytes_per_rank();
  j["algbw_gbps"] = rounded(r.algbw_gbps(), 4);
  j["internode_gbps"] = rounded(r.internode_gbps(), 4);
  j["dispatch_internode_gbps"] = rounded(r.dispatch_internode_gbps(), 4);
  j["combine_internode_gbps"] = rounded(r.combine_internode_gbps(), 4);
  j["baseline_internode_gbps"] = rounded(r.baseline_internode_gbps(), 4);
  j["check"] = r.check;
  json_.write(j);
}

}  // namespace epcomm_bench
