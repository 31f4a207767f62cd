// SPDX-License-Identifier: MIT
#include "util/env.hpp"

#include <cerrno>
#include <cstdlib>

#include "util/check.hpp"

namespace epcomm::env {

int get_int(const char* name, int fallback, int min_value) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  long parsed = std::strtol(v, &end, 10);
  EPCOMM_REQUIRE(errno == 0 && end != v && *end == '\0' && parsed >= min_value && parsed <= 1 << 30,
                 kInvalidArgument,
                 name << "='" << v << "' is not an integer >= " << min_value);
  return static_cast<int>(parsed);
}

double get_double(const char* name, double fallback, double min_value) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  double parsed = std::strtod(v, &end);
  EPCOMM_REQUIRE(errno == 0 && end != v && *end == '\0' && parsed >= min_value, kInvalidArgument,
                 name << "='" << v << "' is not a number >= " << min_value);
  return parsed;
}

int ranks_per_node() { return get_int("EPCOMM_RANKS_PER_NODE", 0, 1); }
double timeout_s() { return get_double("EPCOMM_TIMEOUT_S", 60.0, 0.001); }

bool progress_thread() { return get_int("EPCOMM_PROGRESS_THREAD", 1, 0) != 0; }
int progress_core() { return get_int("EPCOMM_PROGRESS_CORE", -1, -1); }
int mover_threads() { return get_int("EPCOMM_MOVER_THREADS", 0, 1); }
bool hold_streams() { return get_int("EPCOMM_HOLD_STREAMS", 1, 0) != 0; }
int gpu_sm_budget() { return get_int("EPCOMM_GPU_SM_BUDGET", 0, 0); }
bool gpu_peer_access() { return get_int("EPCOMM_GPU_PEER_ACCESS", 1, 0) != 0; }
bool gpu_counts() { return get_int("EPCOMM_GPU_COUNTS", 1, 0) != 0; }
int mpi_chunk_bytes() { return get_int("EPCOMM_MPI_CHUNK_BYTES", 1 << 20, 0); }
bool checksum() { return get_int("EPCOMM_CHECKSUM", 0, 0) != 0; }
int fault_flip_bit() { return get_int("EPCOMM_FAULT_FLIP_BIT", 0, 0); }
int fault_flip_node_bit() { return get_int("EPCOMM_FAULT_FLIP_NODE_BIT", 0, 0); }
double fault_setup_stall_s() { return get_double("EPCOMM_FAULT_SETUP_STALL_S", 0, 0); }

std::string log_level() {
  const char* v = std::getenv("EPCOMM_LOG_LEVEL");
  const std::string s = v && *v ? v : "warn";
  EPCOMM_REQUIRE(s == "error" || s == "warn" || s == "info" || s == "debug" || s == "trace", kInvalidArgument,
                 "EPCOMM_LOG_LEVEL='" << s << "' is not one of error, warn, info, debug, trace");
  return s;
}

std::string transport() {
  const char* v = std::getenv("EPCOMM_TRANSPORT");
  const std::string s = v && *v ? v : "auto";
  EPCOMM_REQUIRE(s == "mpi" || s == "verbs" || s == "auto", kInvalidArgument,
                 "EPCOMM_TRANSPORT='" << s << "' is not one of mpi, verbs, auto");
  return s;
}

std::string gpu_direct() {
  const char* v = std::getenv("EPCOMM_GPU_DIRECT");
  const std::string s = v && *v ? v : "auto";
  EPCOMM_REQUIRE(s == "0" || s == "1" || s == "auto", kInvalidArgument,
                 "EPCOMM_GPU_DIRECT='" << s << "' is not one of 0, 1, auto");
  return s;
}

std::string ib_device() {
  const char* v = std::getenv("EPCOMM_IB_DEVICE");
  return v ? std::string(v) : std::string();
}
int ib_port() { return get_int("EPCOMM_IB_PORT", 0, 0); }
int ib_gid_index() { return get_int("EPCOMM_IB_GID_INDEX", -1, -1); }

}  // namespace epcomm::env
