// SPDX-License-Identifier: MIT
// epcomm-cluster-driver: repeats BF16 dispatch + combine through the public API, for
// the emulated-cluster fault tests and the link-traffic measurement
// (launch/emulate-cluster, tests/cluster/, docs/cluster.md).
//
//   epcomm-cluster-driver [--tokens N] [--hidden N] [--experts N] [--topk N]
//                         [--max-nodes M] (--iters N | --seconds S)
//                         [--iface NAME] [--exit-grace-s S]
//
// --iters N: N timed iterations, then rank 0 prints one JSON line: epcomm's
//   inter-node bytes per iteration (summed over ranks), the bytes the hosts' network
//   interfaces (--iface, default eth0, read in each host's network namespace) sent
//   during the timed loop, and the median dispatch and combine times.
// --seconds S: iterate for about S seconds (fault tests; the count is set from the
//   first iteration's time). Then rank 0 prints "cluster_driver: exchanging", the
//   cue to inject a fault.
// Any epcomm::Error: the rank prints "cluster_driver: rank R (host H, pid P) FAILED
//   after T s: <code>: <message>" and exits with status 3. It first waits
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
#include <random>
#include <string>
#include <thread>
#include <vector>

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

[[noreturn]] void usage_error(const std::string& why) {
  std::fprintf(stderr, "epcomm-cluster-driver: %s (see the comment at the top of tests/cluster/cluster_driver.cpp)\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage_error("flag " + a + " needs a value");
    const char* v = argv[++i];
    if (a == "--tokens") o.tokens = std::atoi(v);
    else if (a == "--hidden") o.hidden = std::atoi(v);
    else if (a == "--experts") o.experts = std::atoi(v);
    else if (a == "--topk") o.topk = std::atoi(v);
    else if (a == "--max-nodes") o.max_nodes = std::atoi(v);
    else if (a == "--iters") o.iters = std::atoi(v);
    else if (a == "--seconds") o.seconds = std::atof(v);
    else if (a == "--exit-grace-s") o.exit_grace_s = std::atof(v);
    else if (a == "--iface") o.iface = v;
    else usage_error("unknown flag " + a);
  }
  if ((o.iters > 0) == (o.seconds > 0)) usage_error("give exactly one of --iters N and --seconds S");
  if (o.tokens < 1 || o.hidden < 1 || o.experts < 1 || o.topk < 1) usage_error("sizes must be positive");
  return o;
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

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
    std::printf(
        "{\"ranks\": %d, \"nodes\": %d, \"tokens\": %d, \"hidden\": %d, \"experts\": %d, \"topk\": %d, "
        "\"max_nodes\": %d, \"iters\": %d, \"dispatch_us\": %.1f, \"combine_us\": %.1f, "
        "\"epcomm_dispatch_internode_bytes\": %lld, \"epcomm_combine_internode_bytes\": %lld, "
        "\"iface_tx_bytes_per_iter\": %.1f}\n",
        group.size(), group.num_nodes(), o.tokens, o.hidden, o.experts, o.topk, o.max_nodes, o.iters,
        median(disp) * 1e6, median(comb) * 1e6, static_cast<long long>(sum[0]), static_cast<long long>(sum[1]),
        any_missing ? -1.0 : static_cast<double>(sum[2]) / o.iters);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  const double start = now_s();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  try {
    run(o);
  } catch (const epcomm::Error& e) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr, "cluster_driver: rank %d (host %s, pid %d) FAILED after %.1f s: %s: %s\n", rank, host,
                 static_cast<int>(getpid()), now_s() - start, epcomm::to_string(e.code()), e.what());
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::duration<double>(o.exit_grace_s));
    // Not MPI_Finalize: it would wait for the peer that stopped answering.
    std::_Exit(3);
  }
  MPI_Finalize();
  return 0;
}
