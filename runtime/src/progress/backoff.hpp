// SPDX-License-Identifier: MIT
// How a waiting thread gives its core away when nothing moves: spin a little (low
// latency while every rank has a core), then yield, then sleep. With more ranks
// than cores on the host a spinning rank steals the core its peer needs, so there
// it yields at once and soon sleeps. Shared by wait() and the progress thread.
#pragma once

#include <sched.h>

#include <chrono>
#include <thread>

namespace epcomm::detail {

class Backoff {
 public:
  Backoff(bool oversubscribed, int spins, int yields, std::chrono::microseconds nap)
      : spin_limit_(oversubscribed ? 0 : spins), yield_limit_(oversubscribed ? 16 : yields), nap_(nap) {}

  void reset() { idle_ = 0; }
  // One round in which nothing moved.
  void pause() {
    ++idle_;
    if (idle_ <= spin_limit_) return;
    if (idle_ <= yield_limit_) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(nap_);
    }
  }

 private:
  const int spin_limit_, yield_limit_;
  const std::chrono::microseconds nap_;
  int idle_ = 0;
};

}  // namespace epcomm::detail
