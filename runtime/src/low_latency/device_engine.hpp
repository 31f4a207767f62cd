// SPDX-License-Identifier: MIT
// The low-latency exchange on GPU memory, for the ranks of one node: each rank's
// slots (buffer_layout's shared segment) in its GPU's memory, mapped by every
// node peer with CUDA IPC, and the kernels of epcomm_kernels/cuda_low_latency.hpp
// launched on the caller's stream, one per call. No CUDA type here: a build
// without CUDA refuses device memory (no_device_engine.cpp).
#pragma once

#include <epcomm/low_latency.hpp>

#include <memory>

#include "group_state.hpp"
#include "low_latency/backend.hpp"

namespace epcomm::detail {

// Collective over the node, after the group agreed on the config. Throws
// Error(kUnsupported) on every rank when the group spans several nodes, without
// CUDA, or where node peers' GPUs cannot map each other's memory.
std::shared_ptr<LowLatencyBackend> make_device_low_latency_engine(std::shared_ptr<GroupState> group,
                                                                  const LowLatencyConfig& config);

}  // namespace epcomm::detail
