// SPDX-License-Identifier: MIT
#include "device/stream_gate.hpp"

#include <cuda.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "device/cuda_call.hpp"
#include "device/driver_function.hpp"

namespace epcomm::detail {
namespace {

using WaitValue64 = CUresult (*)(CUstream, CUdeviceptr, cuuint64_t, unsigned int);

// Released gates read far ahead of any sequence number: the stream's comparison is
// (int64_t)(*gate - value) >= 0, so "everything" must stay a positive distance.
constexpr uint64_t kReleasedAll = uint64_t{1} << 62;

// What the driver functions below are needed for, in errors about their absence.
constexpr const char* kPurpose = "which holds a caller's stream for an exchange operation";

}  // namespace

StreamGate::StreamGate(int device, double timeout_s)
    : device_(device),
      // Capped at ~4 months so that the deadline arithmetic cannot overflow.
      timeout_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(std::min(timeout_s, 1e7)))) {
  EPCOMM_CUDA(cudaSetDevice(device_));
  auto get_device = reinterpret_cast<CUresult (*)(CUdevice*, int)>(driver_function("cuDeviceGet", kPurpose));
  auto get_attribute = reinterpret_cast<CUresult (*)(int*, CUdevice_attribute, CUdevice)>(
      driver_function("cuDeviceGetAttribute", kPurpose));
  CUdevice dev{};
  int wait64 = 0;
  EPCOMM_REQUIRE(get_device(&dev, device_) == CUDA_SUCCESS &&
                     get_attribute(&wait64, CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS, dev) == CUDA_SUCCESS,
                 kSystem, "cannot query GPU " << device_ << " for 64-bit stream memory operations");
  EPCOMM_REQUIRE(wait64 != 0, kUnsupported,
                 "GPU " << device_ << " (or its driver) has no 64-bit stream memory operations "
                        << "(cuStreamWaitValue64), which hold a caller's stream for an exchange operation");
  wait_value_ = driver_function("cuStreamWaitValue64", kPurpose);
  void* p = nullptr;
  EPCOMM_CUDA(cudaHostAlloc(&p, kGates * sizeof(uint64_t), cudaHostAllocMapped | cudaHostAllocPortable));
  gates_ = static_cast<volatile uint64_t*>(p);
  for (int i = 0; i < kGates; ++i) gates_[i] = 0;
  void* on_device = nullptr;
  EPCOMM_CUDA(cudaHostGetDevicePointer(&on_device, p, 0));
  gates_on_device_ = reinterpret_cast<uintptr_t>(on_device);
  watchdog_ = std::thread([this] { watch(); });
}

StreamGate::~StreamGate() {
  release_all();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  watchdog_.join();
  cudaFreeHost(const_cast<uint64_t*>(gates_));
}

void StreamGate::hold(void* stream, uint64_t seq) {
  EPCOMM_CUDA(cudaSetDevice(device_));
  const CUdeviceptr addr = gates_on_device_ + (seq % kGates) * sizeof(uint64_t);
  const CUresult status = reinterpret_cast<WaitValue64>(wait_value_)(static_cast<CUstream>(stream), addr, seq,
                                                                      CU_STREAM_WAIT_VALUE_GEQ);
  EPCOMM_REQUIRE(status == CUDA_SUCCESS, kSystem,
                 "cuStreamWaitValue64 failed with CUDA driver error " << static_cast<int>(status));
  {
    std::lock_guard lock(mutex_);
    forget_released();
    deadlines_.emplace(Clock::now() + timeout_, seq);
  }
  wake_.notify_one();
}

void StreamGate::raise(uint64_t seq, uint64_t value) {
  // Every store before this one (the results) is visible before the GPU sees the
  // gate move.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  volatile uint64_t& g = gates_[seq % kGates];
  if (g < value) g = value;
}

void StreamGate::release(uint64_t seq) {
  std::lock_guard lock(mutex_);
  raise(seq, seq);
}

void StreamGate::release_all() {
  std::lock_guard lock(mutex_);
  for (uint64_t i = 0; i < kGates; ++i) raise(i, kReleasedAll);
}

bool StreamGate::timed_out() const {
  std::lock_guard lock(mutex_);
  return timed_out_;
}

void StreamGate::forget_released() {
  while (!deadlines_.empty() && gates_[deadlines_.top().second % kGates] >= deadlines_.top().second) deadlines_.pop();
}

// Sleeps until the earliest deadline; a gate still below its operation's number
// then is released and the time-out recorded.
void StreamGate::watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    forget_released();
    if (deadlines_.empty()) {
      wake_.wait(lock);
      continue;
    }
    const auto [deadline, seq] = deadlines_.top();
    if (Clock::now() < deadline) {
      wake_.wait_until(lock, deadline);
      continue;
    }
    deadlines_.pop();
    if (gates_[seq % kGates] < seq) {
      timed_out_ = true;
      raise(seq, seq);
    }
  }
}

}  // namespace epcomm::detail
