// SPDX-License-Identifier: MIT
#include "args.hpp"

#include "common/cli.hpp"

namespace epcomm_bench {
namespace {

// Only the two element types the issue asks for; the library's parse_dtype also
// takes spellings ("fp32") that the bench's output would not round-trip.
epcomm::DType to_dtype(const std::string& name) {
  return name == "bf16" ? epcomm::DType::kBF16 : epcomm::DType::kF32;
}

epcomm::GroupOptions::Transport to_transport(const std::string& name) {
  using T = epcomm::GroupOptions::Transport;
  if (name == "mpi") return T::kMpi;
  if (name == "verbs") return T::kVerbs;
  return T::kAuto;
}

std::vector<epcomm::Format> or_dtype_format(const std::vector<epcomm::Format>& formats, epcomm::DType dtype) {
  if (!formats.empty()) return formats;
  return {dtype == epcomm::DType::kBF16 ? epcomm::Format::kBF16 : epcomm::Format::kF32};
}

}  // namespace

std::optional<int> parse_args(int argc, char** argv, bool print, Options& o) {
  CLI::App app(
      "Benchmarks epcomm dispatch/combine against a per-(token, expert) BF16\n"
      "MPI_Alltoallv baseline (usage: mpirun -np P epcomm-bench [flags]). Emulated\n"
      "nodes: set EPCOMM_RANKS_PER_NODE. List flags take comma lists; the cartesian\n"
      "product is run.",
      "epcomm-bench");
  add_int_list(app, "--tokens", o.tokens, 1, "tokens per rank");
  add_int_list(app, "--hidden", o.hidden, 1, "elements per token row");
  add_int_list(app, "--experts", o.experts, 1, "routed experts, divisible by P");
  add_int_list(app, "--topk", o.topk, 1, "experts per token");
  add_int_list(app, "--max-nodes", o.max_nodes, 0, "node limit M, 0 = none");
  std::vector<std::string> dtypes{"bf16"}, dispatch_formats, combine_formats, transports;
  add_word_list(app, "--dtype", dtypes, CLI::IsMember({"bf16", "f32"}), "element type of the tokens");
  add_word_list(app, "--dispatch-format", dispatch_formats, wire_format(),
                "rows on the wire: bf16 | fp8 | fp8-ue8m0 | logfmt<n> (n = 3..16) | f32 (default: the dtype)");
  add_word_list(app, "--combine-format", combine_formats, wire_format(),
                "owner and node partials between ranks, same values (default: the dtype)");
  add_word_list(app, "--transport", transports, CLI::IsMember({"mpi", "verbs", "auto"}),
                "inter-node transport; the sweep runs once per value (default: EPCOMM_TRANSPORT)");
  add_number(app, "--warmup", o.warmup, 0, "untimed iterations");
  add_number(app, "--iters", o.iters, 1, "timed iterations");
  add_number(app, "--alignment", o.alignment, 1, "ExchangeConfig::expert_alignment");
  add_number<uint64_t>(app, "--seed", o.seed, 0, "data and routing seed");
  add_number(app, "--mover-threads", o.mover_threads, 0,
             "row-moving threads per rank (GroupOptions::mover_threads), also the memcpy floor's; 0: the "
             "group's default (EPCOMM_MOVER_THREADS, else the rank's share of its cores)");
  CLI::Option* reuse = app.add_flag("--reuse-layout", o.reuse_layout,
                                    "also time dispatches on the first dispatch's layout (DispatchLayout: same "
                                    "routing, no layout exchange), interleaved with the others");
  app.add_flag("--checksum", o.checksum,
               "also time a second Exchange with ExchangeConfig::checksum on, interleaved with the others (leave "
               "EPCOMM_CHECKSUM unset: it turns checksums on in both)")
      ->excludes(reuse);
  app.add_option("--mode", o.mode, "normal: Exchange vs MPI_Alltoallv; low-latency: LowLatencyExchange vs Exchange")
      ->check(CLI::IsMember({"normal", "low-latency"}))
      ->capture_default_str();
  app.add_flag("--print-memory", o.print_memory, "with --mode low-latency: print the bytes per rank and stop");
#ifdef EPCOMM_BENCH_CUBLAS
  app.add_flag("--gemm-between", o.gemm_between,
               "with --mode low-latency --memory device: time a BF16 GEMM (tokens*topk x 4096 x hidden) alone and "
               "between each call's send and receive");
#endif
#ifdef EPCOMM_BENCH_TIMELINE
  app.add_flag("--timeline", o.timeline,
               "with --mode low-latency --memory device: trace one iteration of each kind (CUPTI), rank 0 to stderr");
#endif
  app.add_option("--memory", o.memory,
                 "with --mode low-latency: host, or device (GPU memory, one GPU per rank of a host; CUDA-event "
                 "timing, checked against the host LowLatencyExchange)")
      ->check(CLI::IsMember({"host", "device"}))
      ->capture_default_str();
  add_number(app, "--sm-budget", o.sm_budget, 0,
             "with --mode low-latency --memory device: SMs each of the exchange's kernels may take "
             "(LowLatencyConfig::gpu_sm_budget); 0: no bound");
  app.add_flag("--json", o.json, "also print one JSON object per configuration");
  app.add_option("--json-out", o.json_out, "also write the JSON lines to FILE");
  if (const std::optional<int> status = parse_command_line(app, argc, argv, print)) return status;

  o.dtypes.clear();
  for (const std::string& name : dtypes) o.dtypes.push_back(to_dtype(name));
  o.dispatch_formats = to_formats(dispatch_formats);
  o.combine_formats = to_formats(combine_formats);
  if (!transports.empty()) {
    o.transports.clear();
    for (const std::string& name : transports) o.transports.push_back(to_transport(name));
  }
  return std::nullopt;
}

const char* dtype_name(epcomm::DType t) { return t == epcomm::DType::kBF16 ? "bf16" : "f32"; }

std::string describe(const BenchConfig& c) {
  return "tokens=" + std::to_string(c.tokens) + " hidden=" + std::to_string(c.hidden) +
         " experts=" + std::to_string(c.experts) + " topk=" + std::to_string(c.topk) +
         " max_nodes=" + std::to_string(c.max_nodes) + " dtype=" + dtype_name(c.dtype) +
         " dispatch_format=" + epcomm::to_string(c.dispatch_format) +
         " combine_format=" + epcomm::to_string(c.combine_format);
}

std::vector<BenchConfig> expand(const Options& o) {
  std::vector<BenchConfig> configs;
  for (epcomm::DType dtype : o.dtypes)
    for (epcomm::Format combine_format : or_dtype_format(o.combine_formats, dtype))
      for (epcomm::Format dispatch_format : or_dtype_format(o.dispatch_formats, dtype))
        for (int max_nodes : o.max_nodes)
          for (int topk : o.topk)
            for (int experts : o.experts)
              for (int hidden : o.hidden)
                for (int tokens : o.tokens)
                  configs.push_back({tokens, hidden, experts, topk, max_nodes, dtype, dispatch_format, combine_format});
  return configs;
}

}  // namespace epcomm_bench
