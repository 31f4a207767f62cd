// SPDX-License-Identifier: MIT
#include "transport/verbs/memory_region.hpp"

#include <cerrno>
#include <cstring>

#include "device/dmabuf_export.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

namespace {

constexpr int kAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;

// GPU memory through a dma-buf, at iova `addr`: work requests and peers address it
// by its virtual address, as they do host memory.
ibv_mr* register_device_memory(ibv_pd* pd, void* addr, std::size_t length) {
#ifdef EPCOMM_HAVE_IBV_REG_DMABUF_MR
  const DmabufRange range(addr, length);
  ibv_mr* mr = ibv_reg_dmabuf_mr(pd, range.offset(), length, reinterpret_cast<uint64_t>(addr), range.fd(), kAccess);
  EPCOMM_REQUIRE(mr != nullptr, kUnsupported,
                 "ibv_reg_dmabuf_mr of " << length << " bytes of GPU memory at " << addr << " failed: "
                                         << std::strerror(errno) << " (the adapter or its driver cannot take dma-buf "
                                         << "memory: GPUDirect RDMA unavailable)");
  return mr;
#else
  (void)pd;
  EPCOMM_FAIL(kUnsupported, "cannot register " << length << " bytes of GPU memory at " << addr
                                               << " for RDMA: the rdma-core headers this build used have no "
                                               << "ibv_reg_dmabuf_mr (rdma-core 34 or later)");
#endif
}

}  // namespace

Region::Region(ibv_pd* pd, void* addr, std::size_t length, MemorySpace space)
    : addr_(addr), length_(length), space_(space) {
  // Providers disagree on empty registrations; refuse them alike everywhere.
  EPCOMM_REQUIRE(addr != nullptr && length > 0, kInvalidArgument,
                 "cannot register " << length << " bytes at " << addr << " for RDMA");
  if (space == MemorySpace::kDevice) {
    mr_ = register_device_memory(pd, addr, length);
    return;
  }
  mr_ = ibv_reg_mr(pd, addr, length, kAccess);
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
