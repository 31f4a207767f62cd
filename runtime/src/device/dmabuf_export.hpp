// SPDX-License-Identifier: MIT
// GPU memory exported as a Linux dma-buf, the handle GPUDirect RDMA registers with
// an RDMA adapter (ibv_reg_dmabuf_mr): the driver's CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
// says whether a GPU can, cuMemGetHandleForAddressRange makes the handle. Both are
// looked up in the driver at run time (driver_function.hpp). A build without CUDA
// answers "unsupported".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace epcomm::detail {

// Why GPU `device` (< 0: the calling thread's current one) cannot export its
// memory as a dma-buf, or empty when it can. Never throws: a GPU or driver that
// cannot be asked is an answer too.
std::string dmabuf_unsupported(int device);

// A dma-buf file descriptor for [ptr, ptr + bytes) of GPU memory (cudaMalloc),
// widened to host pages as the driver requires; `offset` is where ptr lies in it.
// Closes the descriptor when destroyed (a registration keeps its own reference).
class DmabufRange {
 public:
  // Throws Error(kUnsupported) when the driver refuses the export.
  DmabufRange(const void* ptr, std::size_t bytes);
  ~DmabufRange();
  DmabufRange(const DmabufRange&) = delete;
  DmabufRange& operator=(const DmabufRange&) = delete;

  int fd() const { return fd_; }
  uint64_t offset() const { return offset_; }

 private:
  int fd_ = -1;
  uint64_t offset_ = 0;
};

}  // namespace epcomm::detail
