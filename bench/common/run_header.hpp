// SPDX-License-Identifier: MIT
// The run header every JSON line of every bench program starts with: which epcomm
// (version, git commit of the build), where (host), and on what (ranks, nodes,
// transport, threads), so a line read on its own still says what produced it.
#pragma once

#include "common/json_lines.hpp"

#include <epcomm/version.hpp>

#include <unistd.h>

#include <string>

// Set by bench/CMakeLists.txt at configure time; "unknown" outside a git checkout.
#ifndef EPCOMM_GIT_COMMIT
#define EPCOMM_GIT_COMMIT "unknown"
#endif

namespace epcomm_bench {

struct RunHeader {
  std::string bench;          // program name, e.g. "epcomm-bench"
  int ranks = 1;
  int nodes = 1;
  std::string transport;      // inter-node transport: mpi | verbs; "none" without MPI
  bool progress_thread = false;  // epcomm's background progress thread
  int threads = 1;            // compute threads per rank (OpenMP / GEMM), 1 when none
};

inline std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "unknown";
  return name;
}

// A new JSON object holding the header's keys; the caller adds its own after them.
inline Json run_header_json(const RunHeader& h) {
  Json j;
  j["bench"] = h.bench;
  j["version"] = EPCOMM_VERSION_STRING;
  j["git_commit"] = EPCOMM_GIT_COMMIT;
  j["host"] = host_name();
  j["ranks"] = h.ranks;
  j["nodes"] = h.nodes;
  j["transport"] = h.transport;
  j["progress_thread"] = h.progress_thread;
  j["threads"] = h.threads;
  return j;
}

}  // namespace epcomm_bench
