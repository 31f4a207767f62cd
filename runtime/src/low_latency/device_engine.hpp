// SPDX-License-Identifier: MIT
// The low-latency exchange on GPU memory: each rank's slots (buffer_layout's
// shared segment) in its GPU's memory, mapped by every node peer with CUDA IPC,
// and the kernels of epcomm_kernels/cuda_low_latency.hpp launched on the
// caller's stream, one per call. Ranks on other nodes are reached through the
// proxy (mpi_proxy.hpp): the kernels stage their messages in pinned host memory
// and push commands; the group's progress thread sends them and copies arrivals
// into GPU memory. No CUDA type here: a build without CUDA refuses device memory
// (no_device_engine.cpp).
#pragma once

#include <epcomm/low_latency.hpp>

#include <memory>

#include "exchange/config_agreement.hpp"
#include "group_state.hpp"
#include "low_latency/backend.hpp"

namespace epcomm::detail {

// Collective over the group, after it agreed on the config. Throws
// Error(kUnsupported) on every rank without CUDA, where node peers' GPUs cannot
// map each other's memory, or across nodes without the group's progress thread
// (the proxy runs on it).
std::shared_ptr<LowLatencyBackend> make_device_low_latency_engine(std::shared_ptr<GroupState> group,
                                                                  const LowLatencyConfig& config,
                                                                  const ConstructionAgreement& agreed);

}  // namespace epcomm::detail
