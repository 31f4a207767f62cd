// SPDX-License-Identifier: MIT
#include "comm_pool.hpp"

#include <chrono>
#include <map>
#include <mutex>
#include <thread>

#include "util/check.hpp"

namespace epcomm::detail {

std::shared_ptr<CommPool> CommPool::of_members(MPI_Comm comm) {
  int size = 0;
  EPCOMM_MPI(MPI_Comm_size(comm, &size));
  MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  EPCOMM_MPI(MPI_Comm_group(comm, &mine));
  EPCOMM_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> ranks(size), world_ranks(size);
  for (int r = 0; r < size; ++r) ranks[r] = r;
  const int rc = MPI_Group_translate_ranks(mine, size, ranks.data(), world, world_ranks.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  EPCOMM_MPI(rc);
  // Never destroyed: the communicators must outlive every message sent to them.
  static auto* pools = new std::map<std::vector<int>, std::shared_ptr<CommPool>>;
  static std::mutex mu;
  std::lock_guard<std::mutex> lk(mu);
  std::shared_ptr<CommPool>& pool = (*pools)[world_ranks];
  if (!pool) pool = std::make_shared<CommPool>();
  return pool;
}

uint64_t CommPool::free_mask() const {
  const uint64_t made_mask = comms_.size() >= 64 ? ~uint64_t{0} : (uint64_t{1} << comms_.size()) - 1;
  return made_mask & ~in_use_;
}

MPI_Comm CommPool::take(int index, MPI_Comm parent, double timeout_s) {
  if (index == made()) {
    EPCOMM_REQUIRE(index < kMaxComms, kUnsupported,
                   "more than " << kMaxComms << " Exchanges alive at once over the same ranks; drop some first");
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
