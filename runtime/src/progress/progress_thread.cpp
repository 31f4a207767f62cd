// SPDX-License-Identifier: MIT
#include "progress/progress_thread.hpp"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <chrono>

#include "progress/backoff.hpp"
#include "util/log.hpp"

namespace epcomm::detail {

ProgressThread::ProgressThread(int pin_core, bool oversubscribed)
    : oversubscribed_(oversubscribed), thread_([this, pin_core] { run(pin_core); }) {}

ProgressThread::~ProgressThread() {
  {
    std::lock_guard<std::mutex> lk(wake_mu_);
    stop_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void ProgressThread::add(Progressable* target) {
  std::lock_guard<std::mutex> lk(targets_mu_);
  targets_.push_back(target);
}

void ProgressThread::remove(Progressable* target) {
  // The thread holds targets_mu_ for a whole pass over the targets, so once we hold
  // it the target is not in use and will not be again.
  std::lock_guard<std::mutex> lk(targets_mu_);
  targets_.erase(std::remove(targets_.begin(), targets_.end(), target), targets_.end());
}

void ProgressThread::notify() {
  {
    std::lock_guard<std::mutex> lk(wake_mu_);
    pending_ = true;
  }
  wake_.notify_one();
}

void ProgressThread::run(int pin_core) {
  if (pin_core >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(pin_core, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
      EPCOMM_LOG(kWarn, "progress thread: cannot pin to core " << pin_core << "; running unpinned");
    }
  }
  EPCOMM_LOG(kDebug, "progress thread started" << (pin_core >= 0 ? " on core " + std::to_string(pin_core) : ""));
  Backoff backoff(oversubscribed_, 256, 4096, std::chrono::microseconds(20));
  for (;;) {
    bool busy = false, moved = false;
    {
      std::lock_guard<std::mutex> lk(targets_mu_);
      for (Progressable* t : targets_) moved |= t->background_progress(busy);
    }
    {
      std::unique_lock<std::mutex> lk(wake_mu_);
      if (stop_) return;
      if (!busy) {
        // Nothing in flight: sleep until notified. pending_ keeps a notification
        // that came during the pass above; the timeout is only a safety net.
        wake_.wait_for(lk, std::chrono::milliseconds(50), [this] { return stop_ || pending_; });
        pending_ = false;
        backoff.reset();
        continue;
      }
      pending_ = false;
    }
    // In flight but waiting on peers: give the core away progressively.
    if (moved) {
      backoff.reset();
    } else {
      backoff.pause();
    }
  }
}

}  // namespace epcomm::detail
