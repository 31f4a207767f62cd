// SPDX-License-Identifier: MIT
#include "util/log.hpp"

#include <mpi.h>

#include <atomic>
#include <cstdio>

#include "util/env.hpp"

namespace epcomm::log {
namespace {

std::atomic<int> g_rank{-2};  // -2: not set by a Group yet

// s is one of env::log_level()'s validated names.
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

// -1 until EPCOMM_LOG_LEVEL has been read successfully.
std::atomic<int> g_threshold{-1};
// Set while this thread reads EPCOMM_LOG_LEVEL: the Error for a bad value logs
// itself (at kDebug) on the way out, which must not read the variable again.
thread_local bool t_reading_level = false;

}  // namespace

Level threshold() {
  const int cached = g_threshold.load(std::memory_order_relaxed);
  if (cached >= 0) return static_cast<Level>(cached);
  if (t_reading_level) return Level::kWarn;
  t_reading_level = true;
  struct Done {
    ~Done() { t_reading_level = false; }
  } done;
  const Level level = parse_level(env::log_level());
  g_threshold.store(static_cast<int>(level), std::memory_order_relaxed);
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
