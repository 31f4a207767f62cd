// SPDX-License-Identifier: MIT
#include "comm_pool.hpp"

#include <chrono>
#include <thread>

#include "util/check.hpp"

namespace epcomm::detail {

CommPool::~CommPool() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  for (MPI_Comm& c : comms_) MPI_Comm_free(&c);
}

uint64_t CommPool::free_mask() const {
  const uint64_t made_mask = comms_.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << comms_.size()) - 1;
  return made_mask & ~in_use_;
}

MPI_Comm CommPool::take(int index, MPI_Comm parent, double timeout_s) {
  if (index == made()) {
    EPCOMM_REQUIRE(index < kMaxComms, kUnsupported,
                   "more than " << kMaxComms << " Exchanges alive at once on one Group; drop some first");
    MPI_Comm dup = MPI_COMM_NULL;
    MPI_Request req;
    EPCOMM_MPI(MPI_Comm_idup(parent, &dup, &req));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    for (int done = 0;;) {
      EPCOMM_MPI(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
      if (done) break;
      // The request cannot be cancelled; it stays pending (a rank left the step).
      EPCOMM_REQUIRE(std::chrono::steady_clock::now() < deadline, kTimeout,
                     "timed out after " << timeout_s
                                        << " s in phase 'setup' duplicating the group's communicator for an "
                                           "Exchange: a rank stopped after agreeing on the configuration");
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    comms_.push_back(dup);
  }
  EPCOMM_REQUIRE(index >= 0 && index < made() && !(in_use_ >> index & 1), kMismatch,
                 "the ranks chose communicator " << index << " of " << made() << ", which this rank holds or lacks");
  in_use_ |= uint64_t{1} << index;
  return comms_[index];
}

void CommPool::give_back(int index) { in_use_ &= ~(uint64_t{1} << index); }

}  // namespace epcomm::detail
