// SPDX-License-Identifier: MIT
// What LowLatencyExchange forwards to: the host engine (engine.hpp) for host
// memory, the device engine (device_engine.hpp) for GPU memory. Both keep the
// same call order (dispatch_send, dispatch_recv, combine_send, combine_recv) and
// the same errors; `stream` is a cudaStream_t the host engine ignores.
#pragma once

#include <epcomm/low_latency.hpp>

#include <memory>

#include "group_state.hpp"

namespace epcomm::detail {

class LowLatencyBackend {
 public:
  virtual ~LowLatencyBackend() = default;
  virtual const LowLatencyConfig& config() const = 0;
  virtual void dispatch_send(const LowLatencyDispatchInput& input) = 0;
  virtual LowLatencyRecv dispatch_recv(void* stream) = 0;
  virtual void combine_send(const void* expert_out, void* stream) = 0;
  virtual void combine_recv(void* out, void* stream) = 0;
  virtual bool progress() = 0;
};

// Collective over the group: every rank checks every rank passed the same config,
// then builds the engine of config.memory. Device memory needs all ranks on one
// node (Error(kUnsupported) otherwise, on every rank) and a build with CUDA.
std::shared_ptr<LowLatencyBackend> make_low_latency_backend(std::shared_ptr<GroupState> group,
                                                            const LowLatencyConfig& config);

}  // namespace epcomm::detail
