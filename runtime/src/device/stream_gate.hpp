// SPDX-License-Identifier: MIT
// Orders the caller's CUDA stream after exchange operations that the host
// completes: begin enqueues on the caller's stream a wait for the operation's gate
// word (pinned host memory) to reach its sequence number; completion raises it. The
// caller's next kernel on that stream therefore sees the results, and the caller's
// thread never blocks.
//
// The wait is a stream memory operation (cuStreamWaitValue64), not a kernel: a held
// stream occupies no SM, and tools that serialise kernels (compute-sanitizer) do
// not deadlock on it. A watchdog thread lets a stream go once it has waited for
// the group's timeout, so a stream is never held for ever, even by an operation
// no thread drives any more; timed_out() then says so.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <queue>
#include <thread>
#include <utility>
#include <vector>

namespace epcomm::detail {

class StreamGate {
 public:
  // Throws Error(kUnsupported) where the driver lacks 64-bit stream memory
  // operations. timeout_s: how long a held stream waits before it gives up.
  StreamGate(int device, double timeout_s);
  ~StreamGate();
  StreamGate(const StreamGate&) = delete;
  StreamGate& operator=(const StreamGate&) = delete;

  // Holds `stream` (a cudaStream_t) until release(seq) or release_all().
  void hold(void* stream, uint64_t seq);
  void release(uint64_t seq);
  // After a failure: lets every held stream go (the error is reported by wait()).
  void release_all();
  // Whether a held stream stopped waiting at its timeout.
  bool timed_out() const;

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr int kGates = 64;  // operations in flight at once, at most
  // Raises gate seq % kGates to at least `value`; the caller holds mutex_.
  void raise(uint64_t seq, uint64_t value);
  // Drops the earliest deadlines whose gates were released; the caller holds mutex_.
  void forget_released();
  void watch();

  volatile uint64_t* gates_ = nullptr;  // pinned, device-mapped
  uintptr_t gates_on_device_ = 0;       // gates_ as the GPU addresses it
  int device_;
  Clock::duration timeout_;
  void* wait_value_ = nullptr;  // cuStreamWaitValue64, from the driver at run time

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  // Holds not yet known to be released: (deadline, seq), earliest first.
  using Deadline = std::pair<Clock::time_point, uint64_t>;
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_;
  bool timed_out_ = false;
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace epcomm::detail
