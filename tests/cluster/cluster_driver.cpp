// SPDX-License-Identifier: MIT
// epcomm-cluster-driver: repeats BF16 dispatch + combine through the public API, for
// the emulated-cluster fault tests and the link-traffic measurement
// (launch/emulate-cluster, tests/cluster/, docs/cluster.md).
//
//   epcomm-cluster-driver [--tokens N] [--hidden N] [--experts N] [--topk N]
//                         [--max-nodes M] (--iters N | --seconds S)
//                         [--iface NAME] [--exit-grace-s S]
//
// --iters N: N timed iterations, then rank 0 prints one JSON line, led by the bench
//   run header (bench/common/run_header.hpp): epcomm's inter-node bytes per iteration
//   (summed over ranks), the bytes the hosts' network interfaces (--iface, default
//   eth0, read in each host's network namespace) sent during the timed loop, and the
//   dispatch and combine times (median, and min / p10 / p90 / max).
// --seconds S: iterate for about S seconds (fault tests; the count is set from the
//   first iteration's time). Then rank 0 prints "cluster_driver: exchanging", the
//   cue to inject a fault.
// Any epcomm::Error: the rank prints "cluster_driver: rank R (host H, pid P) FAILED
//   at U after T s: <code>: <message>" and exits with status 3. U is the Unix time
//   at which the exchange call threw, to the microsecond (the emulated hosts share
//   one clock: the fault tests compare the ranks' U to bound how fast a failure
//   spreads). It first waits
//   --exit-grace-s seconds (default 2): the other ranks, stalled on the same peer,
//   time out within about one iteration of each other, and mpirun ends the whole job
//   at the first rank that exits.
#include <epcomm/epcomm.hpp>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/cli.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "common/stats.hpp"

namespace {

struct Options {
  int tokens = 64;
  int hidden = 1024;
  int experts = 32;
  int topk = 8;
  int max_nodes = 0;
  int iters = 0;
  double seconds = 0;
  double exit_grace_s = 2;
  std::string iface = "eth0";
};

// Fills o from argv; returns the exit status when the program should stop (0 after
// --help, 2 after a bad argument), printed by rank 0 only.
std::optional<int> parse(int argc, char** argv, bool print, Options& o) {
  using namespace epcomm_bench;
  CLI::App app("Repeats BF16 dispatch + combine through the public API (see the comment at the top of\n"
               "tests/cluster/cluster_driver.cpp).",
               "epcomm-cluster-driver");
  add_number(app, "--tokens", o.tokens, 1, "tokens per rank");
  add_number(app, "--hidden", o.hidden, 1, "elements per token row");
  add_number(app, "--experts", o.experts, 1, "routed experts");
  add_number(app, "--topk", o.topk, 1, "experts per token");
  add_number(app, "--max-nodes", o.max_nodes, 0, "node limit, 0 = none");
  CLI::App* duration = app.add_option_group("duration", "exactly one of --iters and --seconds");
  add_number(*duration, "--iters", o.iters, 1, "timed iterations, then one JSON line");
  add_number(*duration, "--seconds", o.seconds, 1e-3, "exchange for about this long (fault tests)");
  duration->require_option(1);
  app.add_option("--iface", o.iface, "network interface whose sent bytes are counted")->capture_default_str();
  add_number(app, "--exit-grace-s", o.exit_grace_s, 0.0, "seconds a failed rank waits before it exits");
  return parse_command_line(app, argc, argv, print);
}

// Bytes this network namespace's interface has sent so far; -1 when it has none
// of that name (not under launch/emulate-cluster).
int64_t iface_tx_bytes(const std::string& iface) {
  std::ifstream f("/sys/class/net/" + iface + "/statistics/tx_bytes");
  int64_t v = -1;
  return (f >> v) ? v : -1;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double unix_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// When an exchange call threw (Unix time), before unwinding dropped the exchange:
// dropping it may wait out the cancellation of a receive from a dead peer.
double failed_at = 0;

struct Run {
  const Options& o;
  epcomm::Group& group;
  epcomm::Exchange& ex;
  std::vector<uint16_t> x;       // BF16 tokens
  std::vector<int32_t> topk_idx;
  std::vector<float> topk_weights;
  std::vector<uint16_t> out;
  epcomm::ExchangeStats dispatch_stats, combine_stats;  // of the last step

  // One dispatch + combine; the stand-in expert copies its rows to the outputs.
  // Returns the dispatch and combine seconds of this rank.
  std::pair<double, double> step() {
    epcomm::DispatchInput in;
    in.x = x.data();
    in.topk_idx = topk_idx.data();
    in.topk_weights = topk_weights.data();
    in.num_tokens = o.tokens;
    try {
      return exchange(in);
    } catch (const epcomm::Error&) {
      if (failed_at == 0) failed_at = unix_now_s();
      throw;
    }
  }
  // step() without the failure stamp.
  std::pair<double, double> exchange(const epcomm::DispatchInput& in) {
    const double t0 = now_s();
    epcomm::DispatchHandle h = ex.dispatch(in);
    const double t1 = now_s();
    std::memcpy(h.expert_out_buffer(), h.rows(), static_cast<std::size_t>(h.num_rows()) * h.row_bytes());
    const double t2 = now_s();
    epcomm::CombineHandle c = ex.combine_begin(h, h.expert_out_buffer(), h.num_rows(), out.data(), o.tokens);
    c.wait();
    const double t3 = now_s();
    dispatch_stats = h.stats();
    combine_stats = c.stats();
    return {t1 - t0, t3 - t2};
  }
};

int run(const Options& o) {
  epcomm::Group group(MPI_COMM_WORLD);
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = o.experts;
  cfg.topk = o.topk;
  cfg.hidden = o.hidden;
  cfg.max_tokens_per_rank = o.tokens;
  cfg.max_inflight = 1;
  epcomm::Exchange ex(group, cfg);

  Run r{o, group, ex, {}, {}, {}, {}, {}, {}};
  std::mt19937 rng(1234u + static_cast<unsigned>(group.rank()));
  std::normal_distribution<float> normal;
  r.x.resize(static_cast<std::size_t>(o.tokens) * o.hidden);
  for (uint16_t& v : r.x) {
    float f = normal(rng);
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    v = static_cast<uint16_t>(bits >> 16);  // BF16 by truncation: any finite value will do
  }
  std::vector<float> logits(static_cast<std::size_t>(o.tokens) * o.experts);
  for (float& l : logits) l = normal(rng);
  epcomm::RouterConfig rc;
  rc.num_experts = o.experts;
  rc.topk = o.topk;
  rc.num_nodes = group.num_nodes();
  rc.max_nodes = o.max_nodes;
  r.topk_idx.resize(static_cast<std::size_t>(o.tokens) * o.topk);
  r.topk_weights.resize(r.topk_idx.size());
  epcomm::NodeLimitedRouter(rc).route(logits.data(), o.tokens, nullptr, r.topk_idx.data(), r.topk_weights.data());
  r.out.resize(r.x.size());

  // Connections, page faults: untimed. In --seconds mode this step also sets the
  // iteration count, agreed once here: a collective inside the loop would be a wait
  // outside epcomm, with no timeout, when the fault strikes.
  const double t_first = now_s();
  r.step();
  int loops = 0;
  if (o.seconds > 0) {
    loops = static_cast<int>(o.seconds / std::max(now_s() - t_first, 1e-4));
    MPI_Bcast(&loops, 1, MPI_INT, 0, MPI_COMM_WORLD);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (group.rank() == 0) {
    std::printf("cluster_driver: exchanging (%d ranks, %d nodes)\n", group.size(), group.num_nodes());
    std::fflush(stdout);
  }

  if (o.seconds > 0) {
    for (int i = 0; i < loops; ++i) r.step();
    return 0;
  }

  // Only one rank per host reads the interface, so each host counts once.
  const bool reader = group.local_rank() == 0;
  MPI_Barrier(MPI_COMM_WORLD);
  const int64_t tx0 = reader ? iface_tx_bytes(o.iface) : 0;
  std::vector<double> disp, comb;
  for (int i = 0; i < o.iters; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    auto [d, c] = r.step();
    double times[2] = {d, c}, slowest[2];
    MPI_Allreduce(times, slowest, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    disp.push_back(slowest[0]);
    comb.push_back(slowest[1]);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const int64_t tx1 = reader ? iface_tx_bytes(o.iface) : 0;

  // The route is fixed, so every iteration moves what the last one did.
  int64_t mine[3] = {r.dispatch_stats.internode_bytes, r.combine_stats.internode_bytes, reader ? tx1 - tx0 : 0};
  // A host without the interface makes the sum meaningless: report -1.
  int missing = reader && tx0 < 0 ? 1 : 0, any_missing = 0;
  MPI_Allreduce(&missing, &any_missing, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  int64_t sum[3];
  MPI_Allreduce(mine, sum, 3, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (group.rank() == 0) {
    epcomm_bench::RunHeader header;
    header.bench = "epcomm-cluster-driver";
    header.ranks = group.size();
    header.nodes = group.num_nodes();
    header.transport = ex.transport();
    header.progress_thread = group.progress_thread();
    epcomm_bench::Json j = epcomm_bench::run_header_json(header);
    j["tokens"] = o.tokens;
    j["hidden"] = o.hidden;
    j["experts"] = o.experts;
    j["topk"] = o.topk;
    j["max_nodes"] = o.max_nodes;
    j["iters"] = o.iters;
    epcomm_bench::add_spread(j, "dispatch_us", epcomm_bench::spread_of(disp, 1e6), 1);
    epcomm_bench::add_spread(j, "combine_us", epcomm_bench::spread_of(comb, 1e6), 1);
    j["epcomm_dispatch_internode_bytes"] = sum[0];
    j["epcomm_combine_internode_bytes"] = sum[1];
    j["iface_tx_bytes_per_iter"] = any_missing ? -1.0 : static_cast<double>(sum[2]) / o.iters;
    epcomm_bench::JsonLines(true, "").write(j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const double start = now_s();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  Options o;
  // Every rank parses the same argv and stops the same way.
  if (const std::optional<int> status = parse(argc, argv, rank == 0, o)) {
    MPI_Finalize();
    return *status;
  }
  try {
    run(o);
  } catch (const epcomm::Error& e) {
    if (failed_at == 0) failed_at = unix_now_s();
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr, "cluster_driver: rank %d (host %s, pid %d) FAILED at %.6f after %.1f s: %s: %s\n", rank,
                 host, static_cast<int>(getpid()), failed_at, now_s() - start, epcomm::to_string(e.code()), e.what());
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.exit_grace_s));
    // Not MPI_Finalize: it would wait for the peer that stopped answering.
    std::_Exit(3);
  }
  MPI_Finalize();
  return 0;
}
