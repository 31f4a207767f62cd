// SPDX-License-Identifier: MIT
#include "util/memory_limits.hpp"

#include <sys/resource.h>

#include <fstream>
#include <sstream>

namespace epcomm::detail {
namespace {

std::string limit(int resource) {
  rlimit l{};
  if (getrlimit(resource, &l) != 0) return "unknown";
  if (l.rlim_cur == RLIM_INFINITY) return "unlimited";
  return std::to_string(static_cast<unsigned long long>(l.rlim_cur)) + " bytes";
}

std::string mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  unsigned long long kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return std::to_string(kib * 1024) + " bytes";
  }
  return "unknown";
}

}  // namespace

std::string memory_limits() {
  std::ostringstream os;
  os << "address space limit (RLIMIT_AS) " << limit(RLIMIT_AS) << ", data limit (RLIMIT_DATA) "
     << limit(RLIMIT_DATA) << ", " << mem_available() << " available (MemAvailable)";
  return os.str();
}

}  // namespace epcomm::detail
