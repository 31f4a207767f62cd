// SPDX-License-Identifier: MIT
#include "report.hpp"

#include <epcomm/types.hpp>

#include <cerrno>
#include <cstring>
#include <stdexcept>

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
    {"disp_us", 10}, {"comb_us", 10},
    {"total_us", 10}, {"base_us", 10},   {"speedup", 8},  {"inter_MB", 10}, {"intra_MB", 10},
    {"base_inter_MB", 14}, {"algbw_GB/s", 11}, {"check", 6},
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

// Builds one JSON object; keys are fixed identifiers and the only string value is
// a dtype name, so nothing needs escaping.
class JsonLine {
 public:
  JsonLine& add(const char* key, int64_t value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const char* key, int value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const char* key, uint64_t value) { return raw(key, std::to_string(value)); }
  JsonLine& add(const char* key, double value, int decimals) { return raw(key, fixed(value, decimals)); }
  JsonLine& add(const char* key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonLine& add(const char* key, const char* value) {
    return raw(key, std::string("\"") + value + "\"");
  }
  std::string str() const { return text_ + "}"; }

 private:
  JsonLine& raw(const char* key, const std::string& value) {
    text_ += text_.empty() ? "{" : ",";
    text_ += std::string("\"") + key + "\":" + value;
    return *this;
  }
  std::string text_;
};

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

double Result::algbw_gbps() const {
  // bytes / us = MB/s; / 1e3 = GB/s.
  return 2.0 * static_cast<double>(bytes_per_rank()) / total_us() / 1e3;
}

Report::Report(const RunInfo& info) : info_(info) {
  const Options& o = *info_.options;
  if (!o.json_out.empty()) {
    json_file_ = std::fopen(o.json_out.c_str(), "w");
    if (json_file_ == nullptr) {
      throw std::runtime_error("cannot open --json-out " + o.json_out + ": " +
                               std::strerror(errno));
    }
  }
  std::printf("# epcomm-bench: %d ranks, %d nodes x %d ranks, warmup %d, iters %d, seed %llu, "
              "alignment %d\n",
              info_.ranks, info_.nodes, info_.ranks_per_node, o.warmup, o.iters,
              static_cast<unsigned long long>(o.seed), o.alignment);
  std::printf("# times: median over iterations of the slowest rank (us); bytes: one dispatch + "
              "combine, summed over ranks (MB = 1e6 B)\n");
  std::string cells[kNumColumns];
  for (std::size_t c = 0; c < kNumColumns; ++c) cells[c] = kColumns[c].name;
  cells[0] = std::string("#") + kColumns[0].name;  // header lines start with '#', like the notes
  print_line(cells);
}

Report::~Report() {
  if (json_file_ != nullptr) std::fclose(json_file_);
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
      fixed(r.dispatch_us, 1),
      fixed(r.combine_us, 1),
      fixed(r.total_us(), 1),
      fixed(r.baseline_us(), 1),
      fixed(r.speedup(), 2),
      megabytes(r.internode_bytes),
      megabytes(r.intranode_bytes),
      megabytes(r.baseline_internode_bytes),
      fixed(r.algbw_gbps(), 3),
      r.check ? "true" : "false",
  };
  print_line(cells);

  const Options& o = *info_.options;
  JsonLine j;
  j.add("ranks", r.ranks)
      .add("nodes", r.nodes)
      .add("ranks_per_node", info_.ranks_per_node)
      .add("tokens", c.tokens)
      .add("hidden", c.hidden)
      .add("experts", c.experts)
      .add("topk", c.topk)
      .add("max_nodes", c.max_nodes)
      .add("effective_max_nodes", r.effective_max_nodes)
      .add("transport", r.transport.c_str())
      .add("dtype", dtype_name(c.dtype))
      .add("dispatch_format", epcomm::to_string(c.dispatch_format))
      .add("combine_format", epcomm::to_string(c.combine_format))
      .add("alignment", o.alignment)
      .add("warmup", o.warmup)
      .add("iters", o.iters)
      .add("seed", o.seed)
      .add("max_recv_rows", r.max_recv_rows)
      .add("dispatch_us", r.dispatch_us, 3)
      .add("combine_us", r.combine_us, 3)
      .add("total_us", r.total_us(), 3)
      .add("baseline_dispatch_us", r.baseline_dispatch_us, 3)
      .add("baseline_combine_us", r.baseline_combine_us, 3)
      .add("baseline_us", r.baseline_us(), 3)
      .add("speedup_vs_baseline", r.speedup(), 4)
      .add("internode_bytes", r.internode_bytes)
      .add("dispatch_internode_bytes", r.dispatch_internode_bytes)
      .add("combine_internode_bytes", r.combine_internode_bytes)
      .add("dispatch_internode_bytes_bf16", r.dispatch_internode_bytes_bf16())
      .add("combine_internode_bytes_bf16", r.combine_internode_bytes_bf16())
      .add("intranode_bytes", r.intranode_bytes)
      .add("layout_bytes", r.layout_bytes)
      .add("baseline_internode_bytes", r.baseline_internode_bytes)
      .add("baseline_intranode_bytes", r.baseline_intranode_bytes)
      .add("bytes_per_rank", r.bytes_per_rank())
      .add("algbw_gbps", r.algbw_gbps(), 4)
      .add("check", r.check);
  const std::string line = j.str();
  if (o.json) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  if (json_file_ != nullptr) {
    std::fprintf(json_file_, "%s\n", line.c_str());
    std::fflush(json_file_);
  }
}

}  // namespace epcomm_bench
