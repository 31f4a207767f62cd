// SPDX-License-Identifier: MIT
// A memcpy split over a fixed number of threads: the calling thread and threads - 1
// workers, each copying one contiguous part. Workers sleep on a condition variable
// between copies rather than spin, so that on a machine with fewer cores than
// threads an idle worker takes no time from whatever runs between two copies (the
// exchange that epcomm-bench times beside its memcpy floor).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace epcomm_bench {

class ParallelCopy {
 public:
  explicit ParallelCopy(int threads) : threads_(threads) {
    if (threads < 1) throw std::invalid_argument("ParallelCopy: " + std::to_string(threads) + " threads");
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { work(i); });
  }
  ~ParallelCopy() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : workers_) t.join();
  }
  ParallelCopy(const ParallelCopy&) = delete;
  ParallelCopy& operator=(const ParallelCopy&) = delete;

  int threads() const { return threads_; }

  // Copies `bytes` from src to dst (not overlapping); returns when every part is done.
  void operator()(void* dst, const void* src, std::size_t bytes) {
    if (threads_ == 1) {
      if (bytes > 0) std::memcpy(dst, src, bytes);
      return;
    }
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      dst_ = static_cast<std::byte*>(dst);
      src_ = static_cast<const std::byte*>(src);
      bytes_ = bytes;
      pending_ = threads_ - 1;
      ++generation_;
    }
    start_.notify_all();
    copy_part(0, static_cast<std::byte*>(dst), static_cast<const std::byte*>(src), bytes);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
  }

  // Part i of n of [0, bytes): contiguous, in whole cache lines except at the end.
  static std::pair<std::size_t, std::size_t> part(std::size_t bytes, int i, int n) {
    const std::size_t lines = (bytes + kLine - 1) / kLine;
    const auto at = [&](int k) {
      return std::min(bytes, lines * static_cast<std::size_t>(k) / static_cast<std::size_t>(n) * kLine);
    };
    return {at(i), at(i + 1)};
  }

 private:
  static constexpr std::size_t kLine = 64;

  void copy_part(int i, std::byte* dst, const std::byte* src, std::size_t bytes) const {
    const auto [begin, end] = part(bytes, i, threads_);
    if (end > begin) std::memcpy(dst + begin, src + begin, end - begin);
  }

  void work(int i) {
    uint64_t seen = 0;
    for (;;) {
      std::byte* dst;
      const std::byte* src;
      std::size_t bytes;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        start_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        dst = dst_;
        src = src_;
        bytes = bytes_;
      }
      copy_part(i, dst, src, bytes);
      bool last;
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        last = --pending_ == 0;
      }
      if (last) done_.notify_one();
    }
  }

  const int threads_;
  std::mutex mutex_;
  std::condition_variable start_, done_;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
  std::byte* dst_ = nullptr;
  const std::byte* src_ = nullptr;
  std::size_t bytes_ = 0;
  std::vector<std::thread> workers_;
};

}  // namespace epcomm_bench
