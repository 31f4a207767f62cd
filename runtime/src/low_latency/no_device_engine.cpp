// SPDX-License-Identifier: MIT
// A build without CUDA: the low-latency exchange refuses device memory.
#include "low_latency/device_engine.hpp"
#include "util/check.hpp"

namespace epcomm::detail {

std::shared_ptr<LowLatencyBackend> make_device_low_latency_engine(std::shared_ptr<GroupState>,
                                                                  const LowLatencyConfig&,
                                                                  const ConstructionAgreement&) {
  EPCOMM_FAIL(kUnsupported, "LowLatencyConfig::memory is device but this build of epcomm has no CUDA support "
                            "(configure with a CUDA compiler and EPCOMM_WITH_CUDA=ON)");
}

}  // namespace epcomm::detail
