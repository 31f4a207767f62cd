// SPDX-License-Identifier: MIT
// The streams that carry an SM budget (epcomm_kernels/sm_budget.hpp). A handful
// at most (one per exchange slot): a small list behind a mutex, looked up once
// per launch, next to which a kernel launch's few microseconds dominate. A
// process that never sets a budget skips the lock.
#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "epcomm_kernels/sm_budget.hpp"

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

}  // namespace epcomm::kernels::cuda
