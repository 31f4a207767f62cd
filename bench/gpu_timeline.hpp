// SPDX-License-Identifier: MIT
// GPU timeline of one operation, from CUPTI's activity records: every kernel, copy
// and memset the process ran on the GPU, and the CUDA runtime and driver calls its
// threads made (the exchange's progress thread included), in one clock.
//
// It answers "where does the time of a dispatch go" on hosts without Nsight tools:
// GPU work laid end to end against the span the caller waited, and the host's
// synchronising calls between. Tracing adds a few microseconds per launch, so the
// spans it prints are a little longer than the bench's untraced timings.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>

namespace epcomm_bench {

class GpuTimeline {
 public:
  GpuTimeline();
  ~GpuTimeline();
  GpuTimeline(const GpuTimeline&) = delete;
  GpuTimeline& operator=(const GpuTimeline&) = delete;

  // Records from now on (records of earlier windows are dropped).
  void start();
  // Stops recording and collects what the GPU has finished.
  void stop();
  // CUPTI's clock, for the bounds of a window.
  static uint64_t now_ns();
  // Prints the window [begin_ns, end_ns): GPU activities in start order with their
  // offsets, the GPU's busy time against the span, and the runtime / driver calls
  // grouped by name.
  void print(std::FILE* f, const char* title, uint64_t begin_ns, uint64_t end_ns) const;

 private:
  struct Records;
  std::unique_ptr<Records> records_;
};

}  // namespace epcomm_bench
