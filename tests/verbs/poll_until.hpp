// SPDX-License-Identifier: MIT
// Drives a VerbsTransport until a condition holds, as the engine's wait() will: a
// stretch of `timeout_s` without any completion is a timeout that names the peers
// still outstanding.
#pragma once

#include <chrono>
#include <span>
#include <vector>

#include "transport/verbs/verbs_transport.hpp"
#include "util/check.hpp"

namespace epcomm_test {

template <class Done>
void poll_until(epcomm::detail::VerbsTransport& t, std::vector<epcomm::detail::Completion>& got, Done done,
                double timeout_s, std::span<const int64_t> expected_receives = {}) {
  using clock = std::chrono::steady_clock;
  auto last_step = clock::now();
  while (!done()) {
    if (t.poll(got) > 0) {
      last_step = clock::now();
    } else if (std::chrono::duration<double>(clock::now() - last_step).count() > timeout_s) {
      EPCOMM_FAIL(kTimeout, "no RDMA completion for " << timeout_s << " s; waiting for "
                                                      << t.outstanding(expected_receives));
    }
  }
}

}  // namespace epcomm_test
