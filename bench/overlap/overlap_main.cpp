// SPDX-License-Identifier: MIT
// epcomm-overlap-bench: how much expert-parallel communication two micro-batches
// hide behind compute. Per configuration, in one run, on a synthetic MoE stack:
//   compute_us    time inside the compute stages (serial schedule)
//   comm_us       the schedule with every matrix multiply skipped
//   serial_us     compute and communication one after the other
//   overlapped_us the prefill or decode two-micro-batch schedule
//   overlap_efficiency = (serial - overlapped) / min(compute, comm)
// Times are medians over iterations of the slowest rank; modes alternate per
// iteration. check: the overlapped outputs equal the serial ones. Also printed:
// attention_us / experts_us / shared_us (compute_us by kind of stage),
// overlapped_compute_us (time inside compute stages in the overlapped run), the
// interquartile ranges of serial and overlapped times, and paired_efficiency, the
// median over iterations of (serial - overlapped) of that iteration, divided as
// above (less sensitive to drift between iterations).
#include <epcomm/epcomm.hpp>
#include <mpi.h>
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "common/json_lines.hpp"
#include "common/run_header.hpp"
#include "common/stats.hpp"
#include "overlap/moe_layer.hpp"

namespace epcomm_bench {
namespace {

struct Options {
  std::vector<int> tokens{512}, hidden{1024}, ffn{2048}, experts{16}, topk{4}, max_nodes{0}, attn_gemms{2};
  int layers = 4, warmup = 2, iters = 6, gemm_threads = 1;
  std::string schedule = "prefill";
  bool json = false;
  std::string json_out;
};

// Fills o from argv; returns the exit status when the program should stop (0 after
// --help, 2 after a bad argument), printed by rank 0 only.
std::optional<int> parse(int argc, char** argv, bool print, Options& o) {
  CLI::App app("Two-micro-batch overlap of expert-parallel communication with compute on a synthetic MoE\n"
               "stack (usage: mpirun -np P epcomm-overlap-bench [flags]). List flags take comma lists;\n"
               "the cartesian product is run.",
               "epcomm-overlap-bench");
  add_int_list(app, "--tokens", o.tokens, 1, "tokens per micro-batch per rank");
  add_int_list(app, "--hidden", o.hidden, 1, "hidden size");
  add_int_list(app, "--ffn", o.ffn, 1, "routed expert intermediate size");
  add_int_list(app, "--experts", o.experts, 1, "routed experts");
  add_int_list(app, "--topk", o.topk, 1, "experts per token");
  add_int_list(app, "--max-nodes", o.max_nodes, 0, "node limit, 0 = none");
  add_int_list(app, "--attn-gemms", o.attn_gemms, 0, "[T,H]x[H,H] products in the attention stand-in");
  add_number(app, "--layers", o.layers, 1, "MoE layers per run");
  app.add_option("--schedule", o.schedule, "two-micro-batch schedule")
      ->check(CLI::IsMember({"prefill", "decode"}))
      ->capture_default_str();
  add_number(app, "--gemm-threads", o.gemm_threads, 1, "threads per rank for matrix multiplies");
  add_number(app, "--warmup", o.warmup, 0, "untimed iterations");
  add_number(app, "--iters", o.iters, 1, "timed iterations");
  app.add_flag("--json", o.json, "print one JSON object per configuration");
  app.add_option("--json-out", o.json_out, "also write the JSON lines to FILE");
  return parse_command_line(app, argc, argv, print);
}

// Per iteration, the slowest rank's value (every rank gets the same vector).
std::vector<double> max_over_ranks(std::vector<double> local, MPI_Comm comm) {
  MPI_Allreduce(MPI_IN_PLACE, local.data(), static_cast<int>(local.size()), MPI_DOUBLE, MPI_MAX, comm);
  return local;
}

// Quantile q of v in microseconds.
double quantile_us(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return sorted_quantile(v, q) * 1e6;
}
double median_us(const std::vector<double>& v) { return quantile_us(v, 0.5); }
double iqr_us(const std::vector<double>& v) { return quantile_us(v, 0.75) - quantile_us(v, 0.25); }

struct Row {
  LayerShape shape;
  std::string transport;  // Exchange::transport()
  double compute_us, comm_us, serial_us, overlapped_us;
  double attention_us, experts_us, shared_us, overlapped_compute_us, serial_iqr_us, overlapped_iqr_us, paired_saved_us;
  bool check;
  double efficiency() const { return (serial_us - overlapped_us) / std::min(compute_us, comm_us); }
  double paired_efficiency() const { return paired_saved_us / std::min(compute_us, comm_us); }
};

Row run_one(const epcomm::Group& group, const LayerShape& s, const Options& o) {
  epcomm::ExchangeConfig cfg;
  cfg.num_experts = s.experts;
  cfg.topk = s.topk;
  cfg.hidden = s.hidden;
  cfg.max_tokens_per_rank = s.tokens;
  cfg.dtype = epcomm::DType::kF32;
  cfg.dispatch_format = epcomm::Format::kF32;
  cfg.combine_format = epcomm::Format::kF32;
  cfg.max_inflight = 2;
  epcomm::Exchange ex(group, cfg);
  const LayerWeights w(s, s.experts / group.size(), 17);
  MicroBatch mb0(s, w, group, 0, 5), mb1(s, w, group, 1, 5);
  const auto overlapped = o.schedule == "prefill" ? &epcomm::run_prefill_two_batch : &epcomm::run_decode_two_batch;

  std::vector<double> compute, comm, serial, over, over_compute, attn, experts, shared;
  RowMatrix serial_out0, serial_out1;
  bool same = true;
  MPI_Comm c = group.comm();
  for (int it = 0; it < o.warmup + o.iters; ++it) {
    auto timed = [&](auto&& body) {
      MPI_Barrier(c);
      const double t0 = MPI_Wtime();
      body();
      return MPI_Wtime() - t0;
    };
    mb0.reset_timer();
    mb1.reset_timer();
    const double t_serial = timed([&] { epcomm::run_serial_two_batch(ex, mb0.stages(true), mb1.stages(true), s.layers); });
    const double t_compute = mb0.compute_seconds() + mb1.compute_seconds();
    const double t_attn = mb0.attention_seconds() + mb1.attention_seconds();
    const double t_experts = mb0.experts_seconds() + mb1.experts_seconds();
    const double t_shared = mb0.shared_seconds() + mb1.shared_seconds();
    serial_out0 = mb0.output();
    serial_out1 = mb1.output();
    const double t_comm = timed([&] { epcomm::run_serial_two_batch(ex, mb0.stages(false), mb1.stages(false), s.layers); });
    mb0.reset_timer();
    mb1.reset_timer();
    const double t_over = timed([&] { overlapped(ex, mb0.stages(true), mb1.stages(true), s.layers); });
    const double t_over_compute = mb0.compute_seconds() + mb1.compute_seconds();
    same = same && mb0.output() == serial_out0 && mb1.output() == serial_out1;
    if (it < o.warmup) continue;
    serial.push_back(t_serial);
    compute.push_back(t_compute);
    attn.push_back(t_attn);
    experts.push_back(t_experts);
    shared.push_back(t_shared);
    comm.push_back(t_comm);
    over.push_back(t_over);
    over_compute.push_back(t_over_compute);
  }
  int ok = same ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, c);
  // compute_us and the stage times are those of the serial run.
  serial = max_over_ranks(serial, c);
  over = max_over_ranks(over, c);
  std::vector<double> saved(serial.size());
  for (std::size_t i = 0; i < saved.size(); ++i) saved[i] = serial[i] - over[i];
  return Row{s,
             ex.transport(),
             median_us(max_over_ranks(compute, c)),
             median_us(max_over_ranks(comm, c)),
             median_us(serial),
             median_us(over),
             median_us(max_over_ranks(attn, c)),
             median_us(max_over_ranks(experts, c)),
             median_us(max_over_ranks(shared, c)),
             median_us(max_over_ranks(over_compute, c)),
             iqr_us(serial),
             iqr_us(over),
             median_us(saved),
             ok == 1};
}

Json json_of(const Row& r, const epcomm::Group& g, const Options& o) {
  RunHeader header;
  header.bench = "epcomm-overlap-bench";
  header.ranks = g.size();
  header.nodes = g.num_nodes();
  header.transport = r.transport;
  header.progress_thread = g.progress_thread();
  header.threads = o.gemm_threads;
  Json j = run_header_json(header);
  j["schedule"] = o.schedule;
  j["tokens"] = r.shape.tokens;
  j["hidden"] = r.shape.hidden;
  j["ffn"] = r.shape.ffn;
  j["experts"] = r.shape.experts;
  j["topk"] = r.shape.topk;
  j["max_nodes"] = r.shape.max_nodes;
  j["attn_gemms"] = r.shape.attn_gemms;
  j["layers"] = r.shape.layers;
  j["gemm_threads"] = o.gemm_threads;
  j["warmup"] = o.warmup;
  j["iters"] = o.iters;
  j["compute_us"] = rounded(r.compute_us, 1);
  j["comm_us"] = rounded(r.comm_us, 1);
  j["serial_us"] = rounded(r.serial_us, 1);
  j["overlapped_us"] = rounded(r.overlapped_us, 1);
  j["overlap_efficiency"] = rounded(r.efficiency(), 3);
  j["attention_us"] = rounded(r.attention_us, 1);
  j["experts_us"] = rounded(r.experts_us, 1);
  j["shared_us"] = rounded(r.shared_us, 1);
  j["overlapped_compute_us"] = rounded(r.overlapped_compute_us, 1);
  j["serial_iqr_us"] = rounded(r.serial_iqr_us, 1);
  j["overlapped_iqr_us"] = rounded(r.overlapped_iqr_us, 1);
  j["paired_efficiency"] = rounded(r.paired_efficiency(), 3);
  j["check"] = r.check;
  return j;
}

int run(int argc, char** argv) {
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  Options o;
  if (const std::optional<int> status = parse(argc, argv, world_rank == 0, o)) return *status;
  Eigen::setNbThreads(o.gemm_threads);
  omp_set_num_threads(o.gemm_threads);
  epcomm::Group group(MPI_COMM_WORLD);
  const bool root = group.rank() == 0;
  std::optional<JsonLines> json;
  if (root) json.emplace(o.json, o.json_out);
  if (root) {
    std::printf("# epcomm-overlap-bench: %d ranks, %d nodes, schedule %s, progress %s, %d GEMM thread(s)/rank\n",
                group.size(), group.num_nodes(), o.schedule.c_str(), group.progress_thread() ? "thread" : "inline",
                o.gemm_threads);
    std::printf("%7s %6s %5s %7s %4s %5s %4s %6s %11s %11s %11s %13s %10s %6s %5s\n", "tokens", "hidden", "ffn",
                "experts", "topk", "maxn", "attn", "layers", "compute_us", "comm_us", "serial_us", "overlapped_us",
                "efficiency", "paired", "check");
  }
  bool all_ok = true;
  for (int t : o.tokens)
    for (int h : o.hidden)
      for (int f : o.ffn)
        for (int e : o.experts)
          for (int k : o.topk)
            for (int m : o.max_nodes)
              for (int a : o.attn_gemms) {
                const LayerShape s{t, h, f, e, k, m, a, o.layers};
                const Row r = run_one(group, s, o);
                all_ok = all_ok && r.check;
                if (!root) continue;
                std::printf("%7d %6d %5d %7d %4d %5d %4d %6d %11.1f %11.1f %11.1f %13.1f %10.3f %6.3f %5s\n", t, h, f,
                            e, k, m, a, o.layers, r.compute_us, r.comm_us, r.serial_us, r.overlapped_us,
                            r.efficiency(), r.paired_efficiency(), r.check ? "true" : "false");
                std::fflush(stdout);
                if (json->enabled()) json->write(json_of(r, group, o));
              }
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace epcomm_bench

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int status = 0;
  try {
    status = epcomm_bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "epcomm-overlap-bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
