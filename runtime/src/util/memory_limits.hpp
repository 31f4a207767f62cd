// SPDX-License-Identifier: MIT
// What bounds this process's memory, for allocation-failure messages.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "util/check.hpp"

namespace epcomm::detail {

// "address space limit (RLIMIT_AS) 1073741824 bytes, data limit (RLIMIT_DATA)
// unlimited, 5368709120 bytes available (MemAvailable)".
std::string memory_limits();

// v.resize(n), with std::bad_alloc turned into Error(kSystem) naming `what`, the
// bytes asked for and the limits.
template <class T>
void resize_or_fail(std::vector<T>& v, std::size_t n, const char* what) {
  try {
    v.resize(n);
  } catch (const std::bad_alloc&) {
    EPCOMM_FAIL(kSystem, "cannot allocate " << n * sizeof(T) << " bytes for " << what << ": " << memory_limits()
                                            << "; lower max_tokens_per_rank or max_inflight");
  }
}

}  // namespace epcomm::detail
