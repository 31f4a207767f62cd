// SPDX-License-Identifier: MIT
#include "device/dmabuf_export.hpp"

#include <cuda.h>
#include <unistd.h>

#include "device/cuda_call.hpp"
#include "device/driver_function.hpp"

namespace epcomm::detail {
namespace {

using GetDevice = CUresult (*)(CUdevice*, int);
using GetAttribute = CUresult (*)(int*, CUdevice_attribute, CUdevice);
using GetHandle = CUresult (*)(void*, CUdeviceptr, size_t, CUmemRangeHandleType, unsigned long long);

constexpr const char* kHandleFunction = "cuMemGetHandleForAddressRange";

}  // namespace

std::string dmabuf_unsupported(int device) {
  if (device < 0 && cudaGetDevice(&device) != cudaSuccess) return "no GPU to ask";
  auto get_device = reinterpret_cast<GetDevice>(find_driver_function("cuDeviceGet"));
  auto get_attribute = reinterpret_cast<GetAttribute>(find_driver_function("cuDeviceGetAttribute"));
  if (get_device == nullptr || get_attribute == nullptr) return "the CUDA driver cannot be queried";
  if (find_driver_function(kHandleFunction) == nullptr) {
    return std::string("the CUDA driver has no ") + kHandleFunction + " (CUDA 11.7 or later)";
  }
  CUdevice dev{};
  int supported = 0;
  if (get_device(&dev, device) != CUDA_SUCCESS ||
      get_attribute(&supported, CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, dev) != CUDA_SUCCESS) {
    return "GPU " + std::to_string(device) + " cannot be queried for CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED";
  }
  if (supported == 0) {
    return "GPU " + std::to_string(device) +
           " or its driver cannot export memory as a dma-buf (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED 0; dma-buf "
           "needs NVIDIA's open GPU kernel modules and Linux 5.12 or later)";
  }
  return {};
}

DmabufRange::DmabufRange(const void* ptr, std::size_t bytes) {
  auto get_handle = reinterpret_cast<GetHandle>(driver_function(kHandleFunction, "which exports GPU memory for RDMA"));
  const auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<uint64_t>(ptr);
  const uint64_t first = at / page * page, end = (at + bytes + page - 1) / page * page;
  offset_ = at - first;
  const CUresult status =
      get_handle(&fd_, static_cast<CUdeviceptr>(first), end - first, CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
  EPCOMM_REQUIRE(status == CUDA_SUCCESS && fd_ >= 0, kUnsupported,
                 kHandleFunction << " could not export " << bytes << " bytes of GPU memory at " << ptr
                                 << " as a dma-buf (CUDA driver error " << static_cast<int>(status) << ")");
}

DmabufRange::~DmabufRange() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace epcomm::detail
