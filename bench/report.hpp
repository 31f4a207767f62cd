// SPDX-License-Identifier: MIT
// Output of epcomm-bench on rank 0: a fixed-width table on stdout (header once,
// one row per configuration, flushed per row) and optional JSON lines with the
// same numbers and a few more.
#pragma once

#include "args.hpp"

#include <cstdint>
#include <cstdio>
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

  // Medians over iterations of the slowest rank, microseconds.
  double dispatch_us = 0;
  double combine_us = 0;
  double baseline_dispatch_us = 0;
  double baseline_combine_us = 0;

  // Bytes of one dispatch + combine, summed over ranks.
  int64_t internode_bytes = 0;       // epcomm's ExchangeStats
  int64_t dispatch_internode_bytes = 0;  // ... of the dispatch alone
  int64_t combine_internode_bytes = 0;   // ... of the combine alone
  int64_t intranode_bytes = 0;
  int64_t layout_bytes = 0;
  int64_t baseline_internode_bytes = 0;  // rows the baseline sent to another node
  int64_t baseline_intranode_bytes = 0;  // ... to another rank of the same node

  bool check = false;

  double total_us() const { return dispatch_us + combine_us; }
  double baseline_us() const { return baseline_dispatch_us + baseline_combine_us; }
  double speedup() const { return baseline_us() / total_us(); }
  // (token, expert) payload one rank dispatches and gets back combined:
  // tokens * topk * hidden * dtype size. The logical size, whatever moved.
  int64_t bytes_per_rank() const;
  // Algorithm bandwidth: 2 * bytes_per_rank (there and back) / total time, GB/s.
  double algbw_gbps() const;
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
  const Options* options = nullptr;
};

// Used on rank 0 only.
class Report {
 public:
  // Opens --json-out (truncating it; throws if it cannot) and prints the preamble
  // and the column header.
  explicit Report(const RunInfo& info);
  ~Report();
  Report(const Report&) = delete;
  Report& operator=(const Report&) = delete;

  void row(const Result& result);
  // A '#' line in the table, e.g. a configuration the router rejects.
  void note(const std::string& text);

 private:
  RunInfo info_;
  std::FILE* json_file_ = nullptr;
};

}  // namespace epcomm_bench
