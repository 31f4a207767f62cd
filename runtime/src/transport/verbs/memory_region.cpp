// SPDX-License-Identifier: MIT
#include "transport/verbs/memory_region.hpp"

#include <cerrno>
#include <cstring>

#include "util/check.hpp"

namespace epcomm::detail {

Region::Region(ibv_pd* pd, void* addr, std::size_t length, MemorySpace space)
    : addr_(addr), length_(length), space_(space) {
  EPCOMM_REQUIRE(space == MemorySpace::kHost, kUnsupported,
                 "cannot register " << length << " bytes of " << to_string(space)
                                    << " memory for RDMA: the verbs transport registers host memory only");
  // Providers disagree on empty registrations; refuse them alike everywhere.
  EPCOMM_REQUIRE(addr != nullptr && length > 0, kInvalidArgument,
                 "cannot register " << length << " bytes at " << addr << " for RDMA");
  mr_ = ibv_reg_mr(pd, addr, length, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  EPCOMM_REQUIRE(mr_ != nullptr, kSystem,
                 "ibv_reg_mr of " << length << " bytes at " << addr << " failed: " << std::strerror(errno)
                                  << (errno == ENOMEM || errno == EPERM
                                          ? " (locked-memory limit too low? check `ulimit -l`)"
                                          : ""));
}

Region::Region(Region&& other) noexcept
    : mr_(other.mr_), addr_(other.addr_), length_(other.length_), space_(other.space_) {
  other.mr_ = nullptr;
}

Region::~Region() {
  if (mr_) ibv_dereg_mr(mr_);
}

}  // namespace epcomm::detail
