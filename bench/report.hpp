// SPDX-License-Identifier: MIT
// Output of epcomm-bench on rank 0: a fixed-width table on stdout (header once,
// one row per configuration, flushed per row) and optional JSON lines with the
// same numbers and a few more, each led by the run header (common/run_header.hpp).
#pragma once

#include "args.hpp"
#include "common/json_lines.hpp"
#include "common/stats.hpp"

#include <cstdint>
#include <string>

namespace epcomm_bench {

// One configuration's numbers, already reduced over ranks.
struct Result {
  BenchConfig config;
  int ranks = 0;
  int nodes = 0;
  int effective_max_nodes = 0;   // after the router clamps max_nodes to the nodes
  std::string transport;         // Exchange::transport(): mpi | verbs
  int64_t max_recv_rows = 0;     // ExchangeConfig::max_recv_rows used; 0 = worst case

  // Order statistics over iterations of the slowest rank's time, microseconds; the
  // medians (p50) are the headline numbers.
  Spread dispatch;
  Spread combine;
  Spread baseline_dispatch;
  Spread baseline_combine;
  Spread reuse_dispatch;  // --reuse-layout: dispatch on an earlier dispatch's layout
  Spread checksum_dispatch;  // --checksum: the same exchange with ExchangeConfig::checksum
  Spread checksum_combine;

  // Bytes of one dispatch + combine, summed over ranks.
  int64_t internode_bytes = 0;       // epcomm's ExchangeStats
  int64_t dispatch_internode_bytes = 0;  // ... of the dispatch alone
  int64_t combine_internode_bytes = 0;   // ... of the combine alone
  int64_t intranode_bytes = 0;
  int64_t layout_bytes = 0;
  int64_t baseline_internode_bytes = 0;  // rows the baseline sent to another node
  int64_t baseline_intranode_bytes = 0;  // ... to another rank of the same node

  // The memcpy floor (README.md): copies of the bytes dispatch must write and
  // combine must read on each rank, timed like the phases, with mover_threads threads.
  Spread memcpy_floor_dispatch;
  Spread memcpy_floor_combine;
  int64_t memcpy_floor_bytes = 0;  // summed over ranks
  int mover_threads = 1;

  bool check = false;

  double total_us() const { return dispatch.p50 + combine.p50; }
  double memcpy_floor_us() const { return memcpy_floor_dispatch.p50 + memcpy_floor_combine.p50; }
  // How close the exchange comes to the copy alone: memcpy_floor_us / total_us.
  double efficiency_vs_memcpy() const { return memcpy_floor_us() / total_us(); }
  double baseline_us() const { return baseline_dispatch.p50 + baseline_combine.p50; }
  double speedup() const { return baseline_us() / total_us(); }
  // (token, expert) payload one rank dispatches and gets back combined:
  // tokens * topk * hidden * dtype size. The logical size, whatever moved.
  int64_t bytes_per_rank() const;
  // Algorithm bandwidth: 2 * bytes_per_rank (there and back) / total time, GB/s.
  double algbw_gbps() const;
  // Inter-node bytes of all ranks per second of the median phase times, GB/s: what
  // the job as a whole pushes between nodes (0 on one node).
  double internode_gbps() const;
  double dispatch_internode_gbps() const;
  double combine_internode_gbps() const;
  double baseline_internode_gbps() const;
  // The inter-node bytes the same exchange would move with BF16 rows (dispatch) and
  // BF16 partials (combine): what the formats are measured against.
  int64_t dispatch_internode_bytes_bf16() const;
  int64_t combine_internode_bytes_bf16() const;
};

// What stays the same for the whole run, echoed in the preamble and every JSON line.
struct RunInfo {
  int ranks = 0;
  int nodes = 0;
  int ranks_per_node = 0;
  bool progress_thread = false;  // Group::progress_thread()
  int mover_threads = 1;         // Group::mover_threads()
  const Options* options = nullptr;
};

// Used on rank 0 only.
class Report {
 public:
  // Opens --json-out (truncating it; throws if it cannot) and prints the preamble
  // and the column header.
  explicit Report(const RunInfo& info);

  void row(const Result& result);
  // A '#' line in the table, e.g. a configuration the router rejects.
  void note(const std::string& text);

 private:
  RunInfo info_;
  JsonLines json_;
};

}  // namespace epcomm_bench
