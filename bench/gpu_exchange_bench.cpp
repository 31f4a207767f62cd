// SPDX-License-Identifier: MIT
// epcomm-gpu-bench: the exchange on GPU memory (ExchangeConfig::memory = kDevice),
// one rank per GPU, against NCCL moving the same payload in the same run.
//
// Per rank: T tokens, each to top-k distinct experts drawn uniformly (seeded), or,
// with --max-nodes M > 0, routed by NodeLimitedRouter from random logits so that each
// token reaches experts on at most M nodes (the DeepSeek-V3 rule).
// Timed: dispatch (begin + wait + stream synchronise) and combine likewise, each the
// slowest rank's time per iteration (MPI_MAX), min / p10 / median / p90 / max over
// --iters after --warmup. GB/s: the payload this rank's GPU sends to other GPUs (rows
// for owners on other ranks, ExchangeStats::intranode_bytes + internode_bytes) over
// the median time; inter-node GB/s the same for internode_bytes alone.
// Baselines (when built with NCCL): ncclSend/ncclRecv groups moving, to every other
// rank, its deduplicated token rows in the dispatch format (dispatch) and in the
// output dtype (combine): the per-rank exchange a framework would write with NCCL
// (nccl_*); and one row per (token, expert) pair, not deduplicated: the per-expert
// exchange (nccl_expert_*).
// With 2 nodes, the staging floor of the bytes that crossed nodes (internode_bytes
// of dispatch and of combine, per rank), measured in the same run: device-to-host
// copy, MPI transfer between the rail peers, host-to-device copy (*_floor_us, the
// MPI part *_floor_mpi_us, the exchange over it *_vs_floor).
// Check: once per size, the same inputs through the host exchange; rows and combine
// outputs must be identical bit for bit (check=true). rows_memory: where the
// received rows live, pinned_host where node peers' GPUs lack peer access or
// EPCOMM_GPU_PEER_ACCESS=0 (docs/gpu.md), else device.
// --checksum: a second exchange with ExchangeConfig::checksum on (node peers'
// rows in GPU memory signed and checked by kernels), timed in the same run, its
// iterations interleaved with the first's, and checked the same way; its medians
// and their ratio to the first's (checksum_*).
//
//   mpirun -np 2 epcomm-gpu-bench [--tokens 128,4096] [--hidden 7168] [--experts 256]
//       [--topk 8] [--max-nodes 0] [--sm-budget 0,8,20] [--dispatch-format fp8]
//       [--combine-format bf16] [--iters 50] [--warmup 5] [--json] [--timeline] [--checksum]
//       [--reuse-layout]
// --sm-budget: each size once per budget (ExchangeConfig::gpu_sm_budget; 0: no
// bound), the budget in column sms (JSON: sm_budget).
// --timeline: after the timed iterations, one more dispatch and combine traced with
// CUPTI (gpu_timeline.hpp); rank 0 prints their GPU activities and CUDA calls to
// stderr (with --reuse-layout, then a dispatch on the reused layout too).
// --reuse-layout: every timed round also dispatches on the layout of the check's
// dispatch (DispatchHandle::layout(), the same routing: no layout exchange, and on
// one node no copy of the counts), interleaved with the others; its median and its
// ratio to the dispatch that exchanges its layout (reuse_dispatch_*).
#include <cuda_runtime_api.h>
#include <epcomm/epcomm.hpp>
#include <mpi.h>
#ifdef EPCOMM_BENCH_NCCL
#include "nccl_baseline.hpp"
#endif
#ifdef EPCOMM_BENCH_TIMELINE
#include "gpu_timeline.hpp"
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/cli.hpp"
#include "common/host_rank.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "common/stats.hpp"
#include "gpu_bench_support.hpp"

namespace {

using epcomm::DType;
using epcomm::Format;
using Clock = std::chrono::steady_clock;
using epcomm_bench::cuda_ok;
using epcomm_bench::DeviceBytes;
using epcomm_bench::slowest;

struct Options {
  std::vector<int> tokens{128, 4096};
  std::vector<int> max_nodes{0};  // 0: experts drawn uniformly, no node limit
  std::vector<int> sm_budgets{0};  // ExchangeConfig::gpu_sm_budget; 0: no bound
  int hidden = 7168, experts = 256, topk = 8, iters = 50, warmup = 5;
  Format dispatch_format = Format::kFP8, combine_format = Format::kBF16;
  bool json = false;
  bool timeline = false;
  bool checksum = false;
  bool reuse_layout = false;
};

// Fills o from argv; returns the exit status when the program should stop (0 after
// --help, 2 after a bad argument), printed by rank 0 only.
std::optional<int> parse(int argc, char** argv, bool print, Options& o) {
  using namespace epcomm_bench;
  CLI::App app("The exchange on GPU memory, one rank per GPU, against NCCL moving the same payload\n"
               "(usage: mpirun -np P epcomm-gpu-bench [flags]).",
               "epcomm-gpu-bench");
  add_int_list(app, "--tokens", o.tokens, 1, "tokens per rank");
  add_number(app, "--hidden", o.hidden, 1, "elements per token row");
  add_number(app, "--experts", o.experts, 1, "routed experts, divisible by P");
  add_number(app, "--topk", o.topk, 1, "experts per token");
  add_int_list(app, "--max-nodes", o.max_nodes, 0, "nodes a token may reach (M); 0: no limit, experts uniform");
  add_int_list(app, "--sm-budget", o.sm_budgets, 0,
               "SMs the exchange's kernels may take (ExchangeConfig::gpu_sm_budget); 0: no bound");
  add_number(app, "--iters", o.iters, 1, "timed iterations");
  add_number(app, "--warmup", o.warmup, 0, "untimed iterations");
  std::string dispatch_format = epcomm::to_string(o.dispatch_format);
  std::string combine_format = epcomm::to_string(o.combine_format);
  app.add_option("--dispatch-format", dispatch_format, "rows on the wire")->check(wire_format())->capture_default_str();
  app.add_option("--combine-format", combine_format, "owner and node partials between ranks")
      ->check(wire_format())
      ->capture_default_str();
  app.add_flag("--json", o.json, "one JSON object per size instead of the table");
  app.add_flag("--checksum", o.checksum,
               "also time a second exchange with ExchangeConfig::checksum on, interleaved with the first (leave "
               "EPCOMM_CHECKSUM unset: it turns checksums on in both)");
  app.add_flag("--reuse-layout", o.reuse_layout,
               "also time dispatches on the layout of the check's dispatch (no layout exchange), interleaved");
#ifdef EPCOMM_BENCH_TIMELINE
  app.add_flag("--timeline", o.timeline, "trace one more dispatch and combine (CUPTI); rank 0 prints it to stderr");
#endif
  if (const std::optional<int> status = parse_command_line(app, argc, argv, print)) return status;
  o.dispatch_format = epcomm::parse_format(dispatch_format.c_str());
  o.combine_format = epcomm::parse_format(combine_format.c_str());
  return std::nullopt;
}

// Every (tokens, SM budget) pair to run, budgets inner: a sweep of budgets at one
// size reads as consecutive lines.
std::vector<std::pair<int, int>> sizes_and_budgets(const Options& o) {
  std::vector<std::pair<int, int>> runs;
  for (const int T : o.tokens) {
    for (const int B : o.sm_budgets) runs.emplace_back(T, B);
  }
  return runs;
}

struct Inputs {
  std::vector<uint16_t> x;  // BF16
  std::vector<int32_t> idx;
  std::vector<float> w;
};

Inputs make_inputs(int tokens, const Options& o, int rank, int max_nodes, int num_nodes) {
  std::mt19937 rng(1234u + 7919u * static_cast<unsigned>(rank));
  Inputs in;
  in.x.resize(static_cast<std::size_t>(tokens) * o.hidden);
  std::uniform_int_distribution<int> val(-64, 64);
  for (uint16_t& v : in.x) {
    const float f = static_cast<float>(val(rng)) / 32.0f;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    v = static_cast<uint16_t>(u >> 16);
  }
  if (max_nodes > 0) {
    epcomm::RouterConfig rc;
    rc.num_experts = o.experts;
    rc.topk = o.topk;
    rc.num_nodes = num_nodes;
    rc.max_nodes = max_nodes;
    const epcomm::NodeLimitedRouter router(rc);
    std::normal_distribution<float> logit(0.0f, 1.0f);
    std::vector<float> logits(static_cast<std::size_t>(tokens) * o.experts);
    for (float& l : logits) l = logit(rng);
    in.idx.resize(static_cast<std::size_t>(tokens) * o.topk);
    in.w.resize(in.idx.size());
    router.route(logits.data(), tokens, nullptr, in.idx.data(), in.w.data());
    return in;
  }
  std::vector<int32_t> all(o.experts);
  for (int e = 0; e < o.experts; ++e) all[e] = e;
  std::uniform_real_distribution<float> wd(0.05f, 1.0f);
  for (int t = 0; t < tokens; ++t) {
    std::shuffle(all.begin(), all.end(), rng);
    for (int k = 0; k < o.topk; ++k) {
      in.idx.push_back(all[k]);
      in.w.push_back(wd(rng));
    }
  }
  return in;
}

// Same inputs through the host exchange; true if rows and outputs are identical.
bool check_against_host(const epcomm::Group& g, epcomm::ExchangeConfig cfg, const Inputs& in, int tokens,
                        const std::vector<std::byte>& dev_rows, const std::vector<std::byte>& dev_out,
                        const std::vector<std::byte>& expert_out) {
  cfg.memory = epcomm::MemorySpace::kHost;
  epcomm::Exchange ex(g, cfg);
  epcomm::DispatchHandle h = ex.dispatch({in.x.data(), in.idx.data(), in.w.data(), tokens});
  const auto* rows = static_cast<const std::byte*>(h.rows());
  bool ok = dev_rows.size() == static_cast<std::size_t>(h.num_rows()) * h.row_bytes() &&
            std::equal(dev_rows.begin(), dev_rows.end(), rows);
  std::vector<std::byte> out(dev_out.size());
  ex.combine(h, expert_out.data(), h.num_rows(), out.data(), tokens);
  ok = ok && out == dev_out;
  int all = 0, mine = ok ? 1 : 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return all == 1;
}

// The staging floor of the rows that cross nodes (2 nodes): per iteration, after a
// barrier, both rail peers at once copy the `bytes` they send from GPU memory to
// pinned host memory, exchange them with MPI_Sendrecv between pinned buffers (the
// transport the exchange uses; bench/README.md says why), and copy what they
// received to GPU memory. Median over iterations of the slowest rank, in µs: the
// whole (total) and the MPI part (mpi).
struct StagingFloor {
  double total = -1, mpi = -1;
};

StagingFloor staging_floor_us(std::size_t bytes, int peer, cudaStream_t s, int iters, int warmup) {
  std::size_t peer_bytes = 0;
  MPI_Sendrecv(&bytes, sizeof bytes, MPI_BYTE, peer, 0, &peer_bytes, sizeof peer_bytes, MPI_BYTE, peer, 0,
               MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  if (std::max(bytes, peer_bytes) > static_cast<std::size_t>(INT32_MAX)) {
    throw std::runtime_error("staging floor: more than 2^31 bytes in one MPI message");
  }
  DeviceBytes src(bytes), dst(peer_bytes);
  void *out = nullptr, *in = nullptr;
  cuda_ok(cudaMallocHost(&out, std::max<std::size_t>(bytes, 1)), "cudaMallocHost");
  cuda_ok(cudaMallocHost(&in, std::max<std::size_t>(peer_bytes, 1)), "cudaMallocHost");
  std::vector<double> total, mpi;
  for (int i = 0; i < warmup + iters; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = Clock::now();
    cuda_ok(cudaMemcpyAsync(out, src.p, bytes, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync");
    cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    const auto t1 = Clock::now();
    MPI_Sendrecv(out, static_cast<int>(bytes), MPI_BYTE, peer, 1, in, static_cast<int>(peer_bytes), MPI_BYTE, peer, 1,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    const auto t2 = Clock::now();
    cuda_ok(cudaMemcpyAsync(dst.p, in, peer_bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync");
    cuda_ok(cudaStreamSynchronize(s), "cudaStreamSynchronize");
    const auto t3 = Clock::now();
    const double us_total = slowest(MPI_COMM_WORLD, std::chrono::duration<double, std::micro>(t3 - t0).count());
    const double us_mpi = slowest(MPI_COMM_WORLD, std::chrono::duration<double, std::micro>(t2 - t1).count());
    if (i >= warmup) {
      total.push_back(us_total);
      mpi.push_back(us_mpi);
    }
  }
  cudaFreeHost(out);
  cudaFreeHost(in);
  return {epcomm_bench::spread_of(total).p50, epcomm_bench::spread_of(mpi).p50};
}

#ifdef EPCOMM_BENCH_TIMELINE
// Two more dispatches and combines, as timed, under the timeline; rank 0 prints the
// second (the first pays for CUPTI's start, milliseconds on each rank).
// layout: dispatch on it (and say so), or null.
void print_timeline(epcomm_bench::GpuTimeline& tl, epcomm::Exchange& ex, const epcomm::DispatchInput& d,
                    const epcomm::CombineOptions& on_stream, void* out, int tokens, int max_nodes,
                    const epcomm::DispatchLayout* layout) {
  const auto dispatch = [&] { return layout != nullptr ? ex.dispatch(d, *layout) : ex.dispatch(d); };
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  tl.start();
  {
    epcomm::DispatchHandle h = dispatch();
    ex.combine_begin(h, h.expert_out_buffer(), h.num_rows(), out, tokens, on_stream).wait();
    cuda_ok(cudaStreamSynchronize(static_cast<cudaStream_t>(d.stream)), "cudaStreamSynchronize");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  const uint64_t t0 = epcomm_bench::GpuTimeline::now_ns();
  epcomm::DispatchHandle h = dispatch();
  cuda_ok(cudaStreamSynchronize(static_cast<cudaStream_t>(d.stream)), "cudaStreamSynchronize");
  const uint64_t t1 = epcomm_bench::GpuTimeline::now_ns();
  MPI_Barrier(MPI_COMM_WORLD);
  const uint64_t t2 = epcomm_bench::GpuTimeline::now_ns();
  epcomm::CombineHandle c = ex.combine_begin(h, h.expert_out_buffer(), h.num_rows(), out, tokens, on_stream);
  c.wait();
  cuda_ok(cudaStreamSynchronize(static_cast<cudaStream_t>(d.stream)), "cudaStreamSynchronize");
  const uint64_t t3 = epcomm_bench::GpuTimeline::now_ns();
  tl.stop();
  if (rank != 0) return;
  const std::string what = std::to_string(tokens) + " tokens, max_nodes " + std::to_string(max_nodes) +
                           (layout != nullptr ? ", on a reused layout" : "") + ", rank 0";
  tl.print(stderr, ("dispatch, " + what).c_str(), t0, t1);
  tl.print(stderr, ("combine, " + what).c_str(), t2, t3);
  std::fflush(stderr);
}
#endif

int run(int argc, char** argv) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Options o;
  if (const std::optional<int> status = parse(argc, argv, rank == 0, o)) return *status;
  epcomm::Group g(MPI_COMM_WORLD);
  // One GPU per rank of this host (emulated nodes split a host's ranks, not its GPUs).
  int count = 0;
  cuda_ok(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  const int within_host = epcomm_bench::rank_within_host();
  const int dev = within_host % count;
  cuda_ok(cudaSetDevice(dev), "cudaSetDevice");
  cudaStream_t stream;
  cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
#ifdef EPCOMM_BENCH_NCCL
  // NCCL refuses two ranks on one GPU: then the exchange and the floor still run,
  // the baselines not (nccl_* = -1).
  std::optional<epcomm_bench::NcclBaseline> nccl;
  if (epcomm_bench::NcclBaseline::possible(MPI_COMM_WORLD, within_host, count)) {
    nccl.emplace(MPI_COMM_WORLD);
  } else if (rank == 0) {
    std::fprintf(stderr, "# NCCL baselines skipped: ranks share a GPU\n");
  }
#endif
#ifdef EPCOMM_BENCH_TIMELINE
  std::unique_ptr<epcomm_bench::GpuTimeline> timeline;
  if (o.timeline) timeline = std::make_unique<epcomm_bench::GpuTimeline>();
#endif
  int status = 0;
  if (rank == 0 && !o.json) {
    std::printf(
        "%7s %6s %5s %4s %4s %8s %8s | %10s %10s %10s | %10s %10s %10s | %8s %8s | %10s %10s | "
        "%10s %10s %10s %10s | %5s\n",
        "tokens", "hidden", "ranks", "maxn", "sms", "dispatch", "combine", "disp_p50us", "disp_p10", "disp_p90",
        "comb_p50us",
        "comb_p10", "comb_p90", "disp_GBs", "comb_GBs", "floor_d_us", "floor_c_us", "nccl_d_us", "nccl_c_us",
        "ncclx_d_us", "ncclx_c_us", "check");
  }
  for (const int M : o.max_nodes) {
    for (const auto& [T, B] : sizes_and_budgets(o)) {
      epcomm::ExchangeConfig cfg;
      cfg.num_experts = o.experts;
      cfg.topk = o.topk;
      cfg.hidden = o.hidden;
      cfg.max_tokens_per_rank = T;
      cfg.dispatch_format = o.dispatch_format;
      cfg.combine_format = o.combine_format;
      cfg.memory = epcomm::MemorySpace::kDevice;
      cfg.device = dev;
      cfg.gpu_sm_budget = B;
      const Inputs in = make_inputs(T, o, rank, M, g.num_nodes());
      DeviceBytes x(in.x.data(), in.x.size() * 2), idx(in.idx.data(), in.idx.size() * 4), w(in.w.data(), in.w.size() * 4);
      DeviceBytes out(static_cast<std::size_t>(T) * o.hidden * 2);
      epcomm::Exchange ex(g, cfg);
      epcomm::CombineOptions on_stream;
      on_stream.stream = stream;
      epcomm::DispatchInput d;
      d.x = x.p;
      d.topk_idx = static_cast<const int32_t*>(idx.p);
      d.topk_weights = static_cast<const float*>(w.p);
      d.num_tokens = T;
      d.memory = epcomm::MemorySpace::kDevice;
      d.stream = stream;

      // Check once, against the host exchange, with deterministic expert outputs.
      // Where node peers' GPUs have no peer access (or EPCOMM_GPU_PEER_ACCESS=0),
      // received rows live in pinned host memory: recorded beside the times.
      bool rows_on_host = false;
      epcomm::DispatchLayout layout;  // the first check's dispatch's, for --reuse-layout
      const auto check_exchange = [&](epcomm::Exchange& exchange) {
        epcomm::DispatchHandle h = exchange.dispatch(d);
        if (&exchange == &ex) layout = h.layout();
        const std::size_t rows_bytes = static_cast<std::size_t>(h.num_rows()) * h.row_bytes();
        std::vector<std::byte> rows(rows_bytes);
        cudaPointerAttributes where{};
        cuda_ok(cudaPointerGetAttributes(&where, h.rows()), "cudaPointerGetAttributes");
        rows_on_host = where.type == cudaMemoryTypeHost;
        cuda_ok(cudaMemcpy(rows.data(), h.rows(), rows_bytes, cudaMemcpyDefault), "cudaMemcpy");
        std::vector<std::byte> y(static_cast<std::size_t>(h.num_rows()) * o.hidden * 2);
        for (std::size_t i = 0; i < y.size() / 2; ++i) {
          const float f = static_cast<float>(static_cast<int>(i % 37) - 18) / 8.0f;
          uint32_t u;
          std::memcpy(&u, &f, 4);
          const uint16_t b = static_cast<uint16_t>(u >> 16);
          std::memcpy(y.data() + 2 * i, &b, 2);
        }
        DeviceBytes y_dev(y.data(), y.size());
        exchange.combine(h, y_dev.p, h.num_rows(), out.p, T, on_stream);
        std::vector<std::byte> outs(static_cast<std::size_t>(T) * o.hidden * 2);
        cuda_ok(cudaMemcpy(outs.data(), out.p, outs.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
        return check_against_host(g, cfg, in, T, rows, outs, y);
      };
      bool check = check_exchange(ex);
      // The same exchange with checksums, made after the first is checked.
      std::optional<epcomm::Exchange> checked;
      if (o.checksum) {
        epcomm::ExchangeConfig checked_cfg = cfg;
        checked_cfg.checksum = true;
        checked.emplace(g, checked_cfg);
        check = check_exchange(*checked) && check;
      }
      std::vector<double> td, tc, checked_td, checked_tc, reuse_td, reuse_tc;
      int64_t disp_bytes = 0, comb_bytes = 0, disp_inter_bytes = 0, comb_inter_bytes = 0;
      // One timed dispatch + combine on `exchange`, the slowest rank's times kept
      // after the warmup.
      // reuse: on the check's layout.
      const auto time_round = [&](epcomm::Exchange& exchange, bool keep, std::vector<double>& tds,
                                  std::vector<double>& tcs, bool reuse = false) {
        MPI_Barrier(MPI_COMM_WORLD);
        const auto t0 = Clock::now();
        epcomm::DispatchHandle h = reuse ? exchange.dispatch(d, layout) : exchange.dispatch(d);
        cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        const auto t1 = Clock::now();
        MPI_Barrier(MPI_COMM_WORLD);
        const auto t2 = Clock::now();
        epcomm::CombineHandle c = exchange.combine_begin(h, h.expert_out_buffer(), h.num_rows(), out.p, T, on_stream);
        c.wait();
        cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        const auto t3 = Clock::now();
        const double us_d = slowest(MPI_COMM_WORLD, std::chrono::duration<double, std::micro>(t1 - t0).count());
        const double us_c = slowest(MPI_COMM_WORLD, std::chrono::duration<double, std::micro>(t3 - t2).count());
        if (keep) {
          tds.push_back(us_d);
          tcs.push_back(us_c);
        }
        disp_bytes = h.stats().intranode_bytes + h.stats().internode_bytes;
        comb_bytes = c.stats().intranode_bytes + c.stats().internode_bytes;
        disp_inter_bytes = h.stats().internode_bytes;
        comb_inter_bytes = c.stats().internode_bytes;
      };
      for (int i = 0; i < o.warmup + o.iters; ++i) {
        if (checked) time_round(*checked, i >= o.warmup, checked_td, checked_tc);
        if (o.reuse_layout) time_round(ex, i >= o.warmup, reuse_td, reuse_tc, true);
        time_round(ex, i >= o.warmup, td, tc);
      }
#ifdef EPCOMM_BENCH_TIMELINE
      if (timeline) {
        print_timeline(*timeline, ex, d, on_stream, out.p, T, M, nullptr);
        if (o.reuse_layout) print_timeline(*timeline, ex, d, on_stream, out.p, T, M, &layout);
      }
#endif
      const epcomm_bench::Spread sd = epcomm_bench::spread_of(td), sc = epcomm_bench::spread_of(tc);
      epcomm_bench::Spread checked_sd{}, checked_sc{}, reuse_sd{};
      if (o.reuse_layout) reuse_sd = epcomm_bench::spread_of(reuse_td);
      if (checked) {
        checked_sd = epcomm_bench::spread_of(checked_td);
        checked_sc = epcomm_bench::spread_of(checked_tc);
      }
      StagingFloor floor_d, floor_c;
      if (g.num_nodes() == 2) {
        // The rail peer: the same local index on the other node, as a world rank.
        std::vector<int> group_rank(size);
        const int mine = g.rank();
        MPI_Allgather(&mine, 1, MPI_INT, group_rank.data(), 1, MPI_INT, MPI_COMM_WORLD);
        const int rail_peer = static_cast<int>(
            std::find(group_rank.begin(), group_rank.end(), (mine + g.ranks_per_node()) % size) - group_rank.begin());
        floor_d = staging_floor_us(static_cast<std::size_t>(disp_inter_bytes), rail_peer, stream, o.iters, o.warmup);
        floor_c = staging_floor_us(static_cast<std::size_t>(comb_inter_bytes), rail_peer, stream, o.iters, o.warmup);
      }
      double nccl_d = -1, nccl_c = -1, nccl_expert_d = -1, nccl_expert_c = -1;
#ifdef EPCOMM_BENCH_NCCL
      if (nccl) {
        const epcomm_bench::RowsTo rows = epcomm_bench::rows_to_ranks(in.idx.data(), T, o.topk, o.experts, size);
        const std::size_t drow = epcomm::row_layout(o.dispatch_format, o.hidden).row_bytes;
        const std::size_t crow = static_cast<std::size_t>(o.hidden) * 2;
        nccl_d = nccl->exchange_us(stream, rows.tokens, drow, o.iters, o.warmup);
        nccl_c = nccl->exchange_us(stream, rows.tokens, crow, o.iters, o.warmup);
        nccl_expert_d = nccl->exchange_us(stream, rows.pairs, drow, o.iters, o.warmup);
        nccl_expert_c = nccl->exchange_us(stream, rows.pairs, crow, o.iters, o.warmup);
      }
#endif
      if (!check) status = 1;
      const double gbd = static_cast<double>(disp_bytes) / (sd.p50 * 1e3);
      const double gbc = static_cast<double>(comb_bytes) / (sc.p50 * 1e3);
      if (rank == 0) {
        if (o.json) {
          epcomm_bench::RunHeader header;
          header.bench = "epcomm-gpu-bench";
          header.ranks = size;
          header.nodes = g.num_nodes();
          header.transport = ex.transport();
          header.progress_thread = g.progress_thread();
          epcomm_bench::Json j = epcomm_bench::run_header_json(header);
          j["memory"] = "device";
          j["rows_memory"] = rows_on_host ? "pinned_host" : "device";
          j["tokens"] = T;
          j["hidden"] = o.hidden;
          j["experts"] = o.experts;
          j["topk"] = o.topk;
          j["max_nodes"] = M;
          j["sm_budget"] = ex.config().gpu_sm_budget;
          j["dispatch_format"] = epcomm::to_string(o.dispatch_format);
          j["combine_format"] = epcomm::to_string(o.combine_format);
          epcomm_bench::add_spread(j, "dispatch_us", sd, 1);
          epcomm_bench::add_spread(j, "combine_us", sc, 1);
          j["dispatch_GBps"] = epcomm_bench::rounded(gbd, 1);
          j["combine_GBps"] = epcomm_bench::rounded(gbc, 1);
          const double inter_d = static_cast<double>(disp_inter_bytes) / (sd.p50 * 1e3);
          const double inter_c = static_cast<double>(comb_inter_bytes) / (sc.p50 * 1e3);
          j["dispatch_internode_GBps"] = epcomm_bench::rounded(inter_d, 1);
          j["combine_internode_GBps"] = epcomm_bench::rounded(inter_c, 1);
          if (floor_d.total > 0) {
            j["dispatch_floor_us"] = epcomm_bench::rounded(floor_d.total, 1);
            j["dispatch_floor_mpi_us"] = epcomm_bench::rounded(floor_d.mpi, 1);
            j["dispatch_vs_floor"] = epcomm_bench::rounded(sd.p50 / floor_d.total, 2);
          }
          if (floor_c.total > 0) {
            j["combine_floor_us"] = epcomm_bench::rounded(floor_c.total, 1);
            j["combine_floor_mpi_us"] = epcomm_bench::rounded(floor_c.mpi, 1);
            j["combine_vs_floor"] = epcomm_bench::rounded(sc.p50 / floor_c.total, 2);
          }
          j["nccl_dispatch_us"] = epcomm_bench::rounded(nccl_d, 1);
          j["nccl_combine_us"] = epcomm_bench::rounded(nccl_c, 1);
          j["nccl_expert_dispatch_us"] = epcomm_bench::rounded(nccl_expert_d, 1);
          j["nccl_expert_combine_us"] = epcomm_bench::rounded(nccl_expert_c, 1);
          if (checked) {
            epcomm_bench::add_spread(j, "checksum_dispatch_us", checked_sd, 1);
            epcomm_bench::add_spread(j, "checksum_combine_us", checked_sc, 1);
            j["checksum_dispatch_ratio"] = epcomm_bench::rounded(checked_sd.p50 / sd.p50, 3);
            j["checksum_combine_ratio"] = epcomm_bench::rounded(checked_sc.p50 / sc.p50, 3);
            j["checksum_ratio"] = epcomm_bench::rounded((checked_sd.p50 + checked_sc.p50) / (sd.p50 + sc.p50), 3);
          }
          if (o.reuse_layout) {
            epcomm_bench::add_spread(j, "reuse_dispatch_us", reuse_sd, 1);
            j["reuse_dispatch_ratio"] = epcomm_bench::rounded(reuse_sd.p50 / sd.p50, 3);
          }
          j["check"] = check;
          epcomm_bench::JsonLines(true, "").write(j);
        } else {
          std::printf(
              "%7d %6d %5d %4d %4d %8s %8s | %10.1f %10.1f %10.1f | %10.1f %10.1f %10.1f | %8.1f %8.1f | "
              "%10.1f %10.1f | %10.1f %10.1f %10.1f %10.1f | %5s\n",
              T, o.hidden, size, M, ex.config().gpu_sm_budget, epcomm::to_string(o.dispatch_format),
              epcomm::to_string(o.combine_format), sd.p50,
              sd.p10, sd.p90, sc.p50, sc.p10, sc.p90, gbd, gbc, floor_d.total, floor_c.total, nccl_d, nccl_c,
              nccl_expert_d, nccl_expert_c,
              check ? "true" : "false");
          if (rows_on_host) std::printf("# rows in pinned host memory: node peers exchange through shared memory\n");
          if (checked) {
            std::printf("# with ExchangeConfig::checksum: dispatch median %.1f us (%.3f x), combine median %.1f us "
                        "(%.3f x), total %.3f x the same exchange without\n",
                        checked_sd.p50, checked_sd.p50 / sd.p50, checked_sc.p50, checked_sc.p50 / sc.p50,
                        (checked_sd.p50 + checked_sc.p50) / (sd.p50 + sc.p50));
          }
          if (o.reuse_layout) {
            std::printf("# dispatch on a reused layout: median %.1f us, p10 %.1f, p90 %.1f (%.3f x the dispatch that "
                        "exchanges its layout)\n",
                        reuse_sd.p50, reuse_sd.p10, reuse_sd.p90, reuse_sd.p50 / sd.p50);
          }
        }
        std::fflush(stdout);
      }
    }
  }
  cudaStreamDestroy(stream);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int status = 0;
  try {
    status = run(argc, argv);
  } catch (const std::exception& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "epcomm-gpu-bench rank %d: %s\n", rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
