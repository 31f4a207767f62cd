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
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "cli.hpp"
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

const char* kUsage =
    "usage: mpirun -np P epcomm-overlap-bench [flags]\n"
    "  --tokens N,...      tokens per micro-batch per rank (default 512)\n"
    "  --hidden N,...      hidden size (default 1024)\n"
    "  --ffn N,...         routed expert intermediate size (default 2048)\n"
    "  --experts N,...     routed experts (default 16)\n"
    "  --topk N,...        experts per token (default 4)\n"
    "  --max-nodes N,...   node limit, 0 = none (default 0)\n"
    "  --attn-gemms N,...  [T,H]x[H,H] products in the attention stand-in (default 2)\n"
    "  --layers N          MoE layers per run (default 4)\n"
    "  --schedule S        prefill | decode (default prefill)\n"
    "  --gemm-threads N    threads per rank for matrix multiplies (default 1)\n"
    "  --warmup N --iters N  (default 2, 6)\n"
    "  --json              print one JSON object per configuration\n"
    "  --json-out FILE     also write the JSON lines to FILE\n";

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help") throw ArgsError(kUsage);
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (i + 1 >= argc) throw ArgsError(std::string(flag) + " needs a value");
    const std::string_view v = argv[++i];
    const std::string_view name = flag.substr(2);
    if (flag == "--tokens") o.tokens = parse_int_list(name, v, 1);
    else if (flag == "--hidden") o.hidden = parse_int_list(name, v, 1);
    else if (flag == "--ffn") o.ffn = parse_int_list(name, v, 1);
    else if (flag == "--experts") o.experts = parse_int_list(name, v, 1);
    else if (flag == "--topk") o.topk = parse_int_list(name, v, 1);
    else if (flag == "--max-nodes") o.max_nodes = parse_int_list(name, v, 0);
    else if (flag == "--attn-gemms") o.attn_gemms = parse_int_list(name, v, 0);
    else if (flag == "--layers") o.layers = parse_number<int>(name, v, 1);
    else if (flag == "--warmup") o.warmup = parse_number<int>(name, v, 0);
    else if (flag == "--iters") o.iters = parse_number<int>(name, v, 1);
    else if (flag == "--gemm-threads") o.gemm_threads = parse_number<int>(name, v, 1);
    else if (flag == "--json-out") o.json_out = v;
    else if (flag == "--schedule" && (v == "prefill" || v == "decode")) o.schedule = v;
    else throw ArgsError("unknown flag or value: " + std::string(flag) + " " + std::string(v) + "\n" + kUsage);
  }
  return o;
}

// Per iteration, the slowest rank's value (every rank gets the same vector).
std::vector<double> max_over_ranks(std::vector<double> local, MPI_Comm comm) {
  MPI_Allreduce(MPI_IN_PLACE, local.data(), static_cast<int>(local.size()), MPI_DOUBLE, MPI_MAX, comm);
  return local;
}

// Quantile q of v in microseconds (linear interpolation between order statistics).
double quantile_us(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(at);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return (v[lo] + (at - static_cast<double>(lo)) * (v[hi] - v[lo])) * 1e6;
}
double median_us(const std::vector<double>& v) { return quantile_us(v, 0.5); }
double iqr_us(const std::vector<double>& v) { return quantile_us(v, 0.75) - quantile_us(v, 0.25); }

struct Row {
  LayerShape shape;
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

std::string json_of(const Row& r, const epcomm::Group& g, const Options& o) {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"ranks\": %d, \"nodes\": %d, \"schedule\": \"%s\", \"tokens\": %d, \"hidden\": %d, \"ffn\": %d, "
                "\"experts\": %d, \"topk\": %d, \"max_nodes\": %d, \"attn_gemms\": %d, \"layers\": %d, "
                "\"gemm_threads\": %d, \"progress_thread\": %s, \"warmup\": %d, \"iters\": %d, "
                "\"compute_us\": %.1f, \"comm_us\": %.1f, "
                "\"serial_us\": %.1f, \"overlapped_us\": %.1f, \"overlap_efficiency\": %.3f, "
                "\"attention_us\": %.1f, \"experts_us\": %.1f, \"shared_us\": %.1f, \"overlapped_compute_us\": %.1f, "
                "\"serial_iqr_us\": %.1f, "
                "\"overlapped_iqr_us\": %.1f, \"paired_efficiency\": %.3f, \"check\": %s}",
                g.size(), g.num_nodes(), o.schedule.c_str(), r.shape.tokens, r.shape.hidden, r.shape.ffn,
                r.shape.experts, r.shape.topk, r.shape.max_nodes, r.shape.attn_gemms, r.shape.layers, o.gemm_threads,
                g.progress_thread() ? "true" : "false", o.warmup, o.iters, r.compute_us, r.comm_us, r.serial_us,
                r.overlapped_us, r.efficiency(), r.attention_us, r.experts_us, r.shared_us, r.overlapped_compute_us,
                r.serial_iqr_us,
                r.overlapped_iqr_us, r.paired_efficiency(), r.check ? "true" : "false");
  return buf;
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  Eigen::setNbThreads(o.gemm_threads);
  omp_set_num_threads(o.gemm_threads);
  epcomm::Group group(MPI_COMM_WORLD);
  const bool root = group.rank() == 0;
  std::ofstream json_file;
  if (root && !o.json_out.empty()) json_file.open(o.json_out);
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
                const std::string js = json_of(r, group, o);
                if (o.json) std::printf("%s\n", js.c_str());
                if (json_file) json_file << js << "\n" << std::flush;
                std::fflush(stdout);
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
  } catch (const epcomm_bench::ArgsError& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::fprintf(stderr, "%s\n", e.what());
    status = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "epcomm-overlap-bench: %s\n", e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
