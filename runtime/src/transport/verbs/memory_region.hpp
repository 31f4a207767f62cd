// SPDX-License-Identifier: MIT
// Memory registered with a verbs protection domain, once, for the lifetime of the
// buffers it covers: registration pins pages and is far too slow per message.
// Access is local write + remote write (peers RDMA-write into receive buffers; no
// reads or atomics are used).
#pragma once

#include <epcomm/types.hpp>
#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>

namespace epcomm::detail {

class Region {
 public:
  // Host memory is pinned by ibv_reg_mr. GPU memory (kDevice, GPUDirect RDMA) is
  // exported as a dma-buf and registered with ibv_reg_dmabuf_mr at its own
  // address, so nothing that posts writes tells the two apart; a build whose
  // rdma-core lacks ibv_reg_dmabuf_mr, a GPU that cannot export and an adapter
  // that cannot take it throw Error(kUnsupported).
  Region(ibv_pd* pd, void* addr, std::size_t length, MemorySpace space = MemorySpace::kHost);
  ~Region();
  Region(Region&& other) noexcept;
  Region& operator=(Region&&) = delete;
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  void* addr() const { return addr_; }
  std::size_t length() const { return length_; }
  uint32_t lkey() const { return mr_->lkey; }
  uint32_t rkey() const { return mr_->rkey; }
  MemorySpace space() const { return space_; }

 private:
  ibv_mr* mr_ = nullptr;
  void* addr_ = nullptr;
  std::size_t length_ = 0;
  MemorySpace space_ = MemorySpace::kHost;
};

}  // namespace epcomm::detail
