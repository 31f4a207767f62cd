// SPDX-License-Identifier: MIT
#include "low_latency_mode.hpp"

#include "baseline.hpp"
#include "check.hpp"
#include "common/host_rank.hpp"
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

#ifdef EPCOMM_BENCH_CUDA
#include <cuda_runtime_api.h>
#ifdef EPCOMM_BENCH_TIMELINE
#include "gpu_timeline.hpp"
#endif
#ifdef EPCOMM_BENCH_CUBLAS
#include "gemm_between_halves.hpp"
#endif
#ifdef EPCOMM_BENCH_NCCL
#include "nccl_baseline.hpp"
#endif
#endif

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
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

// The configuration's router, or nothing (said on the root) when the router or the
// exchange's buffers cannot be made for it: every rank decides alike, so all skip
// together.
std::optional<epcomm::NodeLimitedRouter> router_if_runnable(const BenchConfig& c, const epcomm::Group& group,
                                                            bool root) {
  epcomm::RouterConfig rc;
  rc.num_experts = c.experts;
  rc.topk = c.topk;
  rc.num_nodes = group.num_nodes();
  rc.max_nodes = c.max_nodes;
  try {
    std::optional<epcomm::NodeLimitedRouter> router(std::in_place, rc);
    epcomm::LowLatencyExchange::memory_needed(low_latency_config(c), group.size(), group.ranks_per_node());
    return router;
  } catch (const epcomm::Error& e) {
    if (root) std::printf("# skipped %s: %s\n", describe(c).c_str(), e.what());
    return std::nullopt;
  }
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
  const std::vector<std::byte>& expert_out() const { return expert_out_; }

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
  j["memory"] = o.memory;
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

#ifdef EPCOMM_BENCH_CUDA
void cuda_check(cudaError_t s, const char* what) {
  if (s != cudaSuccess) throw std::runtime_error(std::string("epcomm-bench: ") + what + ": " + cudaGetErrorString(s));
}

class GpuBuffer {
 public:
  explicit GpuBuffer(std::size_t bytes) {
    cuda_check(cudaMalloc(&p_, std::max<std::size_t>(bytes, 1)), "cudaMalloc");
    cuda_check(cudaMemset(p_, 0, std::max<std::size_t>(bytes, 1)), "cudaMemset");
  }
  GpuBuffer(const void* host, std::size_t bytes) : GpuBuffer(bytes) { upload(host, bytes); }
  ~GpuBuffer() { cudaFree(p_); }
  GpuBuffer(const GpuBuffer&) = delete;
  GpuBuffer& operator=(const GpuBuffer&) = delete;
  void upload(const void* host, std::size_t bytes) {
    if (bytes > 0) cuda_check(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  }
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
};

template <class T>
std::vector<T> download(const void* dev, std::size_t count) {
  std::vector<T> v(count);
  if (count > 0) cuda_check(cudaMemcpy(v.data(), dev, count * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return v;
}

// One GPU per rank of this host.
int host_local_device() {
  int count = 0;
  cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  return rank_within_host() % count;
}

// The device exchange's received rows (copied to the host) against the host
// exchange's: same counts, sources and bytes.
std::string compare_recv(const epcomm::LowLatencyRecv& host, const epcomm::LowLatencyRecv& dev) {
  const int J = host.num_local_experts;
  const std::size_t n = static_cast<std::size_t>(J * host.rows_per_expert);
  const auto counts = download<int32_t>(dev.counts, J);
  const auto src_rank = download<int32_t>(dev.src_rank, n);
  const auto src_token = download<int32_t>(dev.src_token, n);
  const auto rows = download<std::byte>(dev.rows, n * dev.row_bytes);
  for (int j = 0; j < J; ++j) {
    if (counts[j] != host.counts[j]) {
      return "local expert " + std::to_string(j) + ": " + std::to_string(counts[j]) + " rows on the GPU, " +
             std::to_string(host.counts[j]) + " on the host";
    }
    for (int32_t q = 0; q < counts[j]; ++q) {
      const int64_t a = j * host.rows_per_expert + q;
      const bool same = src_rank[a] == host.src_rank[a] && src_token[a] == host.src_token[a] &&
                        std::memcmp(rows.data() + a * dev.row_bytes,
                                    static_cast<const std::byte*>(host.rows) + a * host.row_bytes, host.row_bytes) == 0;
      if (!same) return "local expert " + std::to_string(j) + " row " + std::to_string(q) + " differs from the host's";
    }
  }
  return {};
}

// A stream's calls captured once (global mode, as PyTorch captures) and
// replayed; the graph is destroyed with it.
class CapturedGraph {
 public:
  CapturedGraph() = default;
  ~CapturedGraph() {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) cudaGraphDestroy(graph_);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;
  template <class F>
  void capture(cudaStream_t stream, const F& calls) {
    cuda_check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    try {
      calls();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph_);  // ends the capture; the graph is invalid
      throw;
    }
    cuda_check(cudaStreamEndCapture(stream, &graph_), "cudaStreamEndCapture");
    cuda_check(cudaGraphInstantiate(&exec_, graph_, 0), "cudaGraphInstantiate");
  }
  void launch(cudaStream_t stream) const { cuda_check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

// --memory device: the low-latency exchange on GPU memory, each call on one
// stream; dispatch (send + recv) and combine (send + recv) timed with CUDA events
// around them on that stream, after a barrier of the hosts.
int run_low_latency_device(const epcomm::Group& group, const Options& options) {
  const bool root = group.rank() == 0;
  const MPI_Comm comm = group.comm();
  JsonLines json(root && options.json, root ? options.json_out : std::string());
  const int device = host_local_device();
  cuda_check(cudaSetDevice(device), "cudaSetDevice");
  cudaStream_t stream = nullptr;
  cuda_check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  cudaEvent_t ev[3];
  for (cudaEvent_t& e : ev) cuda_check(cudaEventCreate(&e), "cudaEventCreate");
  if (root) {
    std::printf("# epcomm-bench --mode low-latency --memory device: %d ranks, %d nodes x %d ranks, SM budget %d "
                "(0: none), warmup %d, iters %d; times: CUDA events on each rank's stream, slowest rank per "
                "iteration, p50 and p99 over iterations (us), calls from the host (ll_) and one iteration captured "
                "in a CUDA graph and replayed (graph_); check: rows and combine bit-identical to the host "
                "LowLatencyExchange\n",
                group.size(), group.num_nodes(), group.ranks_per_node(), options.sm_budget, options.warmup,
                options.iters);
    std::printf("%7s %7s %8s %5s %10s %10s %11s %11s %11s %11s %11s %11s %11s %11s %6s\n", "#tokens", "hidden",
                "experts", "topk", "dfmt", "cfmt", "ll_disp", "ll_disp_p99", "ll_comb", "ll_comb_p99", "graph_disp",
                "graph_d_p99", "graph_comb", "graph_c_p99", "check");
  }
#ifdef EPCOMM_BENCH_NCCL
  // Not where ranks share a GPU, which NCCL refuses (nccl_* then absent).
  int gpus = 0;
  cuda_check(cudaGetDeviceCount(&gpus), "cudaGetDeviceCount");
  std::optional<epcomm_bench::NcclBaseline> nccl;
  if (epcomm_bench::NcclBaseline::possible(comm, epcomm_bench::rank_within_host(), gpus)) nccl.emplace(comm);
#endif
  int status = 0;
  for (const BenchConfig& c : expand(options)) {
    const std::optional<epcomm::NodeLimitedRouter> router = router_if_runnable(c, group, root);
    if (!router) continue;
    epcomm::LowLatencyExchange host(group, low_latency_config(c));
    epcomm::LowLatencyConfig dc = low_latency_config(c);
    dc.memory = epcomm::MemorySpace::kDevice;
    dc.device = device;
    dc.gpu_sm_budget = options.sm_budget;
    epcomm::LowLatencyExchange gpu(group, dc);
    const RankData data = make_rank_data(c, *router, options.seed, group.rank());
    const int first_expert = group.rank() * (c.experts / group.size());
    const std::size_t row = static_cast<std::size_t>(c.hidden) * epcomm::dtype_size(c.dtype);
    const int64_t per_expert = int64_t{group.size()} * c.tokens;
    GpuBuffer x(data.x.data(), data.x.size());
    GpuBuffer idx(data.topk_idx.data(), data.topk_idx.size() * sizeof(int32_t));
    GpuBuffer w(data.topk_weights.data(), data.topk_weights.size() * sizeof(float));
    GpuBuffer y(static_cast<std::size_t>(c.experts / group.size()) * per_expert * row);
    GpuBuffer out(static_cast<std::size_t>(data.tokens) * row);
    epcomm::LowLatencyDispatchInput in;
    in.x = x.get();
    in.topk_idx = static_cast<const int32_t*>(idx.get());
    in.topk_weights = static_cast<const float*>(w.get());
    in.num_tokens = data.tokens;
    in.stream = stream;

    // Check pass, untimed: the GPU's rows and combine against the host exchange's
    // on the same tokens and expert outputs.
    LowLatencyPath host_path(host, data, first_expert);
    host_path.dispatch();
    host_path.run_experts();
    host_path.combine();
    gpu.dispatch_send(in);
    const epcomm::LowLatencyRecv recv = gpu.dispatch_recv(stream);
    cuda_check(cudaStreamSynchronize(stream), "dispatch (check pass)");
    std::string failure = compare_recv(host_path.recv(), recv);
    y.upload(host_path.expert_out().data(), host_path.expert_out().size());
    gpu.combine_send(y.get(), stream);
    gpu.combine_recv(out.get(), stream);
    cuda_check(cudaStreamSynchronize(stream), "combine (check pass)");
    const auto got = download<std::byte>(out.get(), static_cast<std::size_t>(data.tokens) * row);
    if (failure.empty() && data.tokens > 0 && std::memcmp(got.data(), host_path.out(), got.size()) != 0) {
      failure = "combine output differs from the host exchange's";
    }
    std::string message;
    const bool check = all_ranks_pass(comm, failure, message);
    if (!check) {
      status = 1;
      if (root) {
        std::fprintf(stderr, "epcomm-bench: low-latency device check failed for %s: %s\n", describe(c).c_str(),
                     message.c_str());
      }
    }

    // One iteration: the events around its two phases, recorded from the host
    // on the stream between them (never inside a capture: an event recorded in a
    // capturing stream is a dependency of the graph, not a timestamp, and
    // cudaEventElapsedTime refuses it with "invalid argument").
    const auto dispatch = [&] {
      gpu.dispatch_send(in);
      gpu.dispatch_recv(stream);
    };
    const auto combine = [&] {
      gpu.combine_send(y.get(), stream);
      gpu.combine_recv(out.get(), stream);
    };
    const auto timed = [&](const auto& run_dispatch, const auto& run_combine, Samples& sd, Samples& sc) {
      for (int i = 0; i < options.warmup + options.iters; ++i) {
        mpi_check(MPI_Barrier(comm), "MPI_Barrier");
        cuda_check(cudaEventRecord(ev[0], stream), "cudaEventRecord");
        run_dispatch();
        cuda_check(cudaEventRecord(ev[1], stream), "cudaEventRecord");
        run_combine();
        cuda_check(cudaEventRecord(ev[2], stream), "cudaEventRecord");
        cuda_check(cudaStreamSynchronize(stream), "iteration");
        float d_ms = 0, c_ms = 0;
        cuda_check(cudaEventElapsedTime(&d_ms, ev[0], ev[1]), "cudaEventElapsedTime");
        cuda_check(cudaEventElapsedTime(&c_ms, ev[1], ev[2]), "cudaEventElapsedTime");
        if (i >= options.warmup) {
          sd.add(d_ms * 1e-3);
          sc.add(c_ms * 1e-3);
        }
      }
    };
    // Calls from the host: its checks and launches are inside the events.
    Samples sd, sc;
    timed(dispatch, combine, sd, sc);
    // The same phases captured once, each in a CUDA graph of its own, and
    // replayed one after the other with the events between them: the GPU's time
    // without the host's calls.
    Samples gd, gc;
    std::string graph_failure;
    CapturedGraph dispatch_graph, combine_graph;
    try {
      dispatch_graph.capture(stream, dispatch);
      combine_graph.capture(stream, combine);
    } catch (const std::exception& e) {
      cudaGetLastError();
      graph_failure = e.what();
    }
    std::string graph_message;
    const bool graph_ok = all_ranks_pass(comm, graph_failure, graph_message);
    if (graph_ok) {
      timed([&] { dispatch_graph.launch(stream); }, [&] { combine_graph.launch(stream); }, gd, gc);
    }
#ifdef EPCOMM_BENCH_NCCL
    // The same tokens through NCCL's deduplicated per-rank exchange: one row per
    // distinct token a rank receives, in the dispatch format, then in the dtype.
    const epcomm_bench::RowsTo nccl_rows =
        epcomm_bench::rows_to_ranks(data.topk_idx.data(), data.tokens, c.topk, c.experts, group.size());
    const double nccl_d = nccl ? nccl->exchange_us(stream, nccl_rows.tokens,
                                                   epcomm::row_layout(c.dispatch_format, c.hidden).row_bytes,
                                                   options.iters, options.warmup)
                               : -1;
    const double nccl_c = nccl ? nccl->exchange_us(stream, nccl_rows.tokens, row, options.iters, options.warmup) : -1;
#endif
#ifdef EPCOMM_BENCH_CUBLAS
    // The expert computation of a decode step between the halves: one GEMM over
    // the rows a rank receives on average (tokens x topk), hidden in, 4096 out.
    std::optional<epcomm_bench::GemmBetweenHalves> gemm;
    const epcomm_bench::GemmShape gemm_shape{data.tokens * c.topk, 4096, c.hidden};
    if (options.gemm_between && gemm_shape.m > 0) {
      const epcomm_bench::LowLatencyHalves halves{[&] { gpu.dispatch_send(in); }, [&] { gpu.dispatch_recv(stream); },
                                                  [&] { gpu.combine_send(y.get(), stream); },
                                                  [&] { gpu.combine_recv(out.get(), stream); }};
      gemm = epcomm_bench::measure_gemm_between_halves(comm, stream, gemm_shape, halves, options.warmup,
                                                       options.iters);
    }
#endif
#ifdef EPCOMM_BENCH_TIMELINE
    if (options.timeline) {
      // Two iterations of each kind under the timeline; rank 0 prints the second
      // (the first pays for CUPTI's start).
      epcomm_bench::GpuTimeline tl;
      const auto trace = [&](const char* what, const auto& run_dispatch, const auto& run_combine) {
        tl.start();
        uint64_t t[3] = {0, 0, 0};
        for (int i = 0; i < 2; ++i) {
          mpi_check(MPI_Barrier(comm), "MPI_Barrier");
          t[0] = epcomm_bench::GpuTimeline::now_ns();
          run_dispatch();
          cuda_check(cudaStreamSynchronize(stream), "traced dispatch");
          t[1] = epcomm_bench::GpuTimeline::now_ns();
          run_combine();
          cuda_check(cudaStreamSynchronize(stream), "traced combine");
          t[2] = epcomm_bench::GpuTimeline::now_ns();
        }
        tl.stop();
        if (!root) return;
        const std::string title = std::string(what) + ", " + describe(c) + ", rank 0";
        tl.print(stderr, ("dispatch " + title).c_str(), t[0], t[1]);
        tl.print(stderr, ("combine " + title).c_str(), t[1], t[2]);
        std::fflush(stderr);
      };
      trace("from the host", dispatch, combine);
      if (graph_ok) {
        trace("graph replay", [&] { dispatch_graph.launch(stream); }, [&] { combine_graph.launch(stream); });
      }
    }
#endif
    const Latency l_d = sd.latency(comm), l_c = sc.latency(comm);
    Latency g_d, g_c;
    if (graph_ok) {
      g_d = gd.latency(comm);
      g_c = gc.latency(comm);
    }
    if (!root) continue;
    if (!graph_ok) std::printf("# CUDA graph timing failed: %s\n", graph_message.c_str());
    std::printf("%7d %7d %8d %5d %10s %10s %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %11.1f %6s\n", c.tokens,
                c.hidden, c.experts, c.topk, epcomm::to_string(c.dispatch_format),
                epcomm::to_string(c.combine_format), l_d.spread.p50, l_d.p99, l_c.spread.p50, l_c.p99,
                g_d.spread.p50, g_d.p99, g_c.spread.p50, g_c.p99, check ? "true" : "false");
#ifdef EPCOMM_BENCH_NCCL
    if (nccl) {
      std::printf("# NCCL per-rank exchange of the same tokens, same run: dispatch %.1f us, combine %.1f us\n",
                  nccl_d, nccl_c);
    }
#endif
#ifdef EPCOMM_BENCH_CUBLAS
    if (gemm) {
      std::printf("# GEMM %d x %d x %d (BF16, cuBLAS) on the stream: alone %.1f us; between dispatch_send and "
                  "dispatch_recv %.1f us (%+.1f%%); between combine_send and combine_recv %.1f us (%+.1f%%)\n",
                  gemm_shape.m, gemm_shape.n, gemm_shape.k, gemm->alone_us, gemm->in_dispatch_us,
                  100.0 * (gemm->in_dispatch_us / gemm->alone_us - 1.0), gemm->in_combine_us,
                  100.0 * (gemm->in_combine_us / gemm->alone_us - 1.0));
      std::printf("# the same GEMM on a second stream beside a whole dispatch + combine (SM budget %d): %.1f us "
                  "(%+.1f%%), the dispatch + combine beside it %.1f us\n",
                  gpu.config().gpu_sm_budget, gemm->beside_us, 100.0 * (gemm->beside_us / gemm->alone_us - 1.0),
                  gemm->exchange_beside_us);
    }
#endif
    std::fflush(stdout);
    if (json.enabled()) {
      Json j = header_json(group, options, c);
      j["timing"] = "cuda-events";
      j["sm_budget"] = gpu.config().gpu_sm_budget;
      add_latency(j, "dispatch_us", l_d);
      add_latency(j, "combine_us", l_c);
      j["total_us"] = rounded(l_d.spread.p50 + l_c.spread.p50, 3);
      if (graph_ok) {
        add_latency(j, "graph_dispatch_us", g_d);
        add_latency(j, "graph_combine_us", g_c);
        j["graph_total_us"] = rounded(g_d.spread.p50 + g_c.spread.p50, 3);
      }
#ifdef EPCOMM_BENCH_NCCL
      if (nccl) {
        j["nccl_dispatch_us"] = rounded(nccl_d, 3);
        j["nccl_combine_us"] = rounded(nccl_c, 3);
      }
#endif
#ifdef EPCOMM_BENCH_CUBLAS
      if (gemm) {
        j["gemm_m"] = gemm_shape.m;
        j["gemm_n"] = gemm_shape.n;
        j["gemm_k"] = gemm_shape.k;
        j["gemm_alone_us"] = rounded(gemm->alone_us, 3);
        j["gemm_in_dispatch_us"] = rounded(gemm->in_dispatch_us, 3);
        j["gemm_in_combine_us"] = rounded(gemm->in_combine_us, 3);
        j["gemm_beside_us"] = rounded(gemm->beside_us, 3);
        j["exchange_beside_gemm_us"] = rounded(gemm->exchange_beside_us, 3);
      }
#endif
      j["check"] = check;
      json.write(j);
    }
  }
  for (cudaEvent_t& e : ev) cudaEventDestroy(e);
  cudaStreamDestroy(stream);
  return status;
}
#endif

}  // namespace

int run_low_latency(const epcomm::Group& group, const Options& options) {
  if (options.print_memory) return print_memory(group, options);
  if (options.memory == "device") {
#ifdef EPCOMM_BENCH_CUDA
    return run_low_latency_device(group, options);
#else
    if (group.rank() == 0) std::fprintf(stderr, "epcomm-bench: --memory device needs a build with CUDA\n");
    return 2;
#endif
  }
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
    const std::optional<epcomm::NodeLimitedRouter> router = router_if_runnable(c, group, root);
    if (!router) continue;
    std::optional<epcomm::LowLatencyExchange> low;
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
