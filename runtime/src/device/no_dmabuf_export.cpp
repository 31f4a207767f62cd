// SPDX-License-Identifier: MIT
// A build without CUDA: no GPU memory to export.
#include "device/dmabuf_export.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

std::string dmabuf_unsupported(int) { return "this build of epcomm has no CUDA support"; }

DmabufRange::DmabufRange(const void* ptr, std::size_t bytes) {
  EPCOMM_FAIL(kUnsupported, "cannot export " << bytes << " bytes at " << ptr
                                             << " as a dma-buf: this build of epcomm has no CUDA support");
}

DmabufRange::~DmabufRange() = default;

}  // namespace epcomm::detail
