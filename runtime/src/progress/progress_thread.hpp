// SPDX-License-Identifier: MIT
// The background progress engine of a group: one thread that advances every
// registered exchange, so communication that has begun moves while the caller
// computes. It blocks on a condition variable while no operation is in flight and
// backs off (yield, then short sleeps) while operations are in flight but nothing
// moves. Optional pinning to a core the launcher reserved (EPCOMM_PROGRESS_CORE).
#pragma once

#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace epcomm::detail {

// What the thread drives. Implemented by the exchange engine.
class Progressable {
 public:
  virtual ~Progressable() = default;
  // Advances in-flight work without blocking on peers. `busy` is set when work is
  // still in flight afterwards for this thread to drive (not while a caller drives
  // the target itself, which calls notify() when it stops). Returns true if
  // anything moved. Never throws: errors are kept for the caller's next wait().
  virtual bool background_progress(bool& busy) = 0;
};

class ProgressThread {
 public:
  // `oversubscribed`: more ranks than cores on this host, so back off at once.
  ProgressThread(int pin_core, bool oversubscribed);
  ~ProgressThread();
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

  void add(Progressable* target);
  // After remove() returns the thread no longer touches `target`.
  void remove(Progressable* target);
  // New work was posted: wake the thread if it sleeps. Call without holding any
  // lock the target's background_progress takes.
  void notify();

 private:
  void run(int pin_core);

  // targets_mu_ is held for a whole pass over the targets; wake_mu_ only around the
  // sleep, so notify() never waits for a pass (which may be copying megabytes).
  std::mutex targets_mu_;
  std::vector<Progressable*> targets_;
  std::mutex wake_mu_;
  std::condition_variable wake_;
  bool stop_ = false;     // guarded by wake_mu_
  bool pending_ = false;  // guarded by wake_mu_
  const bool oversubscribed_;
  std::thread thread_;
};

}  // namespace epcomm::detail
