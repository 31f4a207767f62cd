// SPDX-License-Identifier: MIT
#include "device/stream_gate.hpp"

#include <cuda_runtime_api.h>

#include <atomic>

#include "device/cuda_call.hpp"
#include "epcomm_kernels/cuda_rows.hpp"

namespace epcomm::detail {

StreamGate::StreamGate(int device, double timeout_s)
    : device_(device), timeout_ns_(static_cast<uint64_t>(timeout_s * 1e9)) {
  EPCOMM_CUDA(cudaSetDevice(device_));
  void* p = nullptr;
  EPCOMM_CUDA(cudaHostAlloc(&p, kGates * sizeof(uint64_t) + 64, cudaHostAllocMapped | cudaHostAllocPortable));
  gates_ = static_cast<volatile uint64_t*>(p);
  for (int i = 0; i < kGates; ++i) gates_[i] = 0;
  timed_out_ = reinterpret_cast<volatile int*>(static_cast<std::byte*>(p) + kGates * sizeof(uint64_t));
  *timed_out_ = 0;
}

StreamGate::~StreamGate() {
  release_all();
  cudaFreeHost(const_cast<uint64_t*>(gates_));
}

void StreamGate::hold(void* stream, uint64_t seq) {
  EPCOMM_CUDA(cudaSetDevice(device_));
  kernels::cuda::wait_for_gate(gates_ + seq % kGates, seq, timeout_ns_, timed_out_, stream);
}

void StreamGate::release(uint64_t seq) {
  // Every store before this one (the results) is visible before the GPU sees the
  // gate move.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  volatile uint64_t& g = gates_[seq % kGates];
  if (g < seq) g = seq;
}

void StreamGate::release_all() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  for (int i = 0; i < kGates; ++i) gates_[i] = ~uint64_t{0};
}

bool StreamGate::timed_out() const { return *timed_out_ != 0; }

}  // namespace epcomm::detail
