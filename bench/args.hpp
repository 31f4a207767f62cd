// SPDX-License-Identifier: MIT
// Command line of epcomm-bench: flags, defaults, and the sweep they describe.
#pragma once

#include <epcomm/group.hpp>
#include <epcomm/types.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace epcomm_bench {

// One point of the sweep: everything that changes the shape of the exchange.
struct BenchConfig {
  int tokens = 0;     // per rank
  int hidden = 0;
  int experts = 0;
  int topk = 0;
  int max_nodes = 0;  // 0: no node limit
  epcomm::DType dtype = epcomm::DType::kBF16;
  epcomm::Format dispatch_format = epcomm::Format::kBF16;  // rows on the wire
  epcomm::Format combine_format = epcomm::Format::kBF16;   // node partials on the wire
};

struct Options {
  // List-valued flags: the bench runs their cartesian product.
  std::vector<int> tokens{128};
  std::vector<int> hidden{7168};
  std::vector<int> experts{64};
  std::vector<int> topk{8};
  std::vector<int> max_nodes{0};
  std::vector<epcomm::DType> dtypes{epcomm::DType::kBF16};
  // Empty: the dtype's own format (f32 rows are not narrowed on the wire).
  std::vector<epcomm::Format> dispatch_formats;
  std::vector<epcomm::Format> combine_formats;
  // One group per entry, the whole sweep on each (default: EPCOMM_TRANSPORT).
  std::vector<epcomm::GroupOptions::Transport> transports{epcomm::GroupOptions::Transport::kDefault};
  // Scalars, shared by every configuration.
  int warmup = 5;
  int iters = 20;
  int alignment = 1;
  uint64_t seed = 1;
  // GroupOptions::mover_threads (0: the group's default, EPCOMM_MOVER_THREADS or the
  // rank's share of its cores); the memcpy floor copies with as many threads.
  int mover_threads = 0;
  // Also time a dispatch on the layout of an earlier one (same routing, no layout
  // exchange), interleaved with the other paths.
  bool reuse_layout = false;
  // Also time the same exchange with ExchangeConfig::checksum on, interleaved with
  // the other paths: the checksums' cost side by side in one run.
  bool checksum = false;
  // "normal": Exchange against the MPI_Alltoallv baseline; "low-latency":
  // LowLatencyExchange against Exchange (low_latency_mode.hpp).
  std::string mode = "normal";
  bool print_memory = false;  // low-latency: print the bytes per rank and stop
  bool timeline = false;      // low-latency on the GPU: trace one iteration (CUPTI) to stderr
  bool gemm_between = false;  // low-latency on the GPU: time a GEMM between each call's halves
  // low-latency: "host", or "device" (GPU memory, CUDA-event timing; builds with CUDA)
  std::string memory = "host";
  // low-latency on the GPU: LowLatencyConfig::gpu_sm_budget (0: no bound)
  int sm_budget = 0;
  bool json = false;       // JSON lines on stdout after each table row
  std::string json_out;    // also write the JSON lines to this file
};

// Fills o from argv (bench/common/cli.hpp). Returns the exit status when the program
// should stop: 0 after --help, 2 after a bad argument; only `print` writes them.
std::optional<int> parse_args(int argc, char** argv, bool print, Options& o);
// The --dtype spelling of t, as the report prints it.
const char* dtype_name(epcomm::DType t);
// "tokens=256 hidden=7168 ..." for messages about one configuration.
std::string describe(const BenchConfig& config);
// Cartesian product, tokens varying fastest (like a size sweep in nccl-tests).
std::vector<BenchConfig> expand(const Options& options);

}  // namespace epcomm_bench
