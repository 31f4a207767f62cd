// SPDX-License-Identifier: MIT
#include "low_latency_mode.hpp"

#include "baseline.hpp"
#include "check.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "common/stats.hpp"
#include "data.hpp"
#include "expert.hpp"
#include "mpi_check.hpp"
#include "paths.hpp"
#include "timing.hpp"

#include "epcomm_kernels/codec.hpp"

#include <epcomm/error.hpp>
#include <epcomm/exchange.hpp>
#include <epcomm/low_latency.hpp>
#include <epcomm/routing.hpp>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace epcomm_bench {
namespace {

epcomm::LowLatencyConfig low_latency_config(const BenchConfig& c) {
  epcomm::LowLatencyConfig l;
  l.num_experts = c.experts;
  l.topk = c.topk;
  l.hidden = c.hidden;
  l.max_tokens_per_rank = c.tokens;
  l.dtype = c.dtype;
  l.dispatch_format = c.dispatch_format;
  l.combine_format = c.combine_format;
  return l;
}

// One low-latency iteration cut into the bench's phases, like EpcommPath.
class LowLatencyPath {
 public:
  LowLatencyPath(epcomm::LowLatencyExchange& exchange, const RankData& data, int first_expert)
      : exchange_(exchange), data_(data), first_expert_(first_expert), out_(data.x.size()) {
    input_.x = data.x.data();
    input_.topk_idx = data.topk_idx.data();
    input_.topk_weights = data.topk_weights.data();
    input_.num_tokens = data.tokens;
  }
  void dispatch() {
    exchange_.dispatch_send(input_);
    recv_ = exchange_.dispatch_recv();
  }
  // Decodes each expert's rows into its outputs and applies the stand-in expert.
  void run_experts() {
    const std::size_t row = static_cast<std::size_t>(data_.hidden) * epcomm::dtype_size(data_.dtype);
    expert_out_.resize(static_cast<std::size_t>(recv_.num_local_experts * recv_.rows_per_expert) * row);
    const epcomm::kernels::Codec& codec = epcomm::kernels::codec_for(recv_.format);
    for (int j = 0; j < recv_.num_local_experts; ++j) {
      std::byte* y = expert_out_.data() + static_cast<std::size_t>(j * recv_.rows_per_expert) * row;
      const auto* rows = static_cast<const std::byte*>(recv_.rows) + j * recv_.rows_per_expert * recv_.row_bytes;
      for (int32_t q = 0; q < recv_.counts[j]; ++q) {
        codec.decode_row(rows + q * recv_.row_bytes, data_.hidden, y + q * row, data_.dtype);
      }
      apply_expert(y, data_.dtype, recv_.counts[j], data_.hidden, first_expert_ + j);
    }
  }
  void combine() {
    exchange_.combine_send(expert_out_.data());
    exchange_.combine_recv(out_.data());
  }
  void end_iteration() {}
  const epcomm::LowLatencyRecv& recv() const { return recv_; }
  const void* out() const { return out_.data(); }

 private:
  epcomm::LowLatencyExchange& exchange_;
  const RankData& data_;
  int first_expert_;
  epcomm::LowLatencyDispatchInput input_;
  epcomm::LowLatencyRecv recv_;
  std::vector<std::byte> expert_out_;
  std::vector<std::byte> out_;
};

// The low-latency rows against the normal exchange's, which order each expert's
// rows the same way (source rank, then token): same count, sources and bytes.
std::string compare_dispatch(const epcomm::LowLatencyRecv& l, const epcomm::DispatchHandle& n) {
  for (int j = 0; j < l.num_local_experts; ++j) {
    if (l.counts[j] != n.expert_count(j)) {
      return "local expert " + std::to_string(j) + ": " + std::to_string(l.counts[j]) + " rows, the exchange has " +
             std::to_string(n.expert_count(j));
    }
    for (int32_t q = 0; q < l.counts[j]; ++q) {
      const int64_t a = j * l.rows_per_expert + q, b = n.expert_offset(j) + q;
      const bool same = l.src_rank[a] == n.row_src_rank()[b] && l.src_token[a] == n.row_src_token()[b] &&
                        std::memcmp(static_cast<const std::byte*>(l.rows) + a * l.row_bytes,
                                    static_cast<const std::byte*>(n.rows()) + b * n.row_bytes(), l.row_bytes) == 0;
      if (!same) return "local expert " + std::to_string(j) + " row " + std::to_string(q) + " differs";
    }
  }
  return {};
}

// Per-iteration times of one phase on this rank; latency() takes the slowest
// rank's per iteration and its order statistics, with p99 beside the Spread.
struct Latency {
  Spread spread;
  double p99 = 0;
};
class Samples {
 public:
  void add(double seconds) { local_.push_back(seconds); }
  Latency latency(MPI_Comm comm) const {
    std::vector<double> slowest(local_.size());
    mpi_check(MPI_Allreduce(local_.data(), slowest.data(), static_cast<int>(local_.size()), MPI_DOUBLE, MPI_MAX, comm),
              "MPI_Allreduce(times)");
    Latency l{spread_of(slowest, 1e6), 0};
    std::sort(slowest.begin(), slowest.end());
    l.p99 = sorted_quantile(slowest, 0.99) * 1e6;
    return l;
  }

 private:
  std::vector<double> local_;
};

template <class Path>
void timed_iteration(MPI_Comm comm, Path& path, bool record, Samples& dispatch, Samples& combine) {
  const double d = barrier_timed(comm, [&] { path.dispatch(); });
  path.run_experts();
  const double c = barrier_timed(comm, [&] { path.combine(); });
  path.end_iteration();
  if (record) {
    dispatch.add(d);
    combine.add(c);
  }
}

void add_latency(Json& j, const std::string& name, const Latency& l) {
  add_spread(j, name, l.spread, 3);
  j[name + "_p99"] = rounded(l.p99, 3);
}

Json header_json(const epcomm::Group& group, const Options& o, const BenchConfig& c) {
  RunHeader header;
  header.bench = "epcomm-bench";
  header.ranks = group.size();
  header.nodes = group.num_nodes();
  header.transport = group.num_nodes() > 1 ? "mpi" : "none";
  header.progress_thread = group.progress_thread();
  Json j = run_header_json(header);
  j["mode"] = "low-latency";
  j["ranks_per_node"] = group.ranks_per_node();
  j["tokens"] = c.tokens;
  j["hidden"] = c.hidden;
  j["experts"] = c.experts;
  j["topk"] = c.topk;
  j["dtype"] = dtype_name(c.dtype);
  j["dispatch_format"] = epcomm::to_string(c.dispatch_format);
  j["combine_format"] = epcomm::to_string(c.combine_format);
  j["warmup"] = o.warmup;
  j["iters"] = o.iters;
  j["seed"] = o.seed;
  return j;
}

int print_memory(const epcomm::Group& group, const Options& options) {
  JsonLines json(options.json, options.json_out);
  const bool root = group.rank() == 0;
  if (root) {
    std::printf("# epcomm-bench --mode low-latency --print-memory: bytes per rank, %d ranks, %d nodes x %d ranks\n",
                group.size(), group.num_nodes(), group.ranks_per_node());
    std::printf("%7s %7s %8s %5s %10s %10s %14s %14s %14s\n", "#tokens", "hidden", "experts", "topk", "dfmt", "cfmt",
                "shared_bytes", "private_bytes", "total_bytes");
  }
  for (const BenchConfig& c : expand(options)) {
    if (!root) continue;
    epcomm::LowLatencyMemory m;
    try {
      m = epcomm::LowLatencyExchange::memory_needed(low_latency_config(c), group.size(), group.ranks_per_node());
    } catch (const epcomm::Error& e) {
      std::printf("# skipped %s: %s\n", describe(c).c_str(), e.what());
      continue;
    }
    std::printf("%7d %7d %8d %5d %10s %10s %14zu %14zu %14zu\n", c.tokens, c.hidden, c.experts, c.topk,
                epcomm::to_string(c.dispatch_format), epcomm::to_string(c.combine_format), m.shared_bytes,
                m.private_bytes, m.total());
    if (json.enabled()) {
      Json j = header_json(group, options, c);
      j["shared_bytes"] = m.shared_bytes;
      j["private_bytes"] = m.private_bytes;
      j["total_bytes"] = m.total();
      json.write(j);
    }
  }
  std::fflush(stdout);
  return 0;
}

}  // namespace

int run_low_latency(const epcomm::Group& group, const Options& options) {
  if (options.print_memory) return print_memory(group, options);
  const bool root = group.rank() == 0;
  const MPI_Comm comm = group.comm();
  JsonLines json(root && options.json, root ? options.json_out : std::string());
  if (root) {
    std::printf("# epcomm-bench --mode low-latency: %d ranks, %d nodes x %d ranks, warmup %d, iters %d; "
                "times: slowest rank per iteration, p50 and p99 over iterations (us); ll_: LowLatencyExchange, "
                "ex_: Exchange, same data, interleaved\n",
                group.size(), group.num_nodes(), group.ranks_per_node(), options.warmup, options.iters);
    std::printf("%7s %7s %8s %5s %10s %10s %11s %11s %11s %11s %11s %11s %11s %11s %8s %6s\n", "#tokens", "hidden",
                "experts", "topk", "dfmt", "cfmt", "ll_disp", "ll_disp_p99", "ll_comb", "ll_comb_p99", "ex_disp",
                "ex_disp_p99", "ex_comb", "ex_comb_p99", "speedup", "check");
  }
  int status = 0;
  for (const BenchConfig& c : expand(options)) {
    epcomm::RouterConfig rc;
    rc.num_experts = c.experts;
    rc.topk = c.topk;
    rc.num_nodes = group.num_nodes();
    rc.max_nodes = c.max_nodes;
    std::optional<epcomm::NodeLimitedRouter> router;
    std::optional<epcomm::LowLatencyExchange> low;
    try {
      router.emplace(rc);
      epcomm::LowLatencyExchange::memory_needed(low_latency_config(c), group.size(), group.ranks_per_node());
    } catch (const epcomm::Error& e) {  // the same on every rank: all skip together
      if (root) std::printf("# skipped %s: %s\n", describe(c).c_str(), e.what());
      continue;
    }
    low.emplace(group, low_latency_config(c));
    epcomm::ExchangeConfig ec;
    ec.num_experts = c.experts;
    ec.topk = c.topk;
    ec.hidden = c.hidden;
    ec.max_tokens_per_rank = c.tokens;
    ec.dtype = c.dtype;
    ec.dispatch_format = c.dispatch_format;
    ec.combine_format = c.combine_format;
    ec.max_inflight = 1;
    epcomm::Exchange exchange(group, ec);
    const RankData data = make_rank_data(c, *router, options.seed, group.rank());
    const int first_expert = group.rank() * (c.experts / group.size());
    LowLatencyPath low_path(*low, data, first_expert);
    EpcommPath exchange_path(exchange, data, first_expert);

    // Check pass, untimed: rows against the normal exchange's, combine against the
    // MPI_Alltoallv baseline's FP32 sum within the formats' bounds (check.hpp).
    low_path.dispatch();
    exchange_path.dispatch();
    const std::string dispatch_failure = compare_dispatch(low_path.recv(), exchange_path.route());
    low_path.run_experts();
    low_path.combine();
    exchange_path.end_iteration();
    BaselinePath baseline(comm, data, c.experts, first_expert);
    baseline.dispatch();
    baseline.run_experts();
    baseline.combine();
    const std::string combine_failure =
        check_combine(low_path.out(), baseline.out(), data, c.dispatch_format, c.combine_format);
    std::string dispatch_message, combine_message;
    const bool check = all_ranks_pass(comm, dispatch_failure, dispatch_message) &
                       all_ranks_pass(comm, combine_failure, combine_message);
    if (!check) {
      status = 1;
      if (root) {
        std::fprintf(stderr, "epcomm-bench: low-latency check failed for %s: %s%s\n", describe(c).c_str(),
                     dispatch_message.c_str(), combine_message.c_str());
      }
    }

    Samples ld, lc, ed, ecs;
    for (int i = 0; i < options.warmup + options.iters; ++i) {
      timed_iteration(comm, low_path, i >= options.warmup, ld, lc);
      timed_iteration(comm, exchange_path, i >= options.warmup, ed, ecs);
    }
    const Latency l_d = ld.latency(comm), l_c = lc.latency(comm), e_d = ed.latency(comm), e_c = ecs.latency(comm);
    if (!root) continue;
    const double speedup = (e_d.spread.p50 + e_c.spread.p50) / (l_d.spread.p50 + l_c.spread.p50);
    std::printf("%7d %7d %8d %5d %10s %10s %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %8.2f %6s\n",
                c.tokens, c.hidden, c.experts, c.topk, epcomm::to_string(c.dispatch_format),
                epcomm::to_string(c.combine_format), l_d.spread.p50, l_d.p99, l_c.spread.p50, l_c.p99,
                e_d.spread.p50, e_d.p99, e_c.spread.p50, e_c.p99, speedup, check ? "true" : "false");
    std::fflush(stdout);
    if (json.enabled()) {
      Json j = header_json(group, options, c);
      add_latency(j, "dispatch_us", l_d);
      add_latency(j, "combine_us", l_c);
      j["total_us"] = rounded(l_d.spread.p50 + l_c.spread.p50, 3);
      add_latency(j, "exchange_dispatch_us", e_d);
      add_latency(j, "exchange_combine_us", e_c);
      j["exchange_us"] = rounded(e_d.spread.p50 + e_c.spread.p50, 3);
      j["speedup_vs_exchange"] = rounded(speedup, 4);
      j["check"] = check;
      json.write(j);
    }
  }
  return status;
}

}  // namespace epcomm_bench
