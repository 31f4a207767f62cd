// SPDX-License-Identifier: MIT
#include "util/log.hpp"

#include <mpi.h>

#include <atomic>
#include <cstdio>

#include "util/env.hpp"

namespace epcomm::log {
namespace {

std::atomic<int> g_rank{-2};  // -2: not set by a Group yet

Level parse_level(const std::string& s) {
  if (s == "error") return Level::kError;
  if (s == "info") return Level::kInfo;
  if (s == "debug") return Level::kDebug;
  if (s == "trace") return Level::kTrace;
  return Level::kWarn;
}

const char* level_name(Level level) {
  switch (level) {
    case Level::kError: return "ERROR";
    case Level::kWarn: return "WARN";
    case Level::kInfo: return "INFO";
    case Level::kDebug: return "DEBUG";
    case Level::kTrace: return "TRACE";
  }
  return "?";
}

}  // namespace

Level threshold() {
  static const Level level = parse_level(env::log_level());
  return level;
}

bool enabled(Level level) { return static_cast<int>(level) <= static_cast<int>(threshold()); }

void set_rank(int r) { g_rank.store(r); }

int rank() {
  int r = g_rank.load();
  if (r != -2) return r;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }
  return -1;
}

void write(Level level, const std::string& message) {
  // One fprintf per line so lines from threads do not interleave mid-line.
  std::fprintf(stderr, "[epcomm rank %d] %s %s\n", rank(), level_name(level), message.c_str());
}

}  // namespace epcomm::log
