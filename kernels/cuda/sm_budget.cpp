// SPDX-License-Identifier: MIT
// The streams that carry an SM budget (epcomm_kernels/sm_budget.hpp). A handful
// at most (one per exchange slot): a small list behind a mutex, looked up once
// per launch, next to which a kernel launch's few microseconds dominate. A
// process that never sets a budget skips the lock. Also the largest block of
// each kernel, asked of CUDA once (at preload) for the launches under a budget.
#include <cuda_runtime_api.h>

#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "epcomm_kernels/sm_budget.hpp"
#include "launch.hpp"

namespace epcomm::kernels::cuda {
namespace {

struct Budgets {
  std::mutex mutex;
  std::vector<std::pair<void*, int>> streams;
  std::atomic<bool> any{false};
};

Budgets& budgets() {
  static Budgets b;
  return b;
}

}  // namespace

void set_stream_sm_budget(void* stream, int budget) {
  Budgets& b = budgets();
  std::lock_guard lock(b.mutex);
  auto& s = b.streams;
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (it->first == stream) {
      s.erase(it);
      break;
    }
  }
  if (budget > 0) s.emplace_back(stream, budget);
  b.any.store(!s.empty(), std::memory_order_release);
}

int stream_sm_budget(void* stream) {
  Budgets& b = budgets();
  if (!b.any.load(std::memory_order_acquire)) return 0;
  std::lock_guard lock(b.mutex);
  for (const auto& [s, budget] : b.streams) {
    if (s == stream) return budget;
  }
  return 0;
}

namespace detail {
namespace {

// Kernel -> cudaFuncAttributes::maxThreadsPerBlock. Filled at preload, read by
// the launches under a budget; a few hundred kernel instances at most.
struct KernelLimits {
  std::mutex mutex;
  std::unordered_map<const void*, int> max_threads;
};

KernelLimits& kernel_limits() {
  static KernelLimits k;
  return k;
}

int query_max_threads(const void* kernel) {
  cudaFuncAttributes attributes{};
  const cudaError_t s = cudaFuncGetAttributes(&attributes, kernel);
  if (s != cudaSuccess) {
    throw Error(ErrorCode::kSystem, std::string("epcomm: CUDA cudaFuncGetAttributes failed: ") + cudaGetErrorString(s));
  }
  return attributes.maxThreadsPerBlock;
}

}  // namespace

void preload(const void* kernel) {
  const int most = query_max_threads(kernel);
  KernelLimits& k = kernel_limits();
  std::lock_guard lock(k.mutex);
  k.max_threads[kernel] = most;
}

int kernel_max_threads(const void* kernel) {
  KernelLimits& k = kernel_limits();
  {
    std::lock_guard lock(k.mutex);
    const auto it = k.max_threads.find(kernel);
    if (it != k.max_threads.end()) return it->second;
  }
  // Not preloaded (a codec called on its own): asked now, once.
  preload(kernel);
  std::lock_guard lock(k.mutex);
  return k.max_threads[kernel];
}

}  // namespace detail
}  // namespace epcomm::kernels::cuda
