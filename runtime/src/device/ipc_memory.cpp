// SPDX-License-Identifier: MIT
#include "device/ipc_memory.hpp"

#include <cuda_runtime_api.h>

#include <cstring>

#include "device/cuda_call.hpp"
#include "util/agree.hpp"
#include "util/log.hpp"

namespace epcomm::detail {
namespace {

std::byte* allocate(int device, std::size_t bytes, const char* purpose) {
  EPCOMM_CUDA(cudaSetDevice(device));
  void* p = nullptr;
  const cudaError_t s = cudaMalloc(&p, bytes);
  if (s == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    std::size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    EPCOMM_FAIL(kBufferTooSmall, "cannot allocate " << bytes << " bytes of GPU memory for " << purpose << " on device "
                                                    << device << " (" << free_bytes << " of " << total
                                                    << " bytes free); lower max_tokens_per_rank or max_inflight");
  }
  EPCOMM_CUDA(s);
  return static_cast<std::byte*>(p);
}

}  // namespace

IpcMemory::IpcMemory(GroupState& group, int device, std::size_t bytes_per_rank, bool map_peers)
    : bases_(group.ranks_per_node, nullptr), local_rank_(group.local_rank), device_(device) {
  // Allocation and export fail together: a rank that threw alone would leave its
  // peers in the handle exchange.
  cudaIpcMemHandle_t mine{};
  std::string why;
  ErrorCode code = ErrorCode::kSystem;
  try {
    bases_[local_rank_] = allocate(device, bytes_per_rank, "the exchange's receive buffers");
    if (map_peers) EPCOMM_CUDA(cudaIpcGetMemHandle(&mine, bases_[local_rank_]));
  } catch (const Error& e) {
    why = e.what();
    code = e.code();
  }
  const auto label = [&](int ld) { return group.global_rank(group.node, ld); };
  const std::string cannot = ranks_that_failed(group.node_comm, why.empty(), label);
  if (!why.empty()) throw Error(code, why);
  EPCOMM_REQUIRE(cannot.empty(), kBufferTooSmall,
                 "node peer(s) " << cannot << " could not allocate or export their GPU receive buffers; see their errors");
  if (!map_peers) return;
  std::vector<cudaIpcMemHandle_t> all(group.ranks_per_node);
  EPCOMM_MPI(MPI_Allgather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, group.node_comm));
  std::string failed;
  for (int ld = 0; ld < group.ranks_per_node; ++ld) {
    if (ld == local_rank_) continue;
    void* p = nullptr;
    const cudaError_t s = cudaIpcOpenMemHandle(&p, all[ld], cudaIpcMemLazyEnablePeerAccess);
    if (s != cudaSuccess) {
      cudaGetLastError();
      failed += (failed.empty() ? "" : ", ") + std::to_string(group.global_rank(group.node, ld)) + " (" +
                cudaGetErrorString(s) + ")";
      continue;
    }
    bases_[ld] = static_cast<std::byte*>(p);
  }
  // Every rank learns whether every mapping worked, so all fail together.
  const std::string unmapped = ranks_that_failed(group.node_comm, failed.empty(), label);
  EPCOMM_REQUIRE(failed.empty(), kUnsupported,
                 "cannot map the GPU memory of node peer(s) " << failed
                     << " with CUDA IPC: their GPUs have no peer access to this one; device memory needs it");
  EPCOMM_REQUIRE(unmapped.empty(), kUnsupported,
                 "node peer(s) " << unmapped << " cannot map this node's GPU memory with CUDA IPC (no peer access)");
}

IpcMemory::~IpcMemory() {
  cudaSetDevice(device_);
  cudaDeviceSynchronize();
  for (std::size_t ld = 0; ld < bases_.size(); ++ld) {
    if (bases_[ld] == nullptr) continue;
    if (static_cast<int>(ld) == local_rank_) {
      cudaFree(bases_[ld]);
    } else {
      cudaIpcCloseMemHandle(bases_[ld]);
    }
  }
}

DeviceBuffer::DeviceBuffer(int device, std::size_t bytes, const char* purpose)
    : ptr_(bytes > 0 ? allocate(device, bytes, purpose) : nullptr), device_(device) {}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_ == nullptr) return;
  cudaSetDevice(device_);
  cudaFree(ptr_);
}

HostRegistration::HostRegistration(void* ptr, std::size_t bytes) {
  if (ptr == nullptr || bytes == 0) return;
  EPCOMM_CUDA(cudaHostRegister(ptr, bytes, cudaHostRegisterMapped | cudaHostRegisterPortable));
  // The exchange hands kernels host addresses, which holds on devices that report
  // cudaDevAttrCanUseHostPointerForRegisteredMem (current GPUs on 64-bit Linux).
  void* on_device = nullptr;
  const cudaError_t s = cudaHostGetDevicePointer(&on_device, ptr, 0);
  if (s != cudaSuccess || on_device != ptr) {
    cudaHostUnregister(ptr);
    EPCOMM_CUDA(s);
    EPCOMM_FAIL(kUnsupported, "kernels see registered host memory at " << on_device << ", not at its host address "
                                                                        << ptr << "; the exchange needs the same");
  }
  ptr_ = ptr;
}

HostRegistration::~HostRegistration() {
  if (ptr_ != nullptr) cudaHostUnregister(ptr_);
}

}  // namespace epcomm::detail
