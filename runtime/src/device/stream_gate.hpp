// SPDX-License-Identifier: MIT
// Orders the caller's CUDA stream after exchange operations that the host
// completes: begin enqueues a one-thread kernel on the caller's stream that waits
// until the operation's gate (pinned host memory) reaches its sequence number;
// completion raises it. The caller's next kernel on that stream therefore sees the
// results, and the caller's thread never blocks.
#pragma once

#include <cstdint>

namespace epcomm::detail {

class StreamGate {
 public:
  // timeout_s: how long a held stream waits before it gives up (timed_out()).
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
  static constexpr int kGates = 64;  // operations in flight at once, at most
  volatile uint64_t* gates_ = nullptr;
  volatile int* timed_out_ = nullptr;
  int device_;
  uint64_t timeout_ns_;
};

}  // namespace epcomm::detail
