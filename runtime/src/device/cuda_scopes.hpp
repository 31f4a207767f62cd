// SPDX-License-Identifier: MIT
// Scoped CUDA thread state for calls the library makes on a caller's thread or
// its progress thread: the current device, and the stream-capture mode.
#pragma once

#include <cuda_runtime_api.h>

#include "device/cuda_call.hpp"

namespace epcomm::detail {

// The caller's current device is the caller's: a call sets the exchange's and
// puts the caller's back.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    EPCOMM_CUDA(cudaGetDevice(&previous_));
    if (previous_ != device) EPCOMM_CUDA(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  ~DeviceScope() {
    if (changed_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

// While a stream of the process may be capturing a CUDA graph, this thread is
// in relaxed capture mode, so a call a global capture forbids cannot invalidate
// the capture (the host-side checks on the caller's thread, the proxy's copies
// on the progress thread).
class RelaxedCapture {
 public:
  RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  ~RelaxedCapture() { cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

}  // namespace epcomm::detail
