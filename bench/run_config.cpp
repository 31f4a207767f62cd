// SPDX-License-Identifier: MIT
#include "run_config.hpp"

#include "check.hpp"
#include "data.hpp"
#include "mpi_check.hpp"
#include "paths.hpp"
#include "timing.hpp"

#include <epcomm/error.hpp>
#include <epcomm/exchange.hpp>
#include <epcomm/routing.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <vector>

namespace epcomm_bench {
namespace {

// Above this estimated footprint per rank, max_recv_rows is taken from the routing.
constexpr double kMemoryBudgetBytes = 2.0 * 1024 * 1024 * 1024;

int64_t round_up(int64_t n, int multiple) { return (n + multiple - 1) / multiple * multiple; }

// Pairs routed to each expert by all ranks.
std::vector<int64_t> global_expert_load(MPI_Comm comm, const RankData& data, int experts) {
  std::vector<int64_t> load(experts);
  epcomm::count_expert_load(data.topk_idx.data(), data.tokens, data.topk, experts, load.data());
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, load.data(), experts, MPI_INT64_T, MPI_SUM, comm),
            "MPI_Allreduce(expert load)");
  return load;
}

// Rows the busiest rank receives with this routing, padded as epcomm pads them:
// each (token, local expert) pair is one row.
int64_t routed_max_recv_rows(const std::vector<int64_t>& load, int experts, int ranks, int alignment) {
  const int per_rank = experts / ranks;
  int64_t most = 0;
  for (int r = 0; r < ranks; ++r) {
    int64_t rows = 0;
    for (int j = 0; j < per_rank; ++j) rows += round_up(load[r * per_rank + j], alignment);
    most = std::max(most, rows);
  }
  return most;
}

}  // namespace

ConfigOutcome run_config(const epcomm::Group& group, const BenchConfig& config,
                         const Options& options) {
  ConfigOutcome outcome;
  Result& result = outcome.result;
  const int ranks = group.size();
  const MPI_Comm comm = group.comm();

  // Both checks below depend only on the configuration, which every rank shares,
  // so every rank skips together.
  if (config.experts % ranks != 0) {
    outcome.skipped = std::to_string(config.experts) + " experts are not divisible by " +
                      std::to_string(ranks) + " ranks";
    return outcome;
  }
  epcomm::RouterConfig router_config;
  router_config.num_experts = config.experts;
  router_config.topk = config.topk;
  router_config.num_nodes = group.num_nodes();
  router_config.max_nodes = config.max_nodes;
  std::optional<epcomm::NodeLimitedRouter> router;
  try {
    router.emplace(router_config);
  } catch (const epcomm::Error& e) {
    outcome.skipped = e.what();
    return outcome;
  }

  const RankData data = make_rank_data(config, *router, options.seed, group.rank());
  const std::vector<int64_t> load = global_expert_load(comm, data, config.experts);
  const int experts_per_rank = config.experts / ranks;
  const int first_expert = group.rank() * experts_per_rank;

  const epcomm::Format format = config.dispatch_format;
  epcomm::ExchangeConfig exchange_config;
  exchange_config.num_experts = config.experts;
  exchange_config.topk = config.topk;
  exchange_config.hidden = config.hidden;
  exchange_config.max_tokens_per_rank = config.tokens;
  exchange_config.dtype = config.dtype;
  exchange_config.dispatch_format = format;
  exchange_config.combine_format = config.combine_format;
  exchange_config.expert_alignment = options.alignment;
  exchange_config.max_inflight = 1;  // one dispatch at a time; a second slot only costs memory

  // Worst case: every token of every rank picks min(topk, experts per rank) of this
  // rank's experts. The estimate assumes a receive buffer plus a staging area of the
  // same size; epcomm's exact footprint is its own business, this is the order of
  // magnitude that decides whether the worst case is affordable.
  const int64_t worst_rows =
      static_cast<int64_t>(ranks) * config.tokens * std::min(config.topk, experts_per_rank) +
      static_cast<int64_t>(experts_per_rank) * (options.alignment - 1);
  const double worst_bytes = 2.0 * static_cast<double>(worst_rows) *
                             static_cast<double>(epcomm::encoded_row_bytes(format, config.hidden));
  if (worst_bytes > kMemoryBudgetBytes) {
    exchange_config.max_recv_rows =
        routed_max_recv_rows(load, config.experts, ranks, options.alignment);
    char gib[32];
    std::snprintf(gib, sizeof gib, "%.1f", worst_bytes / (1 << 30));
    outcome.note = "max_recv_rows = " + std::to_string(exchange_config.max_recv_rows) +
                   " from this routing: the worst case (" + std::to_string(worst_rows) +
                   " rows) would need ~" + gib + " GiB per rank";
  }

  epcomm::Exchange exchange(group, exchange_config);
  EpcommPath epcomm_path(exchange, data, first_expert);
  BaselinePath baseline_path(comm, data, config.experts, first_expert);
  const FloorBytes floor_bytes =
      memcpy_floor_bytes(load, ranks, group.rank(), epcomm::encoded_row_bytes(format, config.hidden),
                         static_cast<std::size_t>(config.hidden) * epcomm::dtype_size(config.dtype));
  MemcpyFloorPath floor_path(floor_bytes, group.mover_threads());

  // Check pass: one untimed iteration of each path, compared before anything is
  // timed (and doubling as a first warmup). Dispatch is compared before combine
  // runs, so nothing is assumed about the rows once combine has used them.
  epcomm_path.dispatch();
  baseline_path.dispatch();
  // The reference for every epcomm dispatch of this configuration: the timed
  // baseline's rows, or, for f32 (which the BF16 baseline cannot vouch for bit by
  // bit), one extra untimed baseline dispatch of the f32 tokens.
  std::optional<BaselineExchange> f32_reference;
  if (config.dtype != epcomm::DType::kBF16) {
    f32_reference.emplace(comm, config.experts, config.hidden, epcomm::DType::kF32);
    f32_reference->dispatch(data.x.data(), data.topk_idx.data(), data.tokens, data.topk);
  }
  const BaselineExchange& reference = f32_reference ? *f32_reference : baseline_path.exchange();
  const std::vector<RowSource> reference_sources = reference.exchange_sources(data.topk_weights.data());
  std::string dispatch_failure =
      check_dispatch(epcomm_path.route(), reference, reference_sources, options.alignment, format);
  const epcomm::DispatchLayout layout = epcomm_path.route().layout();
  epcomm_path.run_experts();
  epcomm_path.combine();
  baseline_path.run_experts();
  baseline_path.combine();
  std::string combine_failure =
      check_combine(epcomm_path.out(), baseline_path.out(), data, config.dispatch_format, config.combine_format);

  // Traffic is the same every iteration (same data, same routing): read it once.
  const epcomm::ExchangeStats stats = epcomm_path.stats();
  const BaselineTraffic traffic = baseline_path.exchange().traffic(group.ranks_per_node());
  int64_t bytes[] = {stats.internode_bytes,     stats.intranode_bytes,
                     stats.layout_bytes,        traffic.internode_bytes,
                     traffic.intranode_bytes,   epcomm_path.dispatch_stats().internode_bytes,
                     epcomm_path.combine_stats().internode_bytes, floor_bytes.total()};
  mpi_check(MPI_Allreduce(MPI_IN_PLACE, bytes, 8, MPI_INT64_T, MPI_SUM, comm),
            "MPI_Allreduce(bytes)");
  epcomm_path.end_iteration();

  // A further epcomm path (`what`: how it differs), checked against the same
  // references in one untimed iteration.
  const auto check_extra_path = [&](EpcommPath& path, const std::string& what) {
    path.dispatch();
    if (dispatch_failure.empty()) {
      dispatch_failure = check_dispatch(path.route(), reference, reference_sources, options.alignment, format);
      if (!dispatch_failure.empty()) dispatch_failure = what + ": " + dispatch_failure;
    }
    path.run_experts();
    path.combine();
    if (combine_failure.empty()) {
      combine_failure = check_combine(path.out(), baseline_path.out(), data, config.dispatch_format,
                                      config.combine_format);
      if (!combine_failure.empty()) combine_failure = what + ": " + combine_failure;
    }
    path.end_iteration();
  };
  // Dispatches on the first one's layout.
  std::optional<EpcommPath> reuse_path;
  if (options.reuse_layout) {
    reuse_path.emplace(exchange, data, first_expert);
    reuse_path->use_layout(layout);
    check_extra_path(*reuse_path, "on the reused layout");
  }
  // The same exchange with checksums.
  std::optional<epcomm::Exchange> checked_exchange;
  std::optional<EpcommPath> checked_path;
  if (options.checksum) {
    epcomm::ExchangeConfig checked_config = exchange_config;
    checked_config.checksum = true;
    checked_exchange.emplace(group, checked_config);
    checked_path.emplace(*checked_exchange, data, first_expert);
    check_extra_path(*checked_path, "with checksums");
  }
  // Agreed separately so a dispatch mismatch is reported rather than the combine
  // mismatch it causes on the token's source rank.
  std::string dispatch_message;
  std::string combine_message;
  const bool dispatch_ok = all_ranks_pass(comm, dispatch_failure, dispatch_message);
  const bool combine_ok = all_ranks_pass(comm, combine_failure, combine_message);
  result.check = dispatch_ok && combine_ok;
  if (!dispatch_ok) {
    outcome.check_failure = "dispatch: " + dispatch_message;
  } else if (!combine_ok) {
    outcome.check_failure = "combine: " + combine_message;
  }

  // Paths in order: epcomm, baseline, memcpy floor, then the reused layout's or
  // the checksummed exchange's (the flags exclude each other).
  std::array<PhaseTimes, 4> times;
  if (options.reuse_layout || options.checksum) {
    times = time_paths_interleaved(comm, options.warmup, options.iters, epcomm_path, baseline_path, floor_path,
                                   options.reuse_layout ? *reuse_path : *checked_path);
    if (options.reuse_layout) result.reuse_dispatch = times[3].dispatch_us;
    if (options.checksum) {
      result.checksum_dispatch = times[3].dispatch_us;
      result.checksum_combine = times[3].combine_us;
    }
  } else {
    const auto three =
        time_paths_interleaved(comm, options.warmup, options.iters, epcomm_path, baseline_path, floor_path);
    std::copy(three.begin(), three.end(), times.begin());
  }
  const PhaseTimes& epcomm_times = times[0];
  const PhaseTimes& baseline_times = times[1];
  const PhaseTimes& floor_times = times[2];
  result.dispatch = epcomm_times.dispatch_us;
  result.combine = epcomm_times.combine_us;
  result.baseline_dispatch = baseline_times.dispatch_us;
  result.baseline_combine = baseline_times.combine_us;

  result.config = config;
  result.ranks = ranks;
  result.nodes = group.num_nodes();
  result.transport = exchange.transport();
  result.effective_max_nodes = router->effective_max_nodes();
  result.max_recv_rows = exchange_config.max_recv_rows;
  result.internode_bytes = bytes[0];
  result.intranode_bytes = bytes[1];
  result.layout_bytes = bytes[2];
  result.baseline_internode_bytes = bytes[3];
  result.baseline_intranode_bytes = bytes[4];
  result.dispatch_internode_bytes = bytes[5];
  result.combine_internode_bytes = bytes[6];
  result.memcpy_floor_bytes = bytes[7];
  result.memcpy_floor_dispatch = floor_times.dispatch_us;
  result.memcpy_floor_combine = floor_times.combine_us;
  result.mover_threads = group.mover_threads();
  return outcome;
}

}  // namespace epcomm_bench
